"""Tables and figures of an experiment, in the paper's shapes, from results.jsonl.

Each result is one run: {"run_id", "method", "fraction", "seed", "params", "metrics"} with
metrics as written by the evaluator ({"all": {...}, "head": {...}, ...}). Numbers are the mean
over seeds +/- the half-width of a 95% t confidence interval, with the relative change against
the baseline of the same fraction.
"""

from __future__ import annotations

import math
import os
import statistics
from collections import defaultdict

import numpy as np

from ssl_retrieval import atomic
from ssl_retrieval.experimentation import claims, ledger
from ssl_retrieval.experimentation.configs import ExperimentConfig
from ssl_retrieval.experimentation.intervals import (
    COLUMN_NAMES,
    mean_ci,
    paired_differences,
    verdict,
)

MAIN_COLUMNS = ("recall@10", "recall@50", "pair_recall@10", "pair_recall@50", "map@10", "map@50")


def read_results(path: str) -> list[dict]:
    return atomic.read_jsonl(path)


def _group(results, fraction, params=None):
    """method -> list of metrics dicts for plain runs (no sweep params) of `fraction`."""
    grouped = defaultdict(list)
    for r in results:
        if r["fraction"] == fraction and (r.get("params") or {}) == (params or {}):
            grouped[r["method"]].append(r["metrics"])
    return grouped


def _cell(values, base_mean=None) -> str:
    mean, half, n = mean_ci(values)
    if n == 0:
        return "-"
    text = f"{mean:.4f}" + (f" ± {half:.4f}" if not math.isnan(half) else "")
    if base_mean is not None and base_mean > 0:
        text += f" ({100 * (mean - base_mean) / base_mean:+.1f}%)"
    return text


