"""The training configuration: one frozen, validated dataclass, written into the model dir.

`train.py` turns its flags into a `TrainConfig` once; every error names the flag. The resolved
config is saved as `<model_dir>/config.json`, which is how a run is reproduced, resumed, and how
evaluation and export rebuild the model.

The defaults are the training recipe (`configs/recipe.cfg`, docs/recipe.md): one
shared tower, ids only for items with at least 2 training pairs and id dropout 0.2, at most 10
epochs with validation every 100 steps and patience 4, and the blend chosen on validation. The
paper's setup (two towers, every id its own row) is `configs/debian_common.cfg`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os

from ssl_retrieval import atomic, methods
from ssl_retrieval import schema as schema_lib
from ssl_retrieval.cli import option
from ssl_retrieval.data_dir import DataDir
from ssl_retrieval.ranking.config import BlendConfig

METHODS = methods.NAMES
OPTIMIZERS = ("adagrad", "adam", "lazy_adam", "sgd")
STRATEGIES = ("default", "mirrored", "multi_worker", "tpu")
SO_LOSSES = ("square", "softmax")
MI_NORMALIZATIONS = ("none", "min", "mean", "sqrt")
# What the masking methods' SSL views do with the item id (augment.FeatureMasker).
SSL_ID_VIEWS = ("masked", "cold_start")
# How the blend is chosen after training: a `ranking.config.BlendConfig` of its own (train's flags
# include them). Model dirs written when they were TrainConfig fields still load.
BLEND_FIELDS = tuple(f.name for f in dataclasses.fields(BlendConfig))
# Fields that may differ when a run is resumed (they do not change what is trained).
RESUMABLE_FIELDS = ("log_every", "checkpoint_every", "overwrite", "strategy")
# Paths may differ as well: a model or data dir that was moved or copied resumes.
PATH_FIELDS = ("data_dir", "model_dir")
# The step budget may grow on resume: a run stopped by early stopping is the same run under any
# larger budget, and one that used its whole budget goes on from its last checkpoint.
BUDGET_FIELDS = ("epochs", "train_steps")


def used_whole_budget(
    steps: int | None, budget: int | None, stopped_early: bool | None
) -> bool | None:
    """Whether a run trained to the end of its step budget (so it may not have converged, and
    a larger budget reopens it) rather than stopping early on validation; None when unknown.
    A run that ended at its budget's last step used it, patience or not: summaries written
    before train stopped calling that an early stop say stopped_early there."""
    if steps is not None and budget is not None and steps >= budget:
        return True
    if stopped_early is not None:
        return not stopped_early
    return None if steps is None or budget is None else False


class ChangedRunError(ValueError):
    """The model dir holds a run of another config. Train exits with `exit_status` for it, so
    that the experiment runners, which own their model dirs, can tell it from other errors and
    set the old run aside (experimentation/launch.py)."""

    exit_status = 3


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Every option of a training run; each field is the flag of the same name
    (`python -m ssl_retrieval.train --help`)."""

    data_dir: str = option(help="Preprocessed data dir (python -m pipelines.preprocess).")
    model_dir: str = option(help="Where checkpoints, logs and config.json go.")
    method: str = option("baseline", methods.help_text(), enum=METHODS)
    batch_size: int = option(1024, "Global batch of pairs (the in-batch negatives).")
    ssl_batch_size: int | None = option(
        None, "Global batch of uniform items for the SSL loss (default: batch_size)."
    )
    learning_rate: float = option(
        0.001, "Learning rate (the paper's setup: 0.1 with Adagrad, configs/debian_common.cfg)."
    )
    optimizer: str = option(
        "adam",
        "Optimizer. The paper uses Adagrad; Adam won on validation on Debian and on the linked "
        "source (docs/recipe.md), so it is the default. lazy_adam: Adam that "
        "updates only the embedding rows a batch looked up (training/optimizers.py), 4.3x "
        "faster at 1M items, level on Debian's validation and 1.4% below on the linked source's.",
        enum=OPTIMIZERS,
    )
    epochs: float = option(
        10.0,
        "Passes over the training pairs (ignored with --train_steps); with --patience a maximum.",
    )
    train_steps: int | None = option(None, "Training steps; overrides --epochs.")
    embedding_dim: int = option(64, "Feature embedding size (schema may override).")
    hidden_layers: tuple[int, ...] = option(
        (1024, 128), "Tower MLP sizes; the last is the embedding size (paper 1024,128)."
    )
    share_towers: bool = option(
        True,
        "One MLP for queries and items (both sides of a pair are items); --noshare_towers "
        "for the paper's two towers.",
    )
    temperature: float = option(0.07, "Main batch-softmax temperature (eq. 6).")
    ssl_temperature: float = option(0.07, "SSL (and softmax spread-out) temperature.")
    alpha: float = option(0.3, "Weight of the SSL / spread-out loss (eq. 5).")
    dropout_rate: float = option(
        0.3, "Value dropout in SSL views; feature dropout rate for fd and fd_ssl."
    )
    mask_size: int | None = option(
        None, "Features masked in one SSL view (default: half of them, seed included)."
    )
    so_loss: str = option("softmax", "Spread-out form for --method=so.", enum=SO_LOSSES)
    fm_features: tuple[str, ...] = option(
        (), "fm: the features one view keeps (the other keeps the rest)."
    )
    fm_hidden_layers: tuple[int, ...] = option((128,), "fm: sizes of the two separate heads.")
    sampling_correction: bool = option(
        False, "logQ correction of in-batch negatives by candidate frequency."
    )
    correction_strength: float = option(
        1.0,
        "Tempered logQ: subtract strength x log(expected count) from each negative's logit "
        "(1 = the full correction, 0 = none). Only with --sampling_correction.",
    )
    mixed_negatives: bool = option(
        False,
        "Mixed negative sampling (Yang et al. 2020): the batch of uniform corpus items is added "
        "to the in-batch negatives of the main loss, so tail items are negatives too.",
    )
    symmetric_loss: bool = option(
        False,
        "Also train each pair in the reverse direction (candidate -> query): links as undirected.",
    )
    id_min_count: int = option(
        2,
        "Items in fewer training pairs (as query or candidate) than this get no id embedding of "
        "their own: the id falls back to its learned default and the features carry the item. "
        "0 = every corpus id has one (untrained for cold items).",
    )
    id_dropout: float = option(
        0.2,
        "Share of training examples whose id is replaced by its default embedding, so the "
        "towers learn to represent items from their features (what cold items have).",
    )
    mi_normalization: str = option(
        "mean",
        "CFM ranks correlates by mutual information: none (raw, the paper), min I/min(Hi,Hj), "
        "mean 2I/(Hi+Hj), sqrt I/sqrt(HiHj). mean had the best validation Recall@50 on Debian "
        "(CFM as tuned at 0.1, 3 seeds each: 0.278 against 0.269 raw, 0.271 sqrt, 0.263 min; "
        "within seed noise), and unlike raw MI it does not make the id every feature's top "
        "correlate (docs/training.md, --mi_normalization).",
        enum=MI_NORMALIZATIONS,
    )
    cfm_exclude_id: bool = option(
        False,
        "Never pick the id feature as a correlate in CFM (its raw MI with any feature is maximal).",
    )
    ssl_id_view: str = option(
        "masked",
        "What the masking methods' (cfm, rfm, rfm_no_compl, cfm_no_dropout, no_masking) two SSL "
        "views do with the item id. masked: the id is one more feature the pattern masks (the "
        "paper). cold_start: one view always keeps the id and the other always drops it, the "
        "pattern masking the other features, so that every corpus item's embedding without its "
        "id is pulled towards its embedding with it, items without training pairs included "
        "(beyond the paper; augment.FeatureMasker).",
        enum=SSL_ID_VIEWS,
        neutral="masked",
    )
    validate_every: int = option(
        100,
        "Steps between validation evaluations (Recall@50 over the whole corpus on the "
        "validation split); the best checkpoint is kept in <model_dir>/best. 0 = never.",
    )
    max_validations_per_epoch: int = option(
        5,
        "At most this many validations per epoch: on large data the interval grows to "
        "ceil(steps per epoch / this) (each validation embeds the whole corpus). 0 = no cap.",
    )
    validation_queries: int = option(
        2000, "Validation queries evaluated each time (a fixed random sample)."
    )
    patience: int = option(
        4, "Stop after this many validations without a better Recall@50 (0 = train all steps)."
    )
    weight_averaging: float = option(
        0.0,
        "Decay of an exponential moving average of the weights (Polyak averaging, "
        "training/averaging.py) that validation, the best checkpoint, evaluation and export "
        "use instead of the last weights; 0.999 averages about the last 1,000 steps. 0 = off "
        "(the paper; every recorded run).",
        neutral=0.0,
    )
    weight_averaging_every: int = option(
        10,
        "Steps between updates of the --weight_averaging average (each folds in "
        "decay**every), so that averaging large embedding tables costs a tenth of a pass a step.",
        neutral=10,
    )
    seed: int = option(0, "Seed of initialisation, shuffles and augmentations.")
    strategy: str = option("default", "tf.distribute strategy.", enum=STRATEGIES)
    cross_replica_negatives: bool = option(
        True, "With several replicas, negatives are the global batch."
    )
    checkpoint_every: int = option(200, "Steps between checkpoints.")
    log_every: int = option(
        50, "Steps between readings of the loss: the progress bar's and TensorBoard's points."
    )
    overwrite: bool = option(False, "Delete a --model_dir holding a different run.")

    @property
    def effective_ssl_batch_size(self) -> int:
        return self.ssl_batch_size or self.batch_size

    def validate(self, feature_names: list[str] | None = None) -> TrainConfig:
        """Raises ValueError naming the flag of the first invalid value; returns self."""
        for ok, message in self._choice_checks() + self._range_checks():
            if not ok:
                raise ValueError(message)
        self._validate_method_options(feature_names)
        return self

    def _choice_checks(self) -> list[tuple[bool, str]]:
        """(valid, message) of each option that takes one of a list of names."""
        return [
            (
                self.method in METHODS,
                f"--method must be one of {list(METHODS)}, got {self.method!r}",
            ),
            (self.optimizer in OPTIMIZERS, f"--optimizer must be one of {list(OPTIMIZERS)}"),
            (self.strategy in STRATEGIES, f"--strategy must be one of {list(STRATEGIES)}"),
            (self.so_loss in SO_LOSSES, f"--so_loss must be one of {list(SO_LOSSES)}"),
            (
                self.ssl_id_view in SSL_ID_VIEWS,
                f"--ssl_id_view must be one of {list(SSL_ID_VIEWS)}, got {self.ssl_id_view!r}",
            ),
            (
                self.mi_normalization in MI_NORMALIZATIONS,
                f"--mi_normalization must be one of {list(MI_NORMALIZATIONS)}",
            ),
        ]

    def _range_checks(self) -> list[tuple[bool, str]]:
        """(valid, message) of each numeric option's range."""
        return [
            (
                0 <= self.correction_strength <= 1,
                f"--correction_strength must be in [0, 1], got {self.correction_strength}",
            ),
            (self.id_min_count >= 0, f"--id_min_count must be >= 0, got {self.id_min_count}"),
            (0 <= self.id_dropout < 1, f"--id_dropout must be in [0, 1), got {self.id_dropout}"),
            (self.validate_every >= 0, "--validate_every must be >= 0 (0 = never)"),
            (
                self.max_validations_per_epoch >= 0,
                "--max_validations_per_epoch must be >= 0 (0 = no cap)",
            ),
            (self.validation_queries >= 1, "--validation_queries must be >= 1"),
            (
                0.0 <= self.weight_averaging < 1.0,
                f"--weight_averaging must be in [0, 1) (0 = off), got {self.weight_averaging}",
            ),
            (
                self.weight_averaging_every >= 1,
                f"--weight_averaging_every must be >= 1, got {self.weight_averaging_every}",
            ),
            (self.patience >= 0, "--patience must be >= 0 (0 = no early stopping)"),
            (
                self.patience == 0 or self.validate_every > 0,
                "--patience needs --validate_every > 0",
            ),
            (self.batch_size >= 2, f"--batch_size must be >= 2, got {self.batch_size}"),
            (
                self.ssl_batch_size is None or self.ssl_batch_size >= 2,
                f"--ssl_batch_size must be >= 2, got {self.ssl_batch_size}",
            ),
            (self.learning_rate > 0, f"--learning_rate must be > 0, got {self.learning_rate}"),
            (self.epochs > 0, f"--epochs must be > 0, got {self.epochs}"),
            (
                self.train_steps is None or self.train_steps >= 1,
                f"--train_steps must be >= 1, got {self.train_steps}",
            ),
            (self.embedding_dim >= 1, f"--embedding_dim must be >= 1, got {self.embedding_dim}"),
            (
                bool(self.hidden_layers) and all(h >= 1 for h in self.hidden_layers),
                f"--hidden_layers must be positive sizes, got {list(self.hidden_layers)}",
            ),
            (
                bool(self.fm_hidden_layers) and all(h >= 1 for h in self.fm_hidden_layers),
                f"--fm_hidden_layers must be positive sizes, got {list(self.fm_hidden_layers)}",
            ),
            (self.temperature > 0, f"--temperature must be > 0, got {self.temperature}"),
            (
                self.ssl_temperature > 0,
                f"--ssl_temperature must be > 0, got {self.ssl_temperature}",
            ),
            (self.alpha >= 0, f"--alpha must be >= 0, got {self.alpha}"),
            (
                0 <= self.dropout_rate < 1,
                f"--dropout_rate must be in [0, 1), got {self.dropout_rate}",
            ),
            (
                self.mask_size is None or self.mask_size >= 1,
                f"--mask_size must be >= 1, got {self.mask_size}",
            ),
            (self.checkpoint_every >= 1, "--checkpoint_every must be >= 1"),
            (self.log_every >= 1, "--log_every must be >= 1"),
        ]

    def _validate_method_options(self, feature_names: list[str] | None) -> None:
        """The options that depend on --method (and on the data's features, when given)."""
        uses_fm = methods.get(self.method).fm
        if uses_fm and not self.fm_features:
            raise ValueError(f"--fm_features is required for --method={self.method}")
        if self.fm_features and not uses_fm:
            raise ValueError(
                f"--fm_features applies to --method=fm or fd_ssl+fm, not {self.method}"
            )
        if methods.get(self.method).needs_dropout_rate and self.dropout_rate == 0:
            raise ValueError(f"--method={self.method} needs --dropout_rate > 0")
        self._validate_ssl_id_view()
        if feature_names is not None:
            unknown = [f for f in self.fm_features if f not in feature_names]
            if unknown:
                raise ValueError(
                    f"--fm_features names unknown features {unknown}; known: {feature_names}"
                )
            if uses_fm and len(set(self.fm_features)) >= len(feature_names):
                raise ValueError("--fm_features must leave at least one feature for the other view")
            self._validate_mask_size(len(feature_names))

    def _validate_ssl_id_view(self) -> None:
        if self.ssl_id_view != "cold_start" or methods.get(self.method).masking is not None:
            return
        masking = [m.name for m in methods.METHODS.values() if m.masking is not None]
        raise ValueError(
            f"--ssl_id_view=cold_start needs a masking method (--method={'|'.join(masking)}), "
            f"got --method={self.method}"
        )

    def _validate_mask_size(self, k: int) -> None:
        """Against the data's k features (the cold-start view masks the k - 1 besides the id)."""
        masking = methods.get(self.method).masking
        cold_start = self.ssl_id_view == "cold_start" and masking is not None
        if cold_start and masking != "none" and k < 3:
            raise ValueError(
                f"--ssl_id_view=cold_start masks the features besides the id and needs 2 of "
                f"them, the data has {k - 1}"
            )
        limit = k - 1 if cold_start else k
        if self.mask_size is not None and self.mask_size >= limit:
            what = "features besides the id" if cold_start else "features"
            raise ValueError(f"--mask_size must be < the number of {what} ({limit})")

    def to_json(self) -> dict:
        out = dataclasses.asdict(self)
        for key in ("hidden_layers", "fm_hidden_layers", "fm_features"):
            out[key] = list(out[key])
        return out

    def differences(self, other: TrainConfig) -> list[str]:
        """Fields (other than RESUMABLE_FIELDS and PATH_FIELDS) whose values differ."""
        mine, theirs = self.to_json(), other.to_json()
        same = RESUMABLE_FIELDS + PATH_FIELDS
        return [k for k in mine if k not in same and mine[k] != theirs.get(k)]


