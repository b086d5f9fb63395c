"""The one place TensorFlow is imported, with the Keras 2 check TFRS needs.

Usage: `from ssl_retrieval.compat import tf`.
"""

import os
import sys

if "tensorflow" not in sys.modules:
    os.environ["TF_USE_LEGACY_KERAS"] = "1"

import tensorflow as tf  # noqa: E402


def _check_keras() -> None:
    # tf-keras exposes no tf.keras.__version__; its classes live in the `tf_keras` package.
    layer_module = tf.keras.layers.Layer.__module__
    if not layer_module.startswith("tf_keras"):
        version = getattr(tf.keras, "__version__", "3")
        raise ImportError(
            f"ssl_retrieval needs Keras 2 (tf-keras) but tf.keras is Keras {version}. "
            "TensorFlow Recommenders does not support Keras 3. TensorFlow was imported before "
            "ssl_retrieval could set TF_USE_LEGACY_KERAS=1: set it in the environment "
            "(export TF_USE_LEGACY_KERAS=1) or import ssl_retrieval before tensorflow, and make "
            "sure tf-keras==2.20.* is installed."
        )


_check_keras()

__all__ = ["tf"]
