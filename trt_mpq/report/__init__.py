"""Stage 7, reports: the plan report record, the console tables and the self-contained report.html."""