def from_dict(values: dict) -> TrainConfig:
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    # config.json of runs from when the blend's options were training options.
    values = {k: v for k, v in values.items() if k not in BLEND_FIELDS}
    unknown = sorted(set(values) - fields)
    if unknown:
        raise ValueError(f"unknown config fields {unknown}")
    values = dict(values)
    tuples = [f.name for f in dataclasses.fields(TrainConfig) if str(f.type).startswith("tuple")]
    for key in tuples:
        if key in values and values[key] is not None:
            values[key] = tuple(values[key])
    return TrainConfig(**values)


def budget_steps(
    train_pairs: int, batch_size: int, epochs: float, train_steps: int | None = None
) -> int:
    """The steps a run may train: --train_steps, else epochs x full batches of training pairs.

    Raises:
      ValueError: fewer training pairs than one batch (and no --train_steps).
    """
    if train_steps:
        return train_steps
    per_epoch = train_pairs // batch_size
    if per_epoch < 1:
        raise ValueError(
            f"--batch_size={batch_size} exceeds the {train_pairs} training pairs; lower it or "
            "set --train_steps"
        )
    return max(1, math.ceil(epochs * per_epoch))


def path(model_dir: str) -> str:
    return os.path.join(model_dir, "config.json")


def save(config: TrainConfig, model_dir: str) -> None:
    atomic.write_json(path(model_dir), config.to_json())


