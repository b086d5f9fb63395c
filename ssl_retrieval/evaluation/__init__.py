"""Evaluation: the evaluator (evaluator.py), Recall@K and MAP@K (metrics.py), the reference
recommenders (references.py), the blend chosen on validation (blend_choice.py) and the options
of the evaluate and blend commands (config.py)."""
