"""What holds of each of the paper's claims on an experiment's data.

Every claim of the paper's section 4 becomes a comparison between runs of results.jsonl, paired by
seed (seeds align data order and initialisation, so the pairing removes the seed's share of the
noise), with the 95% t interval of the mean difference over seeds:

  holds         the interval lies on the side the paper claims;
  contradicted  it lies on the other side;
  not shown     it holds zero;
  too few seeds / not run.

Claims about a gain being *larger* (with less data, on the tail) compare relative gains over the
baseline, seed by seed: the paper reports relative improvements, and absolute ones shrink with the
metric itself. The alpha and dropout-rate curves (the paper's figures 5 and 6) come from the
tuning trials instead: the best validation Recall@50 among a method's trials at each value, one
run per point and no interval, so their verdicts are observations, not tests.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections import defaultdict

from ssl_retrieval.experimentation import intervals
from ssl_retrieval.experimentation.intervals import mean_ci, paired, per_seed

HOLDS, CONTRADICTED, NOT_SHOWN = "holds", "contradicted", "not shown"
TOO_FEW, NOT_RUN = "too few seeds", "not run"


@dataclasses.dataclass
class Finding:
    claim: str  # the paper's claim
    test: str  # the comparison made here
    mean: float = math.nan
    half: float = math.nan
    n: int = 0
    verdict: str = NOT_RUN
    observed: str = ""  # for observations without an interval: the values compared


def verdict(mean: float, half: float, n: int) -> str:
    """The verdict of a claim that the difference is positive (intervals.verdict in these words)."""
    if n == 0:
        return NOT_RUN
    return {"better": HOLDS, "worse": CONTRADICTED, "no difference shown": NOT_SHOWN}.get(
        intervals.verdict(mean, half, n), TOO_FEW
    )


def _finding(claim: str, test: str, diffs: dict) -> Finding:
    mean, half, n = mean_ci(list(diffs.values()))
    return Finding(claim, test, mean, half, n, verdict(mean, half, n))


def relative_gain(results, fraction, method, baseline, slice_name="all", column="recall@50"):
    """seed -> (method - baseline) / baseline, over the seeds both ran (baseline > 0)."""
    a = per_seed(results, fraction, method, slice_name, column)
    b = per_seed(results, fraction, baseline, slice_name, column)
    return {s: (a[s] - b[s]) / b[s] for s in a.keys() & b.keys() if b[s] > 0}


def _difference(first: dict, second: dict) -> dict:
    return {s: first[s] - second[s] for s in first.keys() & second.keys()}


def run_findings(
    results,
    fractions,
    augmentations=(),
    baseline="baseline",
    method="cfm",
    column="recall@50",
    augmentation_fraction=None,
) -> list[Finding]:
    """The paper's claims that runs on test answer; `fractions[0]` is the full training data,
    and the augmentation variants are compared at `augmentation_fraction` (default: the same)."""
    full, smaller = fractions[0], list(fractions[1:])
    aug_fraction = augmentation_fraction or full
    metric = intervals.COLUMN_NAMES.get(column, column)
    out = [
        _finding(
            "SSL with CFM improves on the backbone model (Table 1)",
            f"{method} - {baseline}, {metric}, fraction {full}",
            paired(results, full, method, baseline, column=column),
        ),
        _finding(
            "Augmentation works better in the SSL task than in the supervised one: CFM beats "
            "feature dropout (FD)",
            f"{method} - fd, {metric}, fraction {full}",
            paired(results, full, method, "fd", column=column),
        ),
        _finding(
            "Augmentation is critical: CFM beats spread-out regularisation (SO, SSL without it)",
            f"{method} - so, {metric}, fraction {full}",
            paired(results, full, method, "so", column=column),
        ),
    ]
    for fraction in smaller:
        out.append(
            _finding(
                f"SSL improves on the backbone with less supervision too (Table 2): fraction "
                f"{fraction}",
                f"{method} - {baseline}, {metric}, fraction {fraction}",
                paired(results, fraction, method, baseline, column=column),
            )
        )
        out.append(
            _finding(
                f"... and its gain, relative to the baseline, is larger at {fraction} than at "
                f"{full}",
                f"relative gain of {method} at {fraction} - at {full}",
                _difference(
                    relative_gain(results, fraction, method, baseline, column=column),
                    relative_gain(results, full, method, baseline, column=column),
                ),
            )
        )
    out += [
        _finding(
            "SSL improves tail items (Table 3)",
            f"{method} - {baseline}, tail {metric}, fraction {full}",
            paired(results, full, method, baseline, "tail", column),
        ),
        _finding(
            "... more than head items",
            f"relative gain of {method} on the tail - on the head, fraction {full}",
            _difference(
                relative_gain(results, full, method, baseline, "tail", column),
                relative_gain(results, full, method, baseline, "head", column),
            ),
        ),
    ]
    for other in [m for m in augmentations if m not in (method, baseline)]:
        claim = (
            "Correlated masks beat random ones: CFM beats RFM (Table 4)"
            if other == "rfm"
            else f"CFM beats the augmentation variant {other} (Table 4)"
        )
        out.append(
            _finding(
                claim,
                f"{method} - {other}, {metric}, fraction {aug_fraction}",
                paired(results, aug_fraction, method, other, column=column),
            )
        )
    return out


def trial_curve(trials, method, fraction, param) -> list[tuple[float, float, int]]:
    """[(param value, best trial value, trials)] of `method`'s tuning trials at `fraction`."""
    by_value = defaultdict(list)
    for t in trials:
        if t["method"] == method and t["fraction"] == fraction and param in t["params"]:
            by_value[t["params"][param]].append(t["value"])
    return [(v, max(by_value[v]), len(by_value[v])) for v in sorted(by_value)]