def load(model_dir: str) -> TrainConfig:
    try:
        with open(path(model_dir)) as f:
            return from_dict(json.load(f))
    except OSError:
        raise ValueError(f"{model_dir}: no config.json; is this a model directory?") from None


def model_data_dir(model_dir: str, data_dir: str | None = None) -> str:
    """The data dir evaluation and export read a trained model's corpus from.

    None: the one the model was trained on (its config.json's). Given: it must hold the same
    data, judged by what the model's tables were built from and what its lists are scored on,
    not by path (a moved or copied data dir is the same data, as in `PATH_FIELDS`): the schema's
    features with their kinds and vocabulary sizes, and its record counts. A model whose data
    dir is gone (moved with it) takes any data dir given: there is nothing to compare with.

    Raises:
      ValueError: in one line, the given data dir holds other data (naming both data dirs and
        what differs), or none was given and the model's is gone.
    """
    trained_on = load(model_dir).data_dir
    if data_dir is None:
        if not os.path.isdir(trained_on):
            raise ValueError(
                f"{model_dir} was trained on {trained_on} (its config.json), which is not a "
                "directory here; pass --data_dir with that data"
            )
        return trained_on
    if not os.path.isdir(trained_on) or os.path.realpath(data_dir) == os.path.realpath(trained_on):
        return data_dir
    differences = _data_differences(DataDir(data_dir).schema, DataDir(trained_on).schema)
    if differences:
        raise ValueError(
            f"--data_dir={data_dir} holds other data than {model_dir} was trained on, "
            f"{trained_on} (its config.json): {', '.join(differences[:3])}"
            f"{', ...' if len(differences) > 3 else ''} (--data_dir's vs the model's); leave "
            "--data_dir out to use the model's"
        )
    return data_dir


def _data_differences(given: schema_lib.Schema, trained: schema_lib.Schema) -> list[str]:
    """What differs between two preprocessed schemas: features, kinds, vocabulary sizes, counts."""
    if given.names != trained.names:
        return [f"features {given.names} vs {trained.names}"]
    out = []
    for a, b in zip(given.features, trained.features, strict=True):
        if a.kind != b.kind:
            out.append(f"{a.name} kind {a.kind} vs {b.kind}")
        elif a.vocab_size != b.vocab_size:
            out.append(f"{a.name} vocabulary {a.vocab_size} vs {b.vocab_size}")
    for key in sorted(set(given.counts) | set(trained.counts)):
        if given.counts.get(key) != trained.counts.get(key):
            out.append(f"{key} {given.counts.get(key)} vs {trained.counts.get(key)}")
    return out
