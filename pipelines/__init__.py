"""Apache Beam jobs of ssl_retrieval. `python -m pipelines.preprocess --help`."""
