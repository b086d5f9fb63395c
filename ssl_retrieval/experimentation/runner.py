r"""The experiment runner: methods x training fractions x seeds, then a report.

`python -m ssl_retrieval.experiments --config=...` is its command; the command's docstring
describes the config. Each run is `python -m ssl_retrieval.train` then `python -m
ssl_retrieval.evaluate` in a subprocess (memory is returned after every run); finished runs
(metrics.json present) are skipped, so an interrupted experiment resumes; so are runs whose
record in the committed results.jsonl stands for them (keys.py), so it resumes on a fresh clone
too. The plan -> run -> record loop is engine.py's, shared with the tuning.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
from collections.abc import Callable

from ssl_retrieval import atomic
from ssl_retrieval.experimentation import configs, engine, launch, ledger, report
from ssl_retrieval.experimentation.configs import ExperimentConfig
from ssl_retrieval.experimentation.ledger import Unit


@dataclasses.dataclass(frozen=True)
class Run:
    method: str
    fraction: str
    seed: int
    params: tuple = ()  # ((flag, value),) of a sweep point

    @property
    def run_id(self) -> str:
        suffix = "".join(f"_{k}={v}" for k, v in self.params)
        return f"{self.fraction}/{self.method}{suffix}/seed{self.seed}"


def plan(config: ExperimentConfig) -> list[Run]:
    """Every run the tables and sweeps need, deduplicated, in a stable order.

    Seeds are the outer loop, so an experiment stopped early has every table cell with fewer
    seeds rather than some cells complete and others empty. Sweep points come last.
    """
    runs: dict[str, Run] = {}
    for seed in config.seeds:
        for spec in config.tables.values():
            for fraction in spec.fractions:
                for method in spec.methods:
                    run = Run(method, fraction, seed)
                    runs.setdefault(run.run_id, run)
    for param, sweep in config.sweeps.items():
        for method in sweep.methods:
            for value in sweep.values:
                for seed in sweep.seeds or config.seeds:
                    run = Run(method, sweep.fraction, seed, ((param, value),))
                    runs.setdefault(run.run_id, run)
    return list(runs.values())


def flagfile_of(config: ExperimentConfig, run: Run) -> str:
    """The flagfile a run trains with: its method's, or its method's at its fraction."""
    return config.flagfile(run.method, run.fraction)


def commands(config: ExperimentConfig, run: Run) -> tuple[list[str], list[str], str]:
    """(train, evaluate, model dir) of a run."""
    model_dir = os.path.join(config.runs_dir, run.run_id)
    data_dir = config.data_dirs[run.fraction]
    flagfile = flagfile_of(config, run)
    train = [
        sys.executable,
        "-m",
        "ssl_retrieval.train",
        f"--flagfile={flagfile}",
        f"--data_dir={data_dir}",
        f"--model_dir={model_dir}",
        f"--seed={run.seed}",
        *config.fraction_flags.get(run.fraction, ()),
        *config.extra_flags,
        *[f"--{k}={v}" for k, v in run.params],
    ]
    evaluate = [
        sys.executable,
        "-m",
        "ssl_retrieval.evaluate",
        f"--data_dir={data_dir}",
        f"--model_dir={model_dir}",
        f"--ks={','.join(str(k) for k in config.ks)}",
    ]
    return train, evaluate, model_dir


def more_evaluations(config: ExperimentConfig, evaluate: list[str], model_dir: str) -> list:
    """The `evaluate` commands of the config's further evaluations, each writing
    `<model_dir>/metrics_<name>.json`."""
    return [
        (*evaluate, *flags, f"--output={evaluation_path(model_dir, name)}")
        for name, flags in config.evaluations.items()
    ]


def evaluation_path(model_dir: str, name: str) -> str:
    return os.path.join(model_dir, f"metrics_{name}.json")


def unit(config: ExperimentConfig, run: Run) -> Unit:
    """The run as the campaign engine goes through it: its commands, and what it waits for."""
    train, evaluate, model_dir = commands(config, run)
    evaluation: dict = {"ks": list(config.ks)}
    if config.evaluations:  # records made before further evaluations keep their key
        evaluation["more"] = {name: list(flags) for name, flags in config.evaluations.items()}
    return Unit(
        run.run_id,
        run.fraction,
        model_dir,
        tuple(train),
        tuple(evaluate),
        evaluation=evaluation,
        flagfile=flagfile_of(config, run),
        more_evaluations=tuple(more_evaluations(config, evaluate, model_dir)),
    )


def record_book(config: ExperimentConfig) -> ledger.RecordBook:
    """The experiment's records (results.jsonl) and the data they are compared on."""
    path = os.path.join(config.output_dir, "results.jsonl")
    return ledger.RecordBook.of(path, "run_id", config.data_dirs)


