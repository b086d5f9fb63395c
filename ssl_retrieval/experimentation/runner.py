r"""The experiment runner: methods x training fractions x seeds, then a report.

`python -m ssl_retrieval.experiments --config=...` is its command; the command's docstring
describes the config. Each run is `python -m ssl_retrieval.train` then `python -m
ssl_retrieval.evaluate` in a subprocess (memory is returned after every run); finished runs
(metrics.json present) are skipped, so an interrupted experiment resumes; so are runs recorded
in the committed results.jsonl by the same commands on the same data (`ledger.py`), so it
resumes on a fresh clone too.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
import time
from collections.abc import Callable

from ssl_retrieval import atomic
from ssl_retrieval.experimentation import configs, launch, ledger, report, workers
from ssl_retrieval.experimentation.configs import ExperimentConfig


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


@dataclasses.dataclass(frozen=True)
class Ledger:
    """What decides whether a planned run is done: the recorded runs and their data."""

    recorded: dict[str, dict]
    fingerprints: dict[str, str]
    pairs: dict[str, int | None]

    @classmethod
    def of(cls, config: ExperimentConfig) -> Ledger:
        path = os.path.join(config.output_dir, "results.jsonl")
        dirs = config.data_dirs.items()
        return cls(
            ledger.load(path, "run_id"),
            {f: ledger.data_fingerprint(d) for f, d in dirs},
            {f: ledger.train_pairs(d) for f, d in dirs},
        )

    def reloaded(self, path: str) -> Ledger:
        """The same ledger with the records as `path` holds them now (other workers add some)."""
        return dataclasses.replace(self, recorded=ledger.load(path, "run_id"))

    def finished(self, config: ExperimentConfig, run: Run) -> dict | None:
        """The run's record when it stands for these commands and data (ledger.py), else None."""
        train, evaluate, _ = commands(config, run)
        record = self.recorded.get(run.run_id)
        fraction = run.fraction
        if ledger.reusable(
            record, [train, evaluate], self.fingerprints[fraction], pairs=self.pairs[fraction]
        ):
            return record
        return None


def status(config: ExperimentConfig, book: Ledger | None = None) -> list[tuple[Run, str]]:
    """Each planned run with "recorded", "to run", or "waits for <flagfile>" (tuning writes it)."""
    book = book or Ledger.of(config)
    out = []
    for run in plan(config):
        if book.finished(config, run) is not None:
            out.append((run, "recorded"))
        elif not os.path.exists(flagfile := flagfile_of(config, run)):
            out.append((run, f"waits for {flagfile}"))
        else:
            out.append((run, "to run"))
    return out


def status_text(config: ExperimentConfig) -> str:
    """`status` as lines, then per fraction the counts and, from the timed records there, an
    estimate of the time left (the mean wall time of a run times the runs left)."""
    book = Ledger.of(config)
    states = status(config, book)
    lines = [f"{run.run_id}  {state}" for run, state in states]
    for fraction in config.data_dirs:
        mine = [(run, state) for run, state in states if run.fraction == fraction]
        if not mine:
            continue
        done = [book.recorded[run.run_id] for run, state in mine if state == "recorded"]
        left = len(mine) - len(done)
        waiting = sum(1 for _, state in mine if state.startswith("waits"))
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
        lines.append(text)
    return "\n".join(lines)


def _result_record(run: Run, model_dir: str) -> dict:
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
    train_metrics = os.path.join(model_dir, "train_metrics.json")
    if os.path.exists(train_metrics):
        with open(train_metrics) as f:
            record["train"] = json.load(f)
    return record


_write_jsonl = atomic.write_jsonl


UNVERIFIED = (
    "found in its model dir by --report_only, not recorded for these commands: reported, but "
    "not reused (the next pass trains it again, or resumes it)"
)


def _check_selection(runs: list[Run], fractions: list[str] | None, methods: list[str] | None):
    """Names in `fractions` / `methods` that no planned run has are an error (a typo would
    train nothing)."""
    for flag, chosen, known in (
        ("--fractions", fractions, {run.fraction for run in runs}),
        ("--methods", methods, {run.method for run in runs}),
    ):
        if unknown := sorted(set(chosen or ()) - known):
            raise ValueError(f"{flag}: no planned run has {unknown}; the plan has {sorted(known)}")


def _selected(run: Run, fractions: list[str] | None, methods: list[str] | None) -> bool:
    """Whether a run is to be trained in this call (None selects every value)."""
    return (fractions is None or run.fraction in fractions) and (
        methods is None or run.method in methods
    )


def _train_and_evaluate(
    run: Run, train: list[str], evaluate: list[str], model_dir: str, runner
) -> tuple[dict, list[list[str]]]:
    """Trains (or resumes, or finishes) a run and evaluates it on test: its record, and its
    commands with the flagfiles as they were when it started (ledger.freeze).

    Train resumes, finishes or (for a finished run with other blend options) chooses the blend
    again; a model dir of an incompatible command is set aside (launch.train).
    """
    ran = [ledger.freeze(train), ledger.freeze(evaluate)]  # the flagfiles as it starts
    started = launch.train(runner, train, model_dir)
    runner(evaluate)
    record = _result_record(run, model_dir)
    if started is not None:  # training and evaluation on test, start-ups included
        record["wall_seconds"] = round(time.monotonic() - started, 1)
    return record, ran


