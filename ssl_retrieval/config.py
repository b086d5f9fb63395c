"""The training configuration: one frozen, validated dataclass, written into the model dir.

`train.py` turns its flags into a `TrainConfig` once; every error names the flag. The resolved
config is saved as `<model_dir>/config.json`, which is how a run is reproduced, resumed, and how
evaluation and export rebuild the model.
"""

from __future__ import annotations

import dataclasses
import json
import os

METHODS = (
    "baseline",
    "fd",
    "so",
    "cfm",
    "rfm",
    "rfm_no_compl",
    "cfm_no_dropout",
    "no_masking",
    "fm",
    "fd_ssl",
    "fd_ssl+fm",
)
OPTIMIZERS = ("adagrad", "adam", "sgd")
STRATEGIES = ("default", "mirrored", "multi_worker", "tpu")
SO_LOSSES = ("square", "softmax")
MI_NORMALIZATIONS = ("none", "min", "mean", "sqrt")
BLEND_OBJECTIVES = ("references", "slices")
# Fields that may differ when a run is resumed (they do not change what is trained).
RESUMABLE_FIELDS = (
    "log_every",
    "checkpoint_every",
    "overwrite",
    "strategy",
    "blend_content_weights",
    "blend_prior_shares",
    "blend_objective",
)
# Paths may differ as well: a model or data dir that was moved or copied resumes.
PATH_FIELDS = ("data_dir", "model_dir")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Every option of a training run. See `python -m ssl_retrieval.train --help`."""

    data_dir: str
    model_dir: str
    method: str = "baseline"
    batch_size: int = 1024
    ssl_batch_size: int | None = None
    learning_rate: float = 0.1
    optimizer: str = "adagrad"
    epochs: float = 5.0
    train_steps: int | None = None
    embedding_dim: int = 64
    hidden_layers: tuple[int, ...] = (1024, 128)
    share_towers: bool = False
    temperature: float = 0.07
    ssl_temperature: float = 0.07
    alpha: float = 0.3
    dropout_rate: float = 0.3
    mask_size: int | None = None
    so_loss: str = "softmax"
    fm_features: tuple[str, ...] = ()
    fm_hidden_layers: tuple[int, ...] = (128,)
    sampling_correction: bool = False
    correction_strength: float = 1.0
    mixed_negatives: bool = False
    symmetric_loss: bool = False
    id_min_count: int = 0
    id_dropout: float = 0.0
    mi_normalization: str = "none"
    cfm_exclude_id: bool = False
    validate_every: int = 0
    validation_queries: int = 2000
    patience: int = 0
    choose_popularity_prior: bool = True
    blend_content_weights: tuple[float, ...] = (0.0, 0.5, 1.0, 2.0)
    blend_prior_shares: tuple[float, ...] = (1.0, 0.5, 0.4, 0.3, 0.25, 0.2)
    blend_objective: str = "references"
    seed: int = 0
    strategy: str = "default"
    cross_replica_negatives: bool = True
    checkpoint_every: int = 500
    log_every: int = 50
    overwrite: bool = False

    @property
    def effective_ssl_batch_size(self) -> int:
        return self.ssl_batch_size or self.batch_size

    def validate(self, feature_names: list[str] | None = None) -> TrainConfig:
        """Raises ValueError naming the flag of the first invalid value; returns self."""
        checks = [
            (
                self.method in METHODS,
                f"--method must be one of {list(METHODS)}, got {self.method!r}",
            ),
            (self.optimizer in OPTIMIZERS, f"--optimizer must be one of {list(OPTIMIZERS)}"),
            (self.strategy in STRATEGIES, f"--strategy must be one of {list(STRATEGIES)}"),
            (self.so_loss in SO_LOSSES, f"--so_loss must be one of {list(SO_LOSSES)}"),
            (
                self.mi_normalization in MI_NORMALIZATIONS,
                f"--mi_normalization must be one of {list(MI_NORMALIZATIONS)}",
            ),
            (
                0 <= self.correction_strength <= 1,
                f"--correction_strength must be in [0, 1], got {self.correction_strength}",
            ),
            (self.id_min_count >= 0, f"--id_min_count must be >= 0, got {self.id_min_count}"),
            (0 <= self.id_dropout < 1, f"--id_dropout must be in [0, 1), got {self.id_dropout}"),
            (self.validate_every >= 0, "--validate_every must be >= 0 (0 = never)"),
            (
                bool(self.blend_content_weights) and min(self.blend_content_weights) >= 0,
                "--blend_content_weights must be numbers >= 0",
            ),
            (
                bool(self.blend_prior_shares) and all(0 <= v <= 1 for v in self.blend_prior_shares),
                "--blend_prior_shares must be numbers in [0, 1]",
            ),
            (
                self.blend_objective in BLEND_OBJECTIVES,
                f"--blend_objective must be one of {list(BLEND_OBJECTIVES)}",
            ),
            (self.validation_queries >= 1, "--validation_queries must be >= 1"),
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
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        uses_fm = "fm" in self.method.split("+")
        if uses_fm and not self.fm_features:
            raise ValueError(f"--fm_features is required for --method={self.method}")
        if self.fm_features and not uses_fm:
            raise ValueError(
                f"--fm_features applies to --method=fm or fd_ssl+fm, not {self.method}"
            )
        if self.method in ("fd", "fd_ssl", "fd_ssl+fm", "no_masking") and self.dropout_rate == 0:
            raise ValueError(f"--method={self.method} needs --dropout_rate > 0")
        if feature_names is not None:
            unknown = [f for f in self.fm_features if f not in feature_names]
            if unknown:
                raise ValueError(
                    f"--fm_features names unknown features {unknown}; known: {feature_names}"
                )
            if uses_fm and len(set(self.fm_features)) >= len(feature_names):
                raise ValueError("--fm_features must leave at least one feature for the other view")
            k = len(feature_names)
            if self.mask_size is not None and self.mask_size >= k:
                raise ValueError(f"--mask_size must be < the number of features ({k})")
        return self

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
    unknown = sorted(set(values) - fields)
    if unknown:
        raise ValueError(f"unknown config fields {unknown}")
    values = dict(values)
    for key in ("hidden_layers", "fm_hidden_layers", "fm_features"):
        if key in values and values[key] is not None:
            values[key] = tuple(values[key])
    return TrainConfig(**values)


def path(model_dir: str) -> str:
    return os.path.join(model_dir, "config.json")


def save(config: TrainConfig, model_dir: str) -> None:
    os.makedirs(model_dir, exist_ok=True)
    tmp = path(model_dir) + ".tmp"
    with open(tmp, "w") as f:
        json.dump(config.to_json(), f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path(model_dir))


def load(model_dir: str) -> TrainConfig:
    try:
        with open(path(model_dir)) as f:
            return from_dict(json.load(f))
    except OSError:
        raise ValueError(f"{model_dir}: no config.json; is this a model directory?") from None