def status(
    config: ExperimentConfig, book: ledger.RecordBook | None = None
) -> list[tuple[Run, str]]:
    """Each planned run with "recorded", "to run", or "waits for <flagfile>" (tuning writes it)."""
    book = book or record_book(config)
    out = []
    for run in plan(config):
        if book.finished(planned := unit(config, run)) is not None:
            out.append((run, "recorded"))
        elif not os.path.exists(planned.flagfile):
            out.append((run, f"waits for {planned.flagfile}"))
        else:
            out.append((run, "to run"))
    return out


def status_text(config: ExperimentConfig) -> str:
    """`status` as lines, then per fraction the counts and, from the timed records there, an
    estimate of the time left (the mean wall time of a run times the runs left)."""
    book = record_book(config)
    states = status(config, book)
    lines = [f"{run.run_id}  {state}" for run, state in states]
    for fraction in config.data_dirs:
        mine = [(run, state) for run, state in states if run.fraction == fraction]
        if mine:
            done = [book.recorded[run.run_id] for run, state in mine if state == "recorded"]
            waiting = sum(1 for _, state in mine if state.startswith("waits"))
            lines.append(_fraction_status(fraction, len(mine), done, waiting))
    return "\n".join(lines)


def _fraction_status(fraction: str, planned: int, done: list[dict], waiting: int) -> str:
    left = planned - len(done)
    timed = [r["wall_seconds"] for r in done if r.get("wall_seconds") is not None]
    text = (
        f"fraction {fraction}: {len(done)} recorded, {left - waiting} to run, "
        f"{waiting} waiting for their flagfiles"
    )
    if left and timed:
        mean = sum(timed) / len(timed)
        minutes = round(mean * left / 60)
        text += (
            f"; about {minutes // 60} h {minutes % 60} min left at {mean / 60:.1f} min a "
            f"run (the mean of the {len(timed)} timed runs)"
        )
    elif left:
        text += "; no run timed at this fraction yet"
    return text


def _result_record(run: Run, model_dir: str, evaluations=()) -> dict:
    with open(os.path.join(model_dir, "metrics.json")) as f:
        metrics = json.load(f)
    record = {
        "run_id": run.run_id,
        "method": run.method,
        "fraction": run.fraction,
        "seed": run.seed,
        "params": dict(run.params),
        "metrics": metrics["metrics"],
    }
    if evaluations:
        record["evaluations"] = {}
        for name in evaluations:
            with open(evaluation_path(model_dir, name)) as f:
                record["evaluations"][name] = json.load(f)["metrics"]
    train_metrics = os.path.join(model_dir, "train_metrics.json")
    if os.path.exists(train_metrics):
        with open(train_metrics) as f:
            record["train"] = json.load(f)
    return record


UNVERIFIED = (
    "found in its model dir by --report_only, not recorded for these commands: reported, but "
    "not reused (the next pass trains it again, or resumes it)"
)


def _check_selection(runs: list[Run], fractions, methods, seeds):
    """Names in `fractions` / `methods` / `seeds` that no planned run has are an error (a typo
    would train nothing)."""
    for flag, chosen, known in (
        ("--fractions", fractions, {run.fraction for run in runs}),
        ("--methods", methods, {run.method for run in runs}),
        ("--seeds", seeds, {run.seed for run in runs}),
    ):
        if unknown := sorted(set(chosen or ()) - known):
            raise ValueError(f"{flag}: no planned run has {unknown}; the plan has {sorted(known)}")


def _selected(run: Run, fractions, methods, seeds) -> bool:
    """Whether a run is to be trained in this call (None selects every value)."""
    return (
        (fractions is None or run.fraction in fractions)
        and (methods is None or run.method in methods)
        and (seeds is None or run.seed in seeds)
    )


