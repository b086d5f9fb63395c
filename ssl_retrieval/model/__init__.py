"""The model: `two_tower.py` (the towers, the SSL model, `build_model`, `load_from_model_dir`,
`embed_corpus`), `augment.py` (the SSL views: feature masking, dropout) and `losses.py` (the
contrastive softmax head, spread-out losses).

Nothing is imported here, so `ssl_retrieval.model.<module>` is imported by its own name.
"""
