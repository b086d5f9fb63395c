r"""One method against a baseline across several experiments: the paired verdicts in one report.

  python -m ssl_retrieval.experimentation.paired_summary --config=configs/reports/ssl_recipe.json

Each experiment (`python -m ssl_retrieval.experiments`) reports its own datasets' tables; a
question such as "does the SSL task help the recipe?" spans several of them (Debian, `linked`,
`synthetic`, at several training fractions). This reads their results.jsonl and writes one
markdown table per list size: for every dataset and fraction, the method minus the baseline seed
by seed (paired), mean ± 95% t half-width and the verdict, per slice, for the full ranking and
for each further evaluation (e.g. the model alone); then the share of each list the blends
chosen on validation gave to cold slots (whether the method still needs them); and the
evidence the recipe's SSL rule reads, which is on validation, not test: each run's blend
objective (the mean Recall@K over slices of the blend chosen for K), paired the same way. Those
values are in the runs' `blend.json` (`<runs_dir>/<fraction>/<method>/seed<n>/`, not committed):
on a clone without the model dirs that table says so.

The config (JSON): title, method, baseline, output (report path), fractions ([..], the row
order), evaluations ([further evaluation names, e.g. "cosine"]), datasets ({name: experiment
output dir}), notes ([paragraphs written under the title]).
"""

from __future__ import annotations

import json
import math
import os

from absl import app

from ssl_retrieval import atomic, cli
from ssl_retrieval.experimentation import configs, intervals, report

SLICES = ("all", "head", "tail", "cold")

FLAGS = cli.define_flags(configs.PairedSummaryOptions, required=("config",))


def _cell(mean: float, half: float, n: int) -> str:
    if n == 0:
        return "not run"
    interval = "" if math.isnan(half) else f" ± {half:.3f}"
    verdict = intervals.verdict(mean, half, n)
    return f"{mean:+.3f}{interval} " + (
        f"**{verdict}**" if verdict in ("better", "worse") else verdict
    )


def _read(results_dir: str) -> list[dict]:
    """The experiment's records (none if it has not reported yet)."""
    path = os.path.join(results_dir, "results.jsonl")
    return report.read_results(path) if os.path.exists(path) else []


def paired_rows(config: dict, evaluation: str, k: int) -> list[str]:
    """Markdown rows: per dataset and fraction, the method minus the baseline per slice."""
    suffix = f" ({evaluation})" if evaluation else ""
    method, baseline = config["method"] + suffix, config["baseline"] + suffix
    rows = []
    for dataset, results_dir in config["datasets"].items():
        results = report.with_evaluations(_read(results_dir))
        for fraction in config["fractions"]:
            cells, seeds = [], 0
            for slice_name in SLICES:
                mean, half, n = intervals.paired_differences(
                    results, fraction, method, baseline, slice_name, f"recall@{k}"
                )
                seeds = max(seeds, n)
                cells.append(_cell(mean, half, n))
            rows.append(f"| {dataset} | {fraction} | {seeds} | " + " | ".join(cells) + " |")
    return rows


def cold_share_rows(config: dict, k: int) -> list[str]:
    """Markdown rows: the mean cold share the validation-chosen blends gave each method."""
    rows = []
    for dataset, results_dir in config["datasets"].items():
        results = _read(results_dir)
        for fraction in config["fractions"]:
            cells = []
            for method in (config["baseline"], config["method"]):
                shares = [
                    r["train"]["blends"][str(k)]["cold_share"]
                    for r in results
                    if r["method"] == method
                    and r["fraction"] == fraction
                    and str(k) in r.get("train", {}).get("blends", {})
                ]
                cells.append(
                    f"{sum(shares) / len(shares):.2f} ({len(shares)})" if shares else "not run"
                )
            rows.append(f"| {dataset} | {fraction} | " + " | ".join(cells) + " |")
    return rows