def table(results, fraction, methods, columns=MAIN_COLUMNS, slice_name="all", baseline="baseline"):
    """A markdown table: one row per method, cells 'mean ± CI (relative to baseline)'."""
    grouped = _group(results, fraction)
    base = grouped.get(baseline, [])
    header = "| method | seeds | " + " | ".join(COLUMN_NAMES.get(c, c) for c in columns) + " |"
    lines = [header, "|" + "---|" * (len(columns) + 2)]
    for method in methods:
        runs = grouped.get(method, [])
        if not runs:
            continue
        cells = []
        for c in columns:
            values = [m[slice_name].get(c) for m in runs]
            base_mean = (
                mean_ci([m[slice_name].get(c) for m in base])[0]
                if base and method != baseline
                else None
            )
            cells.append(_cell(values, base_mean))
        lines.append(f"| {method} | {len(runs)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def head_tail_table(results, fraction, methods, baseline="baseline", per="query"):
    """The paper's Table 3: Recall@10 and @50 on the tail and head slices, per query or per
    pair (`per`), relative to the baseline."""
    prefix = {"query": "", "pair": "pair_"}[per]
    grouped = _group(results, fraction)
    base = grouped.get(baseline, [])
    cols = [(s, f"{prefix}recall@{k}") for s in ("tail", "head") for k in (10, 50)]
    lines = [
        "| method | seeds | tail Recall@10 | tail Recall@50 | head Recall@10 | head Recall@50 |",
        "|---|---|---|---|---|---|",
    ]
    for method in methods:
        runs = grouped.get(method, [])
        if not runs:
            continue
        cells = []
        for s, c in cols:
            base_mean = (
                mean_ci([m[s].get(c) for m in base])[0] if base and method != baseline else None
            )
            cells.append(_cell([m[s].get(c) for m in runs], base_mean))
        lines.append(f"| {method} | {len(runs)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def paired_table(
    results,
    fraction,
    methods,
    baseline="baseline",
    cells=(
        ("all", "recall@10"),
        ("all", "recall@50"),
        ("all", "pair_recall@50"),
        ("tail", "recall@50"),
    ),
):
    """Markdown: per method, the paired difference against the baseline with its 95% CI."""
    header = " | ".join(f"{s} {COLUMN_NAMES.get(c, c)}" for s, c in cells)
    lines = [f"| method vs {baseline} | seeds | {header} |", "|---|---|" + "---|" * len(cells)]
    for method in methods:
        if method == baseline:
            continue
        row, seeds = [], 0
        for slice_name, column in cells:
            mean, half, n = paired_differences(
                results, fraction, method, baseline, slice_name, column
            )
            seeds = max(seeds, n)
            if n == 0:
                row.append("-")
                continue
            interval = f" ± {half:.4f}" if not math.isnan(half) else ""
            row.append(f"{mean:+.4f}{interval} ({verdict(mean, half, n)})")
        if seeds:
            lines.append(f"| {method} | {seeds} | " + " | ".join(row) + " |")
    return "\n".join(lines)


def slice_table(results, fraction, methods, references=(), column="recall@50"):
    """Markdown: `column` per slice (all, head, tail, cold) per method and reference, per query
    and per pair (the paper's appendix metric)."""
    slices = ("all", "head", "tail", "cold")
    head = " | ".join(f"{s}" for s in slices)
    lines = [
        f"| recommender | seeds | per query: {head} | per pair: {head} |",
        "|---|---|" + "---|" * (2 * len(slices)),
    ]
    grouped = _group(results, fraction)
    for method in methods:
        runs = grouped.get(method, [])
        if not runs:
            continue
        per_query = [_cell([m[s].get(column) for m in runs]) for s in slices]
        per_pair = [_cell([m[s].get(f"pair_{column}") for m in runs]) for s in slices]
        lines.append(f"| {method} | {len(runs)} | " + " | ".join(per_query + per_pair) + " |")
    for r in references:
        if r["fraction"] != fraction:
            continue
        m = r["metrics"]
        per_query = [f"{m[s].get(column, math.nan):.4f}" for s in slices]
        per_pair = [f"{m[s].get('pair_' + column, math.nan):.4f}" for s in slices]
        lines.append(f"| {r['recommender']} | - | " + " | ".join(per_query + per_pair) + " |")
    return "\n".join(lines)


def _against(reference: float, values) -> str:
    """'mean ± half verdict' of `values` against one reference value; one run has no interval,
    so it is only 'higher' or 'lower' than the reference."""
    mean, half, _ = mean_ci(values)
    if math.isnan(half):
        if math.isnan(reference):
            return f"{mean:.4f} (one run)"
        return f"{mean:.4f} (one run) {'higher' if mean >= reference else 'lower'}"
    if math.isnan(reference):
        verdict = "-"
    elif mean - half >= reference:
        verdict = "above"
    else:
        verdict = "within" if mean + half >= reference else "below"
    return f"{mean:.4f} ± {half:.4f} {verdict}"


def reference_check(results, fraction, methods, references, column="recall@50"):
    """Markdown: per method and slice, the best reference recommender on that slice and whether
    the method is at least as good: "above" (the whole 95% interval above it), "within" (the
    reference inside the interval) or "below"; a single run is "higher" or "lower"."""
    slices = ("all", "head", "tail", "cold")
    refs = [r for r in references if r["fraction"] == fraction]
    lines = [
        "| recommender | " + " | ".join(slices) + " |",
        "|---|" + "---|" * len(slices),
    ]
    best = {}
    for s in slices:
        scored = [(r["metrics"][s].get(column, math.nan), r["recommender"]) for r in refs]
        scored = [x for x in scored if not math.isnan(x[0])]
        best[s] = max(scored) if scored else (math.nan, "-")
    lines.append(
        "| best reference | " + " | ".join(f"{best[s][1]} {best[s][0]:.4f}" for s in slices) + " |"
    )
    grouped = _group(results, fraction)
    for method in [m for m in methods if grouped.get(m)]:
        runs = grouped[method]
        cells = [_against(best[s][0], [m[s].get(column) for m in runs]) for s in slices]
        lines.append(f"| {method} ({len(runs)} seeds) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def sweep_points(results, fraction, param, method, metric="recall@50"):
    """[(value, mean, half-width)] of `metric` over runs of `method` sweeping `param`."""
    by_value = defaultdict(list)
    for r in results:
        p = r.get("params") or {}
        if r["method"] == method and r["fraction"] == fraction and set(p) == {param}:
            by_value[p[param]].append(r["metrics"]["all"][metric])
    return [(v, *mean_ci(by_value[v])[:2]) for v in sorted(by_value)]


def sweep_figure(results, fraction, param, methods, path, baseline="baseline", metric="recall@50"):
    """Recall@50 against `param` per method, the baseline dashed (paper figures 5 and 6)."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, ax = plt.subplots(figsize=(5, 3.5))
    drawn = False
    for method in methods:
        points = sweep_points(results, fraction, param, method, metric)
        if points:
            xs, ys, hs = zip(*points, strict=True)
            ax.errorbar(
                xs, ys, yerr=[0 if math.isnan(h) else h for h in hs], marker="o", label=method
            )
            drawn = True
    base = [m["all"][metric] for m in _group(results, fraction).get(baseline, [])]
    if base:
        ax.axhline(np.mean(base), linestyle="--", color="grey", label=baseline)
    if not drawn:
        plt.close(fig)
        return False
    ax.set_xscale("log" if param == "alpha" else "linear")
    ax.set_xlabel(param)
    ax.set_ylabel(metric.replace("recall", "Recall"))
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def tsne_figure(panels: dict[str, tuple[np.ndarray, list[str]]], path: str, title: str) -> None:
    """Side-by-side 2-d embeddings (already t-SNE'd), points coloured by a categorical value."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4.5))
    axes = np.atleast_1d(axes)
    for ax, (name, (xy, labels)) in zip(axes, panels.items(), strict=True):
        categories = sorted(set(labels))
        for c in categories:
            mask = np.array([label == c for label in labels])
            ax.scatter(xy[mask, 0], xy[mask, 1], s=4, label=c)
        ax.set_title(name)
        ax.set_xticks([])
        ax.set_yticks([])
    axes[-1].legend(markerscale=3, fontsize=7, loc="center left", bbox_to_anchor=(1, 0.5))
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def claims_section(results, config: ExperimentConfig, out_dir: str, baseline: str) -> list[str]:
    """Markdown lines: what holds of each of the paper's claims (claims.py), with the alpha and
    dropout curves of the tuning trials when `config.claims.trials` names them."""
    spec = config.claims
    main = config.table("main")
    if spec is None or not main.fractions:
        return []
    aug_table = config.table("augmentations")
    augmentations = aug_table.methods
    aug_fraction = (aug_table.fractions or [None])[0]
    parts = ["", "## What holds of the paper's claims", ""]
    parts.append(
        "Each claim as a paired comparison on test (method minus the other, seed by seed; mean "
        "± 95% t half-width over seeds): it **holds** when the interval lies on the claimed "
        "side of zero, is **contradicted** when it lies on the other, and is **not shown** when "
        "it holds zero. 'Larger' gains compare relative gains over the baseline, seed by seed."
    )
    for column in spec.columns:
        findings = claims.run_findings(
            results,
            main.fractions,
            augmentations,
            baseline,
            column=column,
            augmentation_fraction=aug_fraction,
        )
        parts += ["", f"### In {COLUMN_NAMES.get(column, column)}", "", claims.table(findings)]
    trials_path = spec.trials
    if trials_path and os.path.exists(trials_path):
        trials = atomic.read_jsonl(trials_path)
        fraction = spec.curve_fraction or main.fractions[0]
        parts += [
            "",
            f"The alpha and dropout-rate curves (figures 5 and 6) from the tuning trials "
            f"(`{trials_path}`, fraction {fraction}): the best validation Recall@50 among a "
            "method's trials at each value, one run per point, so these are observations, "
            "not tests.",
            "",
            claims.table(claims.curve_findings(trials, fraction, baseline)),
        ]
        for param, figure, methods in (
            ("alpha", "figure5_alpha_trials.png", ("cfm", "rfm", "so")),
            ("dropout_rate", "figure6_dropout_trials.png", ("cfm", "rfm", "fd")),
        ):
            path = os.path.join(out_dir, figure)
            if claims.curve_figure(trials, fraction, param, methods, path, baseline):
                parts += ["", f"![{param}, tuning trials]({figure})"]
    return parts


def _hours(seconds: float) -> str:
    minutes = round(seconds / 60)
    return f"{minutes // 60} h {minutes % 60} min"


def wall_time(records: list[dict]) -> str:
    """'N h M min, K of the R records timed' from their wall_seconds, and an estimate for all R
    when some are not timed (records made before runners timed them, or runs resumed from a
    checkpoint): each counted at the mean of the timed records of its training fraction."""
    timed = [r for r in records if r.get("wall_seconds") is not None]
    if not timed:
        return "not timed"
    measured = sum(r["wall_seconds"] for r in timed)
    text = f"{_hours(measured)}, {len(timed)} of {len(records)} timed"
    if len(timed) == len(records):
        return text
    by_fraction: dict = {}
    for r in timed:
        by_fraction.setdefault(r.get("fraction"), []).append(r["wall_seconds"])
    overall = measured / len(timed)
    estimate = measured + sum(
        statistics.fmean(by_fraction.get(r.get("fraction"), [overall]))
        for r in records
        if r.get("wall_seconds") is None
    )
    return (
        f"{text}; about {_hours(estimate)} for all {len(records)}, each untimed one counted at "
        "the mean of the timed ones of its training fraction"
    )


def budget_sentence(results: list[dict]) -> str:
    """Which runs trained to the end of their step budget (so may not have converged)."""
    trained = [r for r in results if "stopped_early" in r.get("train", {})]
    capped = [r["run_id"] for r in trained if ledger.used_whole_budget(r)]
    if capped:
        text = (
            f"{len(capped)} of {len(trained)} runs trained to the end of their step budget, so "
            "they may not have converged: " + ", ".join(f"`{name}`" for name in capped) + "."
        )
    elif trained:
        text = f"Every run stopped early on validation, before its step budget ({len(trained)})."
    else:
        text = "No run has a training summary to tell whether it stopped early."
        return text if results else ""
    if len(trained) < len(results):
        missing = len(results) - len(trained)
        text += f" {missing} {'has' if missing == 1 else 'have'} no training summary."
    return text


def unverified_sentence(results: list[dict]) -> str:
    """Which runs --report_only found in their model dirs without a record for these commands."""
    found = [r["run_id"] for r in results if r.get("unverified")]
    if not found:
        return ""
    return (
        f" {len(found)} of {len(results)} runs are reported as found in their model dirs, not "
        "recorded for these commands (`--report_only`; the next pass trains them again): "
        + ", ".join(f"`{name}`" for name in found)
        + "."
    )


NOT_YET = "No runs at this fraction yet: `python -m ssl_retrieval.experiments` resumes them."


def write_report(
    results: list[dict], references: list[dict], config: ExperimentConfig, out_dir: str
) -> str:
    """Writes report.md (+ sweep figures) into `out_dir`; returns the markdown."""
    baseline = config.baseline
    main, aug = config.table("main"), config.table("augmentations")
    ran = {r["fraction"] for r in results}
    parts = [f"# {config.title}", ""]
    parts.append(
        "Mean over seeds ± half-width of the 95% t confidence interval; in brackets the change "
        f"relative to `{baseline}` at the same training fraction. Every number comes from "
        "`results.jsonl` beside this file. Recall per pair is the paper's metric (the share of "
        "held-out pairs whose candidate is in its query's top K; its appendix gives TopPopular "
        "Recall@K as the CDF of the K-th most frequent item); recall per query (the mean over "
        "queries of the share of their candidates found) stands beside it, and MAP is per query. "
        f"Wall time of the runs (training and evaluation, this machine): {wall_time(results)}. "
        + budget_sentence(results)
        + unverified_sentence(results)
    )
    for i, fraction in enumerate(main.fractions):
        label = "Table 1" if i == 0 else f"Table 2{'abcdefg'[i - 1]}"
        parts += ["", f"## {label}: training fraction {fraction}", ""]
        if fraction not in ran:
            parts.append(NOT_YET)
            continue
        parts.append(table(results, fraction, main.methods, baseline=baseline))
    for fraction in [f for f in main.fractions if f in ran]:
        parts += ["", f"## Paired differences against `{baseline}` (fraction {fraction})", ""]
        parts.append(
            "Per seed, method minus baseline on the same data order and initialisation; mean ± "
            "95% t half-width over seeds, and whether the interval excludes zero."
        )
        parts += ["", paired_table(results, fraction, main.methods, baseline)]
    if main.fractions and main.fractions[0] in ran:
        fraction = main.fractions[0]
        for per, label in (("pair", "3a"), ("query", "3b")):
            parts += [
                "",
                f"## Table {label}: head and tail slices, per {per} (fraction {fraction})",
                "",
            ]
            parts.append(head_tail_table(results, fraction, main.methods, baseline, per))
    for fraction in [f for f in main.fractions if f in ran]:
        parts += ["", f"## Recall@50 by slice, per query and per pair (fraction {fraction})", ""]
        parts.append(
            "Per query: the mean over queries of the share of their held-out candidates found "
            "(the tables above). Per pair: the share of held-out pairs whose candidate is in its "
            "query's top 50, the paper's appendix metric (its TopPopular Recall@K is the CDF "
            "of the K-th item)."
        )
        parts += ["", slice_table(results, fraction, main.methods, references)]
        if any(r["fraction"] == fraction for r in references):
            parts += [
                "",
                f"Against the best reference on each slice (Recall@50 per query, fraction "
                f"{fraction}): above = the 95% interval is above it, within = it is inside.",
                "",
                reference_check(results, fraction, main.methods, references),
            ]
    parts += list_size_sections(
        results, references, config, [f for f in main.fractions if f in ran]
    )
    parts += claims_section(results, config, out_dir, baseline)
    for fraction in aug.fractions:
        parts += ["", f"## Table 4: augmentation variants (fraction {fraction})", ""]
        parts.append(
            table(results, fraction, aug.methods, baseline=baseline) if fraction in ran else NOT_YET
        )
    parts += references_section(references)
    parts += figures_section(results, config, out_dir)
    markdown = "\n".join(parts) + "\n"
    atomic.write_text(os.path.join(out_dir, "report.md"), markdown)
    return markdown


def with_evaluations(results: list[dict]) -> list[dict]:
    """`results` and, for each further evaluation of a run (the config's "evaluations"), a
    record of its own named `<method> (<evaluation>)`, so that tables and paired differences
    treat it as a method of its own (e.g. the model alone beside the model with its blend)."""
    out = list(results)
    for record in results:
        for name, metrics in record.get("evaluations", {}).items():
            out.append({**record, "method": f"{record['method']} ({name})", "metrics": metrics})
    return out


def evaluated_methods(methods, config: ExperimentConfig) -> list[str]:
    """Each method, then the same method under each further evaluation."""
    return [*methods, *(f"{m} ({name})" for name in config.evaluations for m in methods)]


def paired_slices_table(results, fraction, methods, baseline, column):
    """Markdown: per method and slice, `column` minus the baseline's, seed by seed (paired),
    mean ± 95% half-width and the verdict."""
    slices = ("all", "head", "tail", "cold")
    cells = tuple((s, column) for s in slices)
    return paired_table(results, fraction, methods, baseline, cells)


def list_size_sections(results, references, config: ExperimentConfig, fractions) -> list[str]:
    """For each fraction and list size K: every method (and further evaluation) and reference
    per slice at Recall@K, the best reference per slice against each method's interval, and
    each method's paired differences against the baseline per slice."""
    results = with_evaluations(results)
    plain = config.table("main").methods
    methods = evaluated_methods(plain, config)
    # Each evaluation is compared with the baseline's under the same evaluation.
    suffixes = [""] + [f" ({name})" for name in config.evaluations]
    compared = [m for m in plain if m != config.baseline]
    parts = []
    for fraction in fractions:
        for k in config.ks:
            column = f"recall@{k}"
            parts += ["", f"## Recall@{k} by slice (fraction {fraction})", ""]
            parts += [slice_table(results, fraction, methods, references, column)]
            if any(r["fraction"] == fraction for r in references):
                parts += [
                    "",
                    f"Against the best reference on each slice (Recall@{k} per query): above = "
                    "the whole 95% interval is above it, within = it is inside, below.",
                    "",
                    reference_check(results, fraction, methods, references, column),
                ]
            for suffix in suffixes if compared else ():
                baseline = config.baseline + suffix
                parts += [
                    "",
                    f"Paired differences against `{baseline}`, Recall@{k} per query by slice "
                    "(seed by seed; mean ± 95% t half-width; better / worse when the interval "
                    "excludes 0):",
                    "",
                    paired_slices_table(
                        results, fraction, [m + suffix for m in compared], baseline, column
                    ),
                ]
    return parts


def references_section(references: list[dict]) -> list[str]:
    """Markdown lines: every reference recommender's main metrics, per fraction."""
    if not references:
        return []
    parts = ["", "## Reference recommenders (same evaluator)", ""]
    parts.append("| recommender | fraction | " + " | ".join(MAIN_COLUMNS) + " | tail recall@10 |")
    parts.append("|---|---|" + "---|" * (len(MAIN_COLUMNS) + 1))
    for r in references:
        m = r["metrics"]
        cells = " | ".join(f"{m['all'][c]:.4f}" for c in MAIN_COLUMNS)
        parts.append(
            f"| {r['recommender']} | {r['fraction']} | {cells} | {m['tail']['recall@10']:.4f} |"
        )
    return parts


def figures_section(results: list[dict], config: ExperimentConfig, out_dir: str) -> list[str]:
    """Markdown lines: the sweeps' figures (drawn here) and the t-SNE one (when drawn)."""
    figures = []
    for param, figure in (("alpha", "figure5_alpha.png"), ("dropout_rate", "figure6_dropout.png")):
        sweep = config.sweeps.get(param)
        path = os.path.join(out_dir, figure)
        if sweep and sweep_figure(
            results, sweep.fraction, param, sweep.methods, path, config.baseline
        ):
            figures.append((param, figure))
    if os.path.exists(os.path.join(out_dir, "figure4_tsne.png")):
        figures.append(("t-SNE of item embeddings", "figure4_tsne.png"))
    if not figures:
        return []
    return ["", "## Figures", "", *[f"![{name}]({path})" for name, path in figures]]