def run_experiment(
    config_path: str,
    report_only: bool = False,
    runner: Callable[[list[str]], None] | None = None,
    fractions: list[str] | None = None,
    methods: list[str] | None = None,
) -> dict:
    """Runs (or resumes) every run of the config, then writes the report. Returns a summary.

    With `fractions` (or `methods`), only runs of those training fractions (methods) are
    trained now; the others are reported when recorded by the same commands (so cheap
    fractions can be finished first, one method's seeds can go first once its flagfile is
    tuned, and a fraction whose flagfiles are not tuned yet waits). Several calls may run on
    one config at once, each training the runs no other is training (workers.py).
    """
    source = configs.typed_json.load(config_path)
    config = configs.experiment(source, config_path)
    out_dir = config.output_dir
    os.makedirs(out_dir, exist_ok=True)
    results_path = os.path.join(out_dir, "results.jsonl")
    references_path = os.path.join(out_dir, "references.jsonl")
    runner = runner or launch.run_subprocess
    runs = plan(config)
    _check_selection(runs, fractions, methods)
    book = Ledger.of(config)
    results_lock = workers.lock_path(config.runs_dir, "results")
    results, skipped = [], 0

    def keep(record: dict, made_by: list[list[str]] | None, fraction: str) -> None:
        if made_by is not None:  # stamped: the record stands for these commands and data
            record = ledger.stamp(record, made_by, book.fingerprints[fraction])
        results.append(record)
        with workers.locked(results_lock):  # merged with what other workers wrote meanwhile
            on_disk = ledger.load(results_path, "run_id")
            _write_jsonl(results_path, results + ledger.unreached(on_disk, results, "run_id"))

    for i, run in enumerate(runs):
        train, evaluate, model_dir = commands(config, run)
        if (previous := book.finished(config, run)) is not None:
            skipped += 1
            keep(previous, [train, evaluate], run.fraction)  # an earlier sitting's, or machine's
        elif not _selected(run, fractions, methods):
            continue  # not this time, and not recorded: its table cells wait
        elif not os.path.exists(flagfile := flagfile_of(config, run)):
            # Tuning writes it when the method's trials there are done; until then its table
            # cells wait, and the runs that can go on do.
            logging.warning("experiments: %s waits for its flagfile %s", run.run_id, flagfile)
        elif report_only:
            if os.path.exists(os.path.join(model_dir, "metrics.json")):
                # Reported as it is, whatever command made it, but not stamped with these
                # commands: a later pass does not take it for a run they made.
                record = {**_result_record(run, model_dir), "unverified": UNVERIFIED}
                keep(record, None, run.fraction)
        elif (claimed := workers.claim(workers.lock_path(config.runs_dir, run.run_id))) is None:
            logging.info("experiments: %s is being trained by another worker", run.run_id)
        else:
            with claimed:  # held until its record is written
                book = book.reloaded(results_path)  # another worker may have finished it since
                if (previous := book.finished(config, run)) is not None:
                    skipped += 1
                    keep(previous, [train, evaluate], run.fraction)
                    continue
                logging.info("experiments: run %d/%d %s", i + 1, len(runs), run.run_id)
                record, ran = _train_and_evaluate(run, train, evaluate, model_dir, runner)
                keep(record, ran, run.fraction)
    logging.info("experiments: %d of %d runs finished before this call", skipped, len(runs))
    references = _references(config, runner)
    _write_jsonl(references_path, references)
    _tsne(config, out_dir)
    with workers.locked(results_lock):
        # Every planned run is in but those other workers finished meanwhile (taken from the
        # file now): the rest of the file is stale. The report is written under the same lock,
        # from these records, so the last worker to write it has every run.
        book = book.reloaded(results_path)
        mine = {record["run_id"] for record in results}
        for run in runs:
            if run.run_id not in mine and (record := book.finished(config, run)) is not None:
                results.append(record)
        order = {run.run_id: i for i, run in enumerate(runs)}
        results.sort(key=lambda record: order[record["run_id"]])
        _write_jsonl(results_path, results)
        report.write_report(results, references, config, out_dir)
        atomic.write_json(os.path.join(out_dir, "config.json"), source, sort_keys=False)
    return {"runs": len(runs), "results": len(results), "output_dir": out_dir}


def _references(config: ExperimentConfig, runner) -> list[dict]:
    records = []
    for fraction, data_dir in config.data_dirs.items():
        for name in config.references:
            output = os.path.join(config.runs_dir, fraction, "reference", f"{name}.json")
            if not os.path.exists(output):
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
    from ssl_retrieval import model  # noqa: PLC0415
    from ssl_retrieval.evaluation import evaluator  # noqa: PLC0415

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
