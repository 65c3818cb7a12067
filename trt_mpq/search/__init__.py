"""Stage 6, the search: the decision space, its cost model, the exact integer program, measured verification."""
