"""The options of export and serving, without TensorFlow: `python -m ssl_retrieval.export` and
`python -m ssl_retrieval.serve` define their flags from these dataclasses before anything heavy
is imported."""

from __future__ import annotations

import dataclasses
import math

from ssl_retrieval import config as train_config_lib
from ssl_retrieval.cli import option
from ssl_retrieval.ranking.config import BlendOverrides


@dataclasses.dataclass(frozen=True)
class ScannParams:
    """ScaNN knobs; None = derived from the corpus size N."""

    num_leaves: int | None = option(None, "ScaNN tree leaves (default ~sqrt(N)).")
    num_leaves_to_search: int | None = option(
        None, "ScaNN leaves searched per query (default ~10% of leaves)."
    )
    training_sample_size: int = option(250_000, flag=False)
    dimensions_per_block: int = option(2, flag=False)
    anisotropic_quantization_threshold: float = option(
        0.2, "ScaNN anisotropic quantisation threshold."
    )
    reorder: int = option(200, "ScaNN candidates re-scored exactly.")

    def resolved(self, num_items: int) -> dict:
        leaves = self.num_leaves or max(1, int(round(math.sqrt(num_items))))
        leaves = min(leaves, num_items)
        search = self.num_leaves_to_search or min(leaves, max(10, leaves // 10))
        return {
            "num_leaves": leaves,
            "num_leaves_to_search": min(search, leaves),
            "training_sample_size": min(self.training_sample_size, num_items),
            "dimensions_per_block": self.dimensions_per_block,
            "anisotropic_quantization_threshold": self.anisotropic_quantization_threshold,
            "reorder": max(self.reorder, 1),
        }


@dataclasses.dataclass(frozen=True)
class ExportConfig:
    """Options of one export; each field but `scann` and `blend` is the flag of the same name
    (`python -m ssl_retrieval.export --help`); `scann` holds the index's flags, `blend` the
    blend's."""

    data_dir: str | None = option(
        help="Data dir (default: the one the model was trained on, in its config.json)."
    )
    model_dir: str = option(help="Trained model dir.")
    export_dir: str = option(help="Where the numbered version goes.")
    index: str = option("scann", "Nearest-neighbour index.", enum=("scann", "brute_force"))
    k: int = option(100, "Largest k a query may ask for.")
    min_recall: float = option(
        0.95, "Recall@10 against brute force the index must reach (tuned to it, or warned)."
    )
    recall_sample: int = option(1000, "Corpus items used to measure recall.")
    tune: bool = option(
        True, "Double ScaNN's leaves searched and --reorder until --min_recall is met."
    )  # see build_index
    scann: ScannParams = option(ScannParams(), flag=False)
    overwrite: bool = option(False, "Replace an existing version directory.")
    # The blend's numbers (ranking/blend.py): each "auto" (the model's) or a number.
    blend: BlendOverrides = option(BlendOverrides(), flag=False)

    def validate(self) -> ExportConfig:
        """Returns self with its data dir resolved (`config.model_data_dir`: the model's when
        --data_dir is left out, else checked to hold the same data).

        Raises:
          ValueError: a data dir other than the model's (names both), or none found.
        """
        data_dir = train_config_lib.model_data_dir(self.model_dir, self.data_dir)
        return dataclasses.replace(self, data_dir=data_dir)


MAX_INSTANCES = 1000


@dataclasses.dataclass(frozen=True)
class Limits:
    """What one request may ask for, and what all of them may hold at once (queued queries,
    the page's catalogue); each field is the `serve` flag of the same name."""

    max_request_bytes: int = option(1 << 20, "Larger bodies get 413.")
    body_timeout_seconds: float = option(
        10.0,
        "A request body not received in full within this many seconds gets 408 and the "
        "connection is closed (slow or stalled clients).",
    )
    max_instances: int = option(MAX_INSTANCES, "Instances per predict request.")
    max_results: int = option(10_000, "Instances x k per similar-items request (413 above).")
    max_feature_values: int = option(
        256, "Feature values in one instance (each multi-hot value counts)."
    )
    max_feature_instances: int = option(
        100,
        "Instances per similar_items_by_features / item_embedding request (they run the towers).",
    )
    batch_window_ms: float = option(
        0.0,
        "How long a similar-items query may wait for others to share one index call. 0: no "
        "wait; the queries that arrived while the previous call ran form the next batch.",
    )
    max_batch: int = option(256, "Most queries in one batched index call.")
    max_queued_queries: int = option(
        10_000,
        "Similar-items and feature queries waiting or running at once; a request that would "
        "go over it gets 503 with Retry-After (a single query is always admitted).",
    )
    max_catalog_bytes: int = option(
        1 << 30,
        "Largest item catalogue the page loads (uncompressed bytes); a larger one is not "
        "loaded and the page shows ids and scores without features.",
    )

    def validate(self) -> Limits:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            may_be_zero = field.name == "batch_window_ms"
            if value < 0 or (value == 0 and not may_be_zero):
                bound = ">= 0" if may_be_zero else "> 0"
                raise ValueError(f"--{field.name} must be {bound}, got {value}")
        if self.max_queued_queries < self.max_instances:
            raise ValueError(
                f"--max_queued_queries ({self.max_queued_queries}) must be at least "
                f"--max_instances ({self.max_instances}), or a lone request could never run"
            )
        return self


@dataclasses.dataclass(frozen=True)
class Connections:
    """What one connection may hold; each field is the `serve` flag of the same name."""

    header_timeout_seconds: float = option(
        10.0,
        "A connection must send a whole request head (request line and headers) within this "
        "many seconds of opening, or of its previous answer; else it is closed (with 408 if "
        "it sent part of one). Idle and slowly-dribbling clients are dropped.",
    )
    keep_alive_seconds: float = option(
        5.0, "A keep-alive connection that sends nothing after an answer is closed after this."
    )
    max_connections: int = option(
        4096,
        "Open connections at most (also kept below the process's file-descriptor limit). "
        "Over it the longest idle connection is closed; when none is idle the new one gets "
        "503.",
    )

    def validate(self) -> Connections:
        for field in dataclasses.fields(self):
            if getattr(self, field.name) <= 0:
                raise ValueError(f"--{field.name} must be > 0, got {getattr(self, field.name)}")
        return self


@dataclasses.dataclass(frozen=True)
class ServeConfig:
    """The server's other options; each field is the `serve` flag of the same name."""

    export_dir: str = option(help="Export dir (versions inside) or one version.")
    compare_export_dir: str | None = option(
        None, "A second export the page at / shows side by side (optional)."
    )
    host: str = option("127.0.0.1", "Interface to bind (default: loopback only).")
    port: int = option(8501, "TCP port.")
    model_name: str = option("ssl_retrieval", "Name in /v1/models/<name>.")
    poll_seconds: float = option(
        30.0, "Seconds between checks of --export_dir for versions (0: never)."
    )
    threads: int = option(16, "Threads running model calls.")
    openapi: bool = option(
        False,
        "Serve the OpenAPI schema at /openapi.json. FastAPI's /docs and /redoc pages are never "
        "served: they load their scripts from a third-party CDN.",
    )


@dataclasses.dataclass(frozen=True)
class SimilarConfig:
    """The options of `python -m ssl_retrieval.similar`; each field is the flag of the same
    name."""

    export_dir: str = option(help="Export dir (newest version) or one version.")
    item_ids: tuple[str, ...] = option(help="Comma-separated corpus item ids.")
    k: int = option(10, "How many neighbours per item.")
