"""ssl_retrieval: self-supervised two-tower item retrieval (Yao et al., CIKM 2021).

TensorFlow Recommenders needs Keras 2 (`tf-keras`). TensorFlow picks its Keras when it is first
imported, so the package sets `TF_USE_LEGACY_KERAS=1` here, before any module imports TensorFlow.
Modules that use TensorFlow import it through `ssl_retrieval.compat`, which fails with a clear
message if Keras 3 is active anyway (TensorFlow imported earlier in the process without the flag).
"""

import os
import sys

from ssl_retrieval import logs as _logs

if "tensorflow" not in sys.modules:
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
# TF_CPP_MIN_LOG_LEVEL unless set, and Beam's import-time warning: before either is imported.
_logs.library_defaults()

__version__ = "0.1.0"


def load(export_dir: str):
    """Loads an exported model for "items similar to X" queries (see `ssl_retrieval.serving.api`).

    Args:
      export_dir: an export directory written by `python -m ssl_retrieval.export`, either one
        version directory or its parent (the newest version is taken).

    Returns:
      A `ssl_retrieval.serving.api.SimilarItems` with `.similar(item_ids, k)` and
      `.similar_by_features(records, k)`.
    """
    from ssl_retrieval.serving import api  # noqa: PLC0415  (imports TensorFlow and ScaNN)

    return api.load(export_dir)
