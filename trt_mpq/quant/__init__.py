"""Stage 3, quantization: activation ranges and scales, and the one lowering function (Q/DQ, Cast)."""
