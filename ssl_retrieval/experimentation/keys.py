"""What a recorded run stands for: the key that decides whether a record is as good as the run.

Tuning and the experiments take many hours on 2 cores, more than one sitting, and their model
dirs are not committed (they are large); their JSON Lines records are. A record is reused, on
this machine or a fresh clone, when its key matches the key of the run planned now:

  train   a hash of the run's resolved `TrainConfig`: its train command parsed by absl exactly as
          `python -m ssl_retrieval.train` parses it (flagfiles as they are when the run starts,
          nested ones too, `--noX`, the last of a repeated flag), defaults filled in. Left out:
          paths (`config.PATH_FIELDS`), what may change on resume (`config.RESUMABLE_FIELDS`),
          the step budget (below), the fields the run's method never reads
          (`methods.Method.unread_fields`: a new default of CFM's `--mi_normalization` reruns
          CFM runs only), and the fields at their neutral value (`cli.option(neutral=...)`: an
          option added after runs were recorded voids none of them while it trains as before).
  blend   a hash of how the blend is chosen after training (`blend_key`); a record whose train
          key matches and whose blend key does not is run again: train chooses the blend of a
          finished run again (or trains it, without its model dir) and evaluate measures it.
          Tuning trials are measured before the blend, so theirs is not compared.
  data    a fingerprint of the data dir's pair and item counts (a newer Debian index reruns everything).
  evaluate  the options of the evaluation on test (the ks), for runs that have one.

The step budget (`--epochs`, `--train_steps`) is the exception: a run that stopped early, at step
s before its budget, is the same run under any budget of at least s steps (the same data order,
steps and validations up to its stop: no schedule depends on the budget), so its record stands
when the budget is raised; a run that used its whole budget (`config.used_whole_budget`) trains
again, resuming from its checkpoints where the model dir is here. (One exception, rare enough to
accept: train also validates at a budget's last step, which a run reopened after a budget that
is not a multiple of `--validate_every` keeps.)

"The same run" as far as a command decides it: on one machine a command repeats bit for bit; on
another it need not (TensorFlow's CPU kernels depend on the processor), so a record is one draw
of its command, like a rerun would be. Code changes other than defaults are not detected: delete
the records a fix invalidates.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os

from absl import flags

from ssl_retrieval import cli, data_dir, methods
from ssl_retrieval import config as config_lib
from ssl_retrieval.ranking.config import BlendConfig

# What identifies a preprocessed data dir's pairs and items: these statistics (the ones
# stats.json held when the first records were keyed) and the per-candidate training counts.
# Fields added to stats.json since (the reverse-link shares, --split_by) describe the same data,
# so they are left out: a new statistic must not make every committed record stand for other data.
_IDENTITY_STATS = (
    "num_items",
    "num_train_pairs",
    "num_eval_pairs",
    "num_validation_pairs",
    "num_train_candidates",
    "head_fraction",
    "num_head_items",
    "num_cold_items",
    "files",
)
TRAIN_MODULE = "ssl_retrieval.train"
_NONE = object()  # a field without a neutral value: equal to none of its values


def data_fingerprint(directory: str) -> str:
    """A short hash of what identifies a data dir (`_IDENTITY_STATS`, per-candidate training
    counts); "missing" for a dir without them (its runs fail on their own, nothing matches them).
    The statistics are hashed as stats.json wrote them then, so older records keep their keys."""
    try:
        with open(os.path.join(directory, data_dir.STATS), "rb") as f:
            stats = json.loads(f.read())
        with open(os.path.join(directory, data_dir.CANDIDATE_COUNTS), "rb") as f:
            candidate_counts = f.read()
    except (OSError, ValueError):  # no statistics, or not JSON
        return "missing"
    identity = {name: stats[name] for name in _IDENTITY_STATS if name in stats}
    digest = hashlib.sha256()
    statistics = (json.dumps(identity, indent=2) + "\n").encode()
    digest.update(data_dir.STATS.encode() + b"\0" + statistics)
    digest.update(data_dir.CANDIDATE_COUNTS.encode() + b"\0" + candidate_counts)
    return digest.hexdigest()[:16]


def train_pairs(directory: str) -> int | None:
    """The data dir's number of training pairs (None without its statistics)."""
    try:
        with open(os.path.join(directory, data_dir.STATS)) as f:
            return json.load(f)["num_train_pairs"]
    except (OSError, KeyError, ValueError):
        return None


