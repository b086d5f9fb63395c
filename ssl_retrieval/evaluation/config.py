"""The options of `python -m ssl_retrieval.evaluate`, without TensorFlow: the command defines its
flags from this dataclass (and the blend's numbers from `BlendOverrides`) before anything heavy
is imported."""

from __future__ import annotations

import dataclasses

from ssl_retrieval import config as train_config_lib
from ssl_retrieval.cli import option

# "model", then peers.RECOMMENDERS: the project's references and the established libraries
# (peers.py imports TensorFlow; a test checks they agree).
RECOMMENDERS = (
    "model",
    "top_popular",
    "feature_knn",
    "cooccurrence",
    "links",
    "als",
    "itemknn",
    "lightfm",
    "tfidf_prior",
)


@dataclasses.dataclass(frozen=True)
class EvaluateConfig:
    """One evaluation; each field is the flag of the same name."""

    data_dir: str | None = option(
        None,
        "Preprocessed data dir (default for --recommender=model: the one the model was trained "
        "on; required for the others).",
    )
    model_dir: str | None = option(None, "Trained model dir (for --recommender=model).")
    recommender: str = option(
        "model",
        "What to evaluate: the trained model, or a reference recommender (references.py) or "
        "peer (peers.py: an established library, tuned on validation).",
        enum=RECOMMENDERS,
    )
    ks: tuple[int, ...] = option((10, 50), "Cut-offs K for Recall@K and MAP@K.")
    exclude_train_positives: bool = option(
        False, "Filtered setting: leave each query's training candidates out of its ranking."
    )
    split: str = option(
        "eval",
        "Pairs to evaluate on: eval (the test split, to report) or validation (to choose on).",
        enum=("eval", "validation"),
    )
    max_queries: int = option(
        0,
        "Evaluate only the pairs of this many eval queries, a fixed random sample (seed 0); 0 = "
        "all. For large corpora: each query is scored against every item.",
    )
    output: str | None = option(None, "Metrics JSON path (default <model_dir>/metrics.json).")

    def validate(self) -> EvaluateConfig:
        """Returns self, for the model with its data dir resolved (`config.model_data_dir`: the
        model's when --data_dir is left out, else checked to hold the same data).

        Raises:
          ValueError: a cut-off that is not a positive integer (names --ks), a missing
            --model_dir or --data_dir, or a data dir other than the model's (names both).
        """
        if not self.ks or min(self.ks) < 1:
            raise ValueError(f"--ks must be positive integers, got {list(self.ks)}")
        if self.recommender != "model":
            if not self.data_dir:
                raise ValueError(f"--data_dir is required for --recommender={self.recommender}")
            return self
        if not self.model_dir:
            raise ValueError("--model_dir is required for --recommender=model")
        data_dir = train_config_lib.model_data_dir(self.model_dir, self.data_dir)
        return dataclasses.replace(self, data_dir=data_dir)


@dataclasses.dataclass(frozen=True)
class BlendChoiceConfig:
    """Which model `python -m ssl_retrieval.blend` chooses the blend of (the blend's options
    are `ranking.config.BlendConfig`'s); each field is the flag of the same name."""

    model_dir: str = option(help="Trained model dir (its best checkpoint).")
    data_dir: str | None = option(None, "Data dir (default: the one the model was trained on).")
