"""Apache Beam jobs of ssl_retrieval. `python -m pipelines.preprocess --help`."""

# Before any module here imports Beam: the package's logging defaults (ssl_retrieval.logs).
import ssl_retrieval  # noqa: F401