def best_trial(trials, method, fraction) -> float:
    values = [t["value"] for t in trials if t["method"] == method and t["fraction"] == fraction]
    return max(values) if values else math.nan


def _observed(claim, test, holds: bool | None, observed: str = "") -> Finding:
    verdict = {True: HOLDS, False: NOT_SHOWN, None: NOT_RUN}[holds]
    return Finding(claim, test, verdict=verdict, observed=observed)


def _curve_text(name: str, curve) -> str:
    return f"{name}: " + ", ".join(f"{v:g} {best:.3f}" for v, best, _ in curve) if curve else ""


def curve_findings(trials, fraction, baseline="baseline", method="cfm") -> list[Finding]:
    """The shapes of the paper's figures 5 and 6 in the tuning trials (validation, one run per
    point): observations, not tests."""
    base = best_trial(trials, baseline, fraction)
    alpha = trial_curve(trials, method, fraction, "alpha")
    so_curve = trial_curve(trials, "so", fraction, "alpha")
    so = {v: best for v, best, _ in so_curve}
    dropout = trial_curve(trials, method, fraction, "dropout_rate")
    fd = trial_curve(trials, "fd", fraction, "dropout_rate")
    where = f"best validation Recall@50 of the trials, fraction {fraction}"
    baseline_text = f"; {baseline} {base:.3f}" if not math.isnan(base) else ""
    out = [
        _observed(
            "Beyond some alpha, SSL falls below the baseline (Figure 5)",
            f"{method} at the largest alpha tried vs the best {baseline} trial; {where}",
            alpha[-1][1] < base if alpha and not math.isnan(base) else None,
            _curve_text(f"{method} by alpha", alpha) + baseline_text,
        ),
        _observed(
            "SSL beats SO over a wide range of alpha (Figure 5)",
            f"{method} vs so at every alpha both tried; {where}",
            all(best > so[v] for v, best, _ in alpha if v in so)
            if any(v in so for v, _, _ in alpha)
            else None,
            _curve_text("so by alpha", so_curve),
        ),
        _observed(
            "With SSL, quality peaks at a moderate dropout rate (0.3 in the paper) (Figure 6)",
            f"{method}'s best dropout rate is neither the smallest nor the largest tried; {where}",
            max(dropout, key=lambda p: p[1])[0] not in (dropout[0][0], dropout[-1][0])
            if len(dropout) >= 3
            else None,
            _curve_text(f"{method} by rate", dropout),
        ),
        _observed(
            "Feature dropout (FD) deteriorates as its rate grows (Figure 6)",
            f"fd's best value falls at every larger rate tried; {where}",
            all(a[1] > b[1] for a, b in zip(fd, fd[1:], strict=False)) if len(fd) >= 2 else None,
            _curve_text("fd by rate", fd),
        ),
    ]
    return out


def _cell(f: Finding) -> str:
    if f.observed:
        return f.observed
    if f.n == 0:
        return "-"
    if math.isnan(f.half):
        return f"{f.mean:+.4f}"
    return f"{f.mean:+.4f} ± {f.half:.4f}"


def table(findings: list[Finding]) -> str:
    lines = [
        "| the paper's claim | compared here | difference (95% CI) or values | seeds | verdict |",
        "|---|---|---|---|---|",
    ]
    for f in findings:
        seeds = str(f.n) if f.n else "-"
        lines.append(f"| {f.claim} | {f.test} | {_cell(f)} | {seeds} | **{f.verdict}** |")
    return "\n".join(lines)


def curve_figure(trials, fraction, param, methods, path, baseline="baseline") -> bool:
    """Best validation Recall@50 against `param` per method, the baseline's best dashed (the
    paper's figures 5 and 6, from the tuning trials). False when no method tried `param`."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    curves = {m: trial_curve(trials, m, fraction, param) for m in methods}
    curves = {m: c for m, c in curves.items() if c}
    if not curves:
        return False
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for method, points in curves.items():
        xs, ys, _ = zip(*points, strict=True)
        ax.plot(xs, ys, marker="o", label=method)
    base = best_trial(trials, baseline, fraction)
    if not math.isnan(base):
        ax.axhline(base, linestyle="--", color="grey", label=baseline)
    ax.set_xscale("log" if param == "alpha" else "linear")
    ax.set_xlabel(param)
    ax.set_ylabel("best validation Recall@50")
    ax.set_title(f"tuning trials, fraction {fraction}")
    ax.legend()
    fig.tight_layout()
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True
