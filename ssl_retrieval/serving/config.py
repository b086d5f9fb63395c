"""The export's options, without TensorFlow: `python -m ssl_retrieval.export` defines its flags
from these dataclasses before anything heavy is imported."""

from __future__ import annotations

import dataclasses
import math

from ssl_retrieval.cli import option


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
    """Options of one export; each field but `scann` is the flag of the same name
    (`python -m ssl_retrieval.export --help`), `scann` holds the index's flags."""

    data_dir: str | None = option(help="Data dir (default: the one in config.json).")
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
    popularity_prior: str | float = option(
        "auto",
        "beta of the popularity prior cos + beta*log(1+training count) built into the index: "
        "auto = the one chosen on validation when the model was trained (0 if none), 0 = pure "
        "cosine.",
    )  # (popularity.py)
