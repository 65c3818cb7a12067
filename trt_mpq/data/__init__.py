"""Stage 2, the data: calibration and evaluation samples from files, image folders, or generated."""
