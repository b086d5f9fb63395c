"""How lists are ranked at retrieval, in one place: the popularity prior (`popularity.py`), the
TF-IDF vectors (`tfidf.py`), the training links (`links.py`), the rankings' scores
(`scores.py`), exact top-k (`topk.py`), retrieval over the corpus (`retrieve.py`), the merge of
rankings (`merge.py`) and the blend that says how (`blend.py`, options in `config.py`).

Evaluation, the blend's choice (`evaluation/blend_choice.py`) and the export all call these, so
evaluation and serving rank alike by construction.
"""