def parse_train(
    command: list[str],
) -> tuple[config_lib.TrainConfig, BlendConfig, flags.FlagValues]:
    """The `TrainConfig` a `python -m ssl_retrieval.train ...` command trains, the `BlendConfig`
    its blend is chosen with, and its parsed flags (`flags[name].present`: set by the command),
    by train's own flags and absl's parser.

    Raises:
      ValueError: absl refuses the command (a flagfile that does not exist, an unknown flag, a
        bad value), or it has positional arguments; train would refuse it too.
    """
    args = list(command[command.index(TRAIN_MODULE) + 1 :]) if TRAIN_MODULE in command else []
    values = flags.FlagValues()
    holders = cli.define_flags(config_lib.TrainConfig, flag_values=values)
    blend_holders = cli.define_flags(BlendConfig, flag_values=values)
    try:
        rest = values([TRAIN_MODULE, *args])
    except flags.Error as e:
        raise ValueError(f"{' '.join(command)}: {e}") from None
    if rest[1:]:
        raise ValueError(f"{' '.join(command)}: unexpected arguments {rest[1:]}")
    return (
        cli.from_flags(config_lib.TrainConfig, holders),
        cli.from_flags(BlendConfig, blend_holders),
        values,
    )


def key_fields(config: config_lib.TrainConfig) -> dict:
    """The resolved fields a run's result depends on (module docstring), JSON values."""
    left_out = {
        *config_lib.PATH_FIELDS,
        *config_lib.RESUMABLE_FIELDS,
        *config_lib.BUDGET_FIELDS,
        *methods.get(config.method).unread_fields,
    }
    out = {}
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if field.name in left_out or field.metadata.get("neutral", _NONE) == value:
            continue
        out[field.name] = list(value) if isinstance(value, tuple) else value
    return out


def blend_key(config: BlendConfig) -> str:
    """A short hash of how the run's blend is chosen after training: the blend's options but
    those at their neutral value (added since runs were recorded, choosing as before), or only
    that none is chosen (`--nochoose_popularity_prior` reads none of the others)."""
    if not config.choose_popularity_prior:
        return _hash({"choose_popularity_prior": False})
    values = {}
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if field.metadata.get("neutral", _NONE) != value:
            values[field.name] = list(value) if isinstance(value, tuple) else value
    return _hash(values)


def _hash(values: dict) -> str:
    text = json.dumps(values, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclasses.dataclass(frozen=True)
class RunKey:
    """What a record stands for (module docstring); `to_json` is how a record keeps it."""

    train: str
    data: str
    epochs: float
    train_steps: int | None
    budget_steps: int | None  # on the run's data; None when its statistics cannot tell
    blend: str | None = None  # None: not compared (tuning trials)
    evaluate: dict | None = None  # None: no evaluation on test (tuning trials)
    fields: dict = dataclasses.field(default_factory=dict, compare=False)

    def to_json(self) -> dict:
        out = dataclasses.asdict(self)
        del out["fields"]
        return {k: v for k, v in out.items() if v is not None or k == "train_steps"}


def run_key(
    command: list[str],
    fingerprint: str,
    pairs: int | None,
    evaluate: dict | None = None,
    blend: bool = True,
) -> RunKey:
    """The key of the run a train command makes on data with this fingerprint and `pairs`
    training pairs; `evaluate`: the options of its evaluation on test; `blend`: whether its
    blend is part of what it stands for.

    Raises:
      ValueError: the command does not parse (parse_train).
    """
    config, blend_config, _ = parse_train(command)
    fields = key_fields(config)
    budget = None
    if pairs is not None:
        try:
            budget = config_lib.budget_steps(
                pairs, config.batch_size, config.epochs, config.train_steps
            )
        except ValueError:  # a budget train refuses: the run fails on its own
            pass
    return RunKey(
        train=_hash(fields),
        data=fingerprint,
        epochs=config.epochs,
        train_steps=config.train_steps,
        budget_steps=budget,
        blend=blend_key(blend_config) if blend else None,
        evaluate=evaluate,
        fields=fields,
    )
