"""The experiment and tuning configs (`configs/experiments/*.json`, `configs/tuning/*.json`) as
frozen dataclasses, read and checked once: an error names the file and the field.

  load_experiment(path) -> ExperimentConfig   `python -m ssl_retrieval.experiments --config=`
  load_tuning(path) -> TuningConfig           `python -m ssl_retrieval.tune --config=`
  ExperimentsOptions, TuneOptions             those two commands' other flags (cli.define_flags)

The formats are described in those two commands' docstrings; keys starting with "_" are comments.
"""

from __future__ import annotations

import dataclasses
import os

from ssl_retrieval.cli import option
from ssl_retrieval.experimentation import typed_json

# A value of a grid or a sweep, kept as the JSON wrote it: it names trials and runs (alpha=1.0).
Scalar = str | int | float | bool


def _mapping():
    return dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Table:
    """A table of the report: its methods (rows) at each of its fractions."""

    methods: tuple[str, ...] = ()
    fractions: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Sweep:
    """Runs of `methods` at one fraction with the swept flag at each of `values`."""

    methods: tuple[str, ...]
    values: tuple[Scalar, ...]
    fraction: str
    seeds: tuple[int, ...] | None = None  # default: the experiment's seeds


@dataclasses.dataclass(frozen=True)
class Claims:
    """What report.md says of the paper's claims (claims.py)."""

    trials: str | None = None  # a tuning's trials.jsonl: the alpha and dropout curves
    curve_fraction: str | None = None  # default: the main table's first fraction
    columns: tuple[str, ...] = ("recall@50",)


@dataclasses.dataclass(frozen=True)
class Tsne:
    """Figure 4: item embeddings of the `seed` run of each method at `fraction`."""

    methods: tuple[str, ...]
    fraction: str
    seed: int
    color_by: str
    sample: int = 3000
    top_values: int = 8


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    """An experiment: methods x training fractions x seeds, then a report."""

    output_dir: str
    runs_dir: str
    data_dirs: dict[str, str]
    methods: dict[str, str | dict[str, str]]  # a flagfile, or one per fraction
    title: str = "Experiment report"
    fraction_flags: dict[str, tuple[str, ...]] = _mapping()
    extra_flags: tuple[str, ...] = ()
    seeds: tuple[int, ...] = (0,)
    ks: tuple[int, ...] = (10, 50)
    baseline: str = "baseline"
    tables: dict[str, Table] = _mapping()
    sweeps: dict[str, Sweep] = _mapping()
    references: tuple[str, ...] = ()  # recommenders `evaluate --recommender` knows
    # More evaluations of every run on test, by name: extra `evaluate` flags (e.g. the model
    # alone, without its blend: {"cosine": ["--popularity_prior=0", "--prior_share=1"]}).
    evaluations: dict[str, tuple[str, ...]] = _mapping()
    claims: Claims | None = None
    tsne: Tsne | None = None

    def validate(self) -> ExperimentConfig:
        """Raises ValueError naming the field of the first value that cannot work."""
        _known_fractions(self.data_dirs, "fraction_flags", self.fraction_flags)
        for name, table in self.tables.items():
            _known(f"tables.{name}.methods", table.methods, "methods", self.methods)
            _known(f"tables.{name}.fractions", table.fractions, "data_dirs", self.data_dirs)
        for name, sweep in self.sweeps.items():
            _known(f"sweeps.{name}.methods", sweep.methods, "methods", self.methods)
            _known(f"sweeps.{name}.fraction", (sweep.fraction,), "data_dirs", self.data_dirs)
        for where, method, fraction in self.planned_pairs():
            flagfile = self.methods[method]
            if isinstance(flagfile, dict) and fraction not in flagfile:
                raise ValueError(
                    f"methods.{method}: no flagfile for fraction {fraction!r}, which {where} "
                    f"trains it at; it names {sorted(flagfile)}"
                )
        if self.tsne is not None:
            _known("tsne.methods", self.tsne.methods, "methods", self.methods)
            _known("tsne.fraction", (self.tsne.fraction,), "data_dirs", self.data_dirs)
        return self

    def planned_pairs(self) -> list[tuple[str, str, str]]:
        """(field, method, fraction) of every table cell and sweep the config plans."""
        pairs = [
            (f"tables.{name}", method, fraction)
            for name, table in self.tables.items()
            for fraction in table.fractions
            for method in table.methods
        ]
        pairs += [
            (f"sweeps.{name}", method, sweep.fraction)
            for name, sweep in self.sweeps.items()
            for method in sweep.methods
        ]
        return pairs

    def flagfile(self, method: str, fraction: str) -> str:
        """The flagfile `method` trains with at `fraction`."""
        flagfile = self.methods[method]
        return flagfile[fraction] if isinstance(flagfile, dict) else flagfile

    def table(self, name: str) -> Table:
        return self.tables.get(name, Table())


