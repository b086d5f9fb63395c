"""Evaluation: the evaluator (evaluator.py), exact top-k over the corpus (topk.py), Recall@K and
MAP@K (metrics.py) and the reference recommenders (references.py)."""