def run_experiment(
    config_path: str,
    report_only: bool = False,
    runner: Callable[[list[str]], None] | None = None,
    fractions: list[str] | None = None,
    methods: list[str] | None = None,
    seeds: list[int] | None = None,
) -> dict:
    """Runs (or resumes) every run of the config, then writes the report. Returns a summary.

    With `fractions` (or `methods`, `seeds`), only runs of those training fractions (methods,
    seeds) are trained now, and only those fractions' reference recommenders are computed; the others are reported when recorded for the runs planned now (so cheap
    fractions can be finished first, one method's seeds can go first once its flagfile is
    tuned, and a fraction whose flagfiles are not tuned yet waits). Several calls may run on
    one config at once, each training the runs no other is training (workers.py).
    """
    source = configs.typed_json.load(config_path)
    config = configs.experiment(source, config_path)
    out_dir = config.output_dir
    os.makedirs(out_dir, exist_ok=True)
    runs = plan(config)
    seeds = None if seeds is None else [int(seed) for seed in seeds]
    _check_selection(runs, fractions, methods, seeds)
    by_name = {run.run_id: run for run in runs}
    campaign = engine.Campaign(
        record_book(config),
        config.runs_dir,
        describe=lambda planned: _result_record(
            by_name[planned.name], planned.model_dir, config.evaluations
        ),
        runner=runner or launch.run_subprocess,
    )

    def hold(planned: Unit) -> bool:
        """Whether a run not recorded is left for another call (or reported as found)."""
        run = by_name[planned.name]
        if not _selected(run, fractions, methods, seeds):
            return True  # not this time, and not recorded: its table cells wait
        if not os.path.exists(planned.flagfile):
            # Tuning writes it when the method's trials there are done; until then its table
            # cells wait, and the runs that can go on do.
            logging.warning(
                "experiments: %s waits for its flagfile %s", run.run_id, planned.flagfile
            )
            return True
        if report_only and os.path.exists(os.path.join(planned.model_dir, "metrics.json")):
            # Reported as it is, whatever command made it, but without a key: a later pass
            # does not take it for the run planned now.
            found = _result_record(run, planned.model_dir, config.evaluations)
            campaign.keep({**found, "unverified": UNVERIFIED})
        return report_only

    units = [unit(config, run) for run in runs]
    before = campaign.go(units, hold)
    logging.info("experiments: %d of %d runs finished before this call", before, len(runs))
    references = _references(config, campaign.runner, fractions)
    atomic.write_jsonl(os.path.join(out_dir, "references.jsonl"), references)
    _tsne(config, out_dir)

    def write_report(records: list[dict]) -> None:
        report.write_report(records, references, config, out_dir)
        atomic.write_json(os.path.join(out_dir, "config.json"), source, sort_keys=False)

    results = campaign.finish(units, then=write_report)
    return {"runs": len(runs), "results": len(results), "output_dir": out_dir}


def _references(config: ExperimentConfig, runner, fractions=None) -> list[dict]:
    """Each reference recommender's test metrics per fraction, computed once (a tuned peer
    takes minutes). Fractions outside `fractions` are reported only if computed before."""
    records = []
    for fraction, data_dir in config.data_dirs.items():
        for name in config.references:
            output = os.path.join(config.runs_dir, fraction, "reference", f"{name}.json")
            if not os.path.exists(output):
                if fractions is not None and fraction not in fractions:
                    continue
                runner(
                    [
                        sys.executable,
                        "-m",
                        "ssl_retrieval.evaluate",
                        f"--data_dir={data_dir}",
                        f"--recommender={name}",
                        f"--output={output}",
                        f"--ks={','.join(str(k) for k in config.ks)}",
                    ]
                )
            with open(output) as f:
                records.append({"recommender": name, "fraction": fraction, **json.load(f)})
    return records


def _tsne(config: ExperimentConfig, out_dir: str) -> None:
    """Figure 4: t-SNE of item embeddings coloured by a categorical feature, per method."""
    spec = config.tsne
    if spec is None:
        return
    model_dirs = [
        os.path.join(config.runs_dir, Run(method, spec.fraction, spec.seed).run_id)
        for method in spec.methods
    ]
    missing = [d for d in model_dirs if not os.path.exists(os.path.join(d, "metrics.json"))]
    if missing:
        logging.info("experiments: no t-SNE figure yet, its runs are not finished: %s", missing)
        return
    import numpy as np  # noqa: PLC0415
    from sklearn.manifold import TSNE  # noqa: PLC0415

    from ssl_retrieval import data as data_lib  # noqa: PLC0415
    from ssl_retrieval.evaluation import evaluator  # noqa: PLC0415
    from ssl_retrieval.model import two_tower as model  # noqa: PLC0415

    data_dir = config.data_dirs[spec.fraction]
    labels = []
    for batch in data_lib.items_dataset(data_dir, 4096):
        labels += [row[0].decode() if len(row) else "-" for row in batch[spec.color_by].to_list()]
    counts: dict[str, int] = {}
    for label in labels:
        counts[label] = counts.get(label, 0) + 1
    top = sorted(counts, key=lambda v: -counts[v])[: spec.top_values]
    candidates = np.array([i for i, label in enumerate(labels) if label in top])
    rng = np.random.default_rng(0)
    sample = rng.choice(candidates, size=min(spec.sample, len(candidates)), replace=False)
    panels = {}
    for method, model_dir in zip(spec.methods, model_dirs, strict=True):
        trained = model.load_from_model_dir(model_dir, data_dir)
        _, items = evaluator.embed_corpus(trained, data_dir)
        xy = TSNE(n_components=2, init="pca", random_state=0, perplexity=30).fit_transform(
            items[sample]
        )
        panels[method] = (xy, [labels[i] for i in sample])
    report.tsne_figure(
        panels,
        os.path.join(out_dir, "figure4_tsne.png"),
        f"Item embeddings coloured by {spec.color_by} (t-SNE)",
    )