@dataclasses.dataclass(frozen=True)
class TuningMethod:
    flagfile: str
    grid: dict[str, tuple[Scalar, ...]] = _mapping()
    fractions: tuple[str, ...] | None = None  # default: every fraction


@dataclasses.dataclass(frozen=True)
class Promotion:
    """A fraction whose trials are the `top` best points of the fraction `source`."""

    source: str = dataclasses.field(metadata={"json": "from"})
    top: int


@dataclasses.dataclass(frozen=True)
class Backbone:
    """Flags tuned on one method and shared by every other (the paper, section 4.1)."""

    method: str
    params: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Variant:
    """An untuned variant: its flagfile with the values `like` was tuned to of `params`."""

    flagfile: str
    like: str
    params: tuple[str, ...]
    fractions: tuple[str, ...] | None = None  # default: every fraction


@dataclasses.dataclass(frozen=True)
class TuningConfig:
    """A tuning: each method's grid tried on validation at each fraction."""

    name: str
    output_dir: str
    runs_dir: str
    flagfile_dir: str
    data_dirs: dict[str, str]
    methods: dict[str, TuningMethod]
    fraction_flags: dict[str, tuple[str, ...]] = _mapping()
    common_flags: tuple[str, ...] = ()
    trials: int = 8
    seed: int = 0
    promote: dict[str, Promotion] = _mapping()
    backbone: Backbone | None = None
    variants: dict[str, Variant] = _mapping()

    def validate(self) -> TuningConfig:
        """Raises ValueError naming the field of the first value that cannot work."""
        _known_fractions(self.data_dirs, "fraction_flags", self.fraction_flags)
        if self.trials < 1:
            raise ValueError(f"trials: must be at least 1, got {self.trials}")
        for name, method in self.methods.items():
            _known(f"methods.{name}.fractions", method.fractions or (), "data_dirs", self.data_dirs)
        for name, variant in self.variants.items():
            _known(f"variants.{name}.like", (variant.like,), "methods", self.methods)
            _known(
                f"variants.{name}.fractions", variant.fractions or (), "data_dirs", self.data_dirs
            )
        self._check_promotion()
        self._check_backbone()
        return self

    def _check_promotion(self) -> None:
        fractions = list(self.data_dirs)
        for fraction, spec in self.promote.items():
            if fraction not in fractions or spec.source not in fractions:
                raise ValueError(
                    f"promote: {fraction!r} from {spec.source!r}: both must be data_dirs keys"
                )
            if fractions.index(spec.source) >= fractions.index(fraction):
                raise ValueError(
                    f"promote: {fraction!r} is promoted from {spec.source!r}, which data_dirs "
                    "must list before it (its trials rank the points)"
                )
            if spec.top < 1:
                raise ValueError(f"promote: {fraction!r} needs a positive integer 'top'")

    def _check_backbone(self) -> None:
        if self.backbone is None:
            return
        method, shared = self.backbone.method, self.backbone.params
        if not self.methods or method != next(iter(self.methods)):
            raise ValueError(
                f"backbone: its method {method!r} must be the first of methods (the others are "
                "tried on the values it is tuned to)"
            )
        if not shared:
            raise ValueError("backbone: needs 'params', the flags tuned on it and shared")
        for name, spec in self.methods.items():
            own = set(spec.grid)
            if name == method and not set(shared) <= own:
                raise ValueError(f"backbone: {method!r}'s grid must have {list(shared)}")
            if name != method and own & set(shared):
                raise ValueError(
                    f"methods.{name}.grid has {sorted(own & set(shared))}: the backbone "
                    f"({method}) tunes those for every method"
                )

    def flagfiles(self) -> dict[str, str]:
        """{field: flagfile} of every method and variant (each trial or choice includes it)."""
        out = {f"methods.{name}.flagfile": m.flagfile for name, m in self.methods.items()}
        return out | {f"variants.{name}.flagfile": v.flagfile for name, v in self.variants.items()}


