"""Experimentation: the experiment runner (runner.py), its report (report.py) and the
hyperparameter search on validation (tuning.py)."""