def validation_objectives(records, runs_dir: str, method: str, fraction: str, k: int) -> dict:
    """{seed: the blend objective on validation of the run's blend for K} of the `records` of
    `method` at `fraction` whose model dir is here (under the experiment's `runs_dir`)."""
    out = {}
    for record in records:
        if record["method"] != method or record["fraction"] != fraction:
            continue
        blend = os.path.join(runs_dir, fraction, method, f"seed{record['seed']}", "blend.json")
        if os.path.exists(blend):
            with open(blend) as f:
                choice = json.load(f).get("choices", {}).get(str(k))
            if choice is not None:
                out[record["seed"]] = float(choice["value"][-1])  # the mean over slices
    return out


def validation_rows(config: dict) -> list[str]:
    """Markdown rows: per dataset and fraction, the method minus the baseline in the blend's
    validation objective at each K, over the seeds both have a model dir for."""
    rows = []
    for dataset, results_dir in config["datasets"].items():
        records = _read(results_dir)
        path = os.path.join(results_dir, "config.json")
        runs_dir = None
        if os.path.exists(path):
            with open(path) as f:
                runs_dir = json.load(f)["runs_dir"]
        for fraction in config["fractions"]:
            cells, seeds = [], 0
            for k in (10, 50):
                ours, theirs = (
                    validation_objectives(records, runs_dir, m, fraction, k) if runs_dir else {}
                    for m in (config["method"], config["baseline"])
                )
                differences = [ours[s] - theirs[s] for s in sorted(ours.keys() & theirs.keys())]
                mean, half, n = intervals.mean_ci(differences)
                seeds = max(seeds, n)
                cells.append(_cell(mean, half, n) if n else _why_none(records, config, fraction))
            rows.append(f"| {dataset} | {fraction} | {seeds} | " + " | ".join(cells) + " |")
    return rows


def _why_none(records: list[dict], config: dict, fraction: str) -> str:
    """Why a validation cell has no paired seeds: none recorded, or their model dirs are not
    on this machine."""
    here = [r for r in records if r["fraction"] == fraction]
    ours = {r["seed"] for r in here if r["method"] == config["method"]}
    theirs = {r["seed"] for r in here if r["method"] == config["baseline"]}
    return "no model dirs here" if ours & theirs else "not run"


def write(config: dict) -> str:
    method, baseline = config["method"], config["baseline"]
    parts = [f"# {config['title']}", "", *config.get("notes", [])]
    header = "| dataset | fraction | paired seeds | " + " | ".join(SLICES) + " |"
    rule = "|---|---|---|" + "---|" * len(SLICES)
    for evaluation in ["", *config.get("evaluations", [])]:
        what = f"evaluated as `{evaluation}`" if evaluation else "with the blend (the product)"
        for k in (10, 50):
            parts += [
                "",
                f"## Recall@{k} per query, `{method}` minus `{baseline}`, {what}",
                "",
                header,
                rule,
                *paired_rows(config, evaluation, k),
            ]
    parts += [
        "",
        "## Cold slots: the share of each list the blend chosen on validation gave them",
        "",
        "Mean over seeds (number of runs in brackets). Where the method's blends still give",
        "cold items slots, it has not made them unnecessary.",
    ]
    for k in (10, 50):
        parts += [
            "",
            f"| K={k}: dataset | fraction | `{baseline}` | `{method}` |",
            "|---|---|---|---|",
            *cold_share_rows(config, k),
        ]
    parts += [
        "",
        "## The rule's evidence, on validation: the blends' objective, paired",
        "",
        f"`{method}` minus `{baseline}` in the objective each run's blend was chosen by (the",
        "mean Recall@K over all / head / tail / cold on the 2,000 validation queries), seed by",
        "seed. The recipe's SSL rule (`configs/recipe.cfg`) reads this table, never the test",
        "tables above.",
        "",
        "| dataset | fraction | paired seeds | K=10 | K=50 |",
        "|---|---|---|---|---|",
        *validation_rows(config),
    ]
    markdown = "\n".join(parts) + "\n"
    atomic.write_text(config["output"], markdown)
    return markdown


def _main() -> str:
    options = cli.from_flags(configs.PairedSummaryOptions, FLAGS)
    with open(options.config) as f:
        config = json.load(f)
    write(config)
    return f"paired_summary: {config['output']}"


main = cli.main(_main, errors=(ValueError, KeyError, OSError))

if __name__ == "__main__":
    app.run(main)