def _known(field: str, names, of: str, known) -> None:
    if unknown := [n for n in names if n not in known]:
        raise ValueError(f"{field}: {unknown[0]!r} is not one of {of} {list(known)}")


def _known_fractions(data_dirs: dict, field: str, by_fraction: dict) -> None:
    _known(field, list(by_fraction), "data_dirs", data_dirs)


def experiment(values: dict, where: str = "experiment config") -> ExperimentConfig:
    """The experiment config of parsed JSON `values`; errors start with `where`."""
    if isinstance(values, dict) and values.get("tsne") == {}:
        values = {**values, "tsne": None}  # {} says "no figure", as null does
    return _checked(typed_json.from_json(ExperimentConfig, values, where), where)


def tuning(values: dict, where: str = "tuning config") -> TuningConfig:
    """The tuning config of parsed JSON `values`; errors start with `where`. Its flagfiles
    must exist (every trial and choice includes one)."""
    config = _checked(typed_json.from_json(TuningConfig, values, where), where)
    for field, flagfile in config.flagfiles().items():
        if not os.path.exists(flagfile):
            raise typed_json.ConfigError(f"{where}: {field}: no file {flagfile}")
    return config


def load_experiment(path: str) -> ExperimentConfig:
    return experiment(typed_json.load(path), path)


def load_tuning(path: str) -> TuningConfig:
    return tuning(typed_json.load(path), path)


def _checked(config, where: str):
    try:
        return config.validate()
    except typed_json.ConfigError:
        raise
    except ValueError as e:
        raise typed_json.ConfigError(f"{where}: {e}") from None


@dataclasses.dataclass(frozen=True)
class ExperimentsOptions:
    """`python -m ssl_retrieval.experiments`: each field is the flag of the same name."""

    config: str = option(help="Experiment config JSON (configs/experiments/).")
    report_only: bool = option(
        False,
        "Train nothing: report the runs finished so far (references and t-SNE are still computed).",
    )
    dry_run: bool = option(
        False,
        "Train nothing: list the planned runs, each recorded, to run, or waiting for its tuned "
        "flagfile, then per fraction how many are left and the time they should take.",
    )
    fractions: tuple[str, ...] | None = option(
        None,
        "Train only runs of these training fractions now (e.g. 0.01,0.1: the short ones first); "
        "the report still has every run recorded by the same commands. Default: all.",
    )
    methods: tuple[str, ...] | None = option(
        None,
        "Train only runs of these methods now (e.g. baseline: its seeds first, once tuning wrote "
        "its flagfile); combines with --fractions. Default: all.",
    )
    seeds: tuple[int, ...] | None = option(
        None,
        "Train only runs of these seeds now (e.g. 1,2,3: every table cell gets a few seeds "
        "before any gets five); combines with --fractions and --methods. Default: all.",
    )


@dataclasses.dataclass(frozen=True)
class TuneOptions:
    """`python -m ssl_retrieval.tune`: each field is the flag of the same name."""

    config: str = option(help="Tuning config JSON (configs/tuning/).")
    dry_run: bool = option(False, "List the trials and exit.")


@dataclasses.dataclass(frozen=True)
class PairedSummaryOptions:
    """`python -m ssl_retrieval.experimentation.paired_summary`: each field is its flag."""

    config: str = option(help="Report config JSON (configs/reports/).")
