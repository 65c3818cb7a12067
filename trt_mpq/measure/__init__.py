"""Stage 5, measurement: per-unit sensitivity (output deltas) and task metrics of whole mixes."""
