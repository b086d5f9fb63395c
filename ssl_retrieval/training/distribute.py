"""`--strategy` names to tf.distribute strategies, in one place.

default       the default strategy (one device; what runs here)
mirrored      every local GPU (or CPU device) in sync, in-batch negatives gathered across them
multi_worker  MultiWorkerMirroredStrategy from TF_CONFIG (several machines or processes)
tpu           TPUStrategy on the TPU named by TPU_NAME / the environment (not testable here)
"""

from __future__ import annotations

from ssl_retrieval.compat import tf

STRATEGIES = ("default", "mirrored", "multi_worker", "tpu")


def get_strategy(name: str) -> tf.distribute.Strategy:
    """Returns the strategy for `name`; ValueError for unknown names."""
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "tpu":
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    raise ValueError(f"--strategy must be one of {list(STRATEGIES)}, got {name!r}")
