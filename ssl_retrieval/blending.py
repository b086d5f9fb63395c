"""One list of neighbours from two rankings: the popular one and the similar one.

The popular ranking is cos(q, c) + beta * log(1 + n_c) (`popularity.py`): it finds the hubs
that most held-out links of a power-law graph point to, and it pushes down every item with few
or no training pairs, so the tail and cold items a user asks "more like this" for fall out of
the list. The similar ranking is cos(q, c) + w * tfidf(q, c) - gamma * log(1 + n_c): the model's
cosine plus the TF-IDF cosine of the two items' feature values (`tfidf.py`), with a little
popularity taken off so that its half of the list looks further down the tail.

A list of k takes its first round(prior_share * k) slots from the popular ranking and fills the
rest from the similar ranking, skipping items already listed (and, if the similar ranking runs
out, from further down the popular one). prior_share = 1 is the popular ranking alone, and with
beta = 0 too, plain cosine: the model as trained.

Why slots and not one score: the two scores disagree about cold items by design (no count, no
boost), and a single weighted sum can only trade the head for the cold slice along one curve. On
the Debian validation split (recipe model, seed 0, 2,000 queries, Recall@50 all / head / tail /
cold) the prior alone at its best beta (0.05) gave 0.741 / 0.802 / 0.551 / 0.509; 60% of the
slots from the popular ranking at beta 0.08 and the rest from cos + 2 tfidf - 0.02 log count
gave 0.741 / 0.795 / 0.564 / 0.602 (without the TF-IDF term, cold 0.578). No prior-only ranking
met every reference recommender on every slice; 63 of the 276 grid points did.

The four numbers (beta, w, prior_share, gamma) are chosen together on the validation split at
the end of training (`choose`), and written to `blend.json` in the model dir; evaluation and
export read them from there ("auto") or take them from flags.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os

import numpy as np

from ssl_retrieval import atomic

FILE = "blend.json"
SLICES = ("all", "head", "tail", "cold")
OBJECTIVES = ("references", "slices")
DEFAULT_BETAS = (0.0, 0.02, 0.03, 0.05, 0.08, 0.12)
DEFAULT_CONTENT_WEIGHTS = (0.0, 1.0, 2.0)
DEFAULT_POPULARITY_PENALTIES = (0.0, 0.02, 0.05)
DEFAULT_PRIOR_SHARES = (1.0, 0.6, 0.5, 0.4, 0.3, 0.2)


@dataclasses.dataclass(frozen=True)
class Blend:
    popularity_prior: float = 0.0  # beta of the popular ranking
    content_weight: float = 0.0  # w of TF-IDF in the similar ranking
    prior_share: float = 1.0  # share of the list's slots from the popular ranking
    popularity_penalty: float = 0.0  # gamma of log(1 + count) taken off the similar ranking

    def __post_init__(self):
        weights = (self.popularity_prior, self.content_weight, self.popularity_penalty)
        if not all(w >= 0 for w in weights):
            raise ValueError(f"blend weights must be >= 0, got {self}")
        if not 0 <= self.prior_share <= 1:
            raise ValueError(f"prior_share must be in [0, 1], got {self.prior_share}")

    def prior_slots(self, k: int) -> int:
        return min(int(k), int(math.floor(self.prior_share * k + 0.5)))

    @property
    def single_ranking(self) -> bool:
        """True when the list is the popular ranking alone (no similar ranking needed)."""
        return self.prior_share >= 1.0

    def rankings(self) -> dict[str, tuple[float, float]]:
        """The rankings this blend merges: {"popular": ..., "similar": ...} (see `ranking`)."""
        out = {"popular": ranking(popularity_prior=self.popularity_prior)}
        if not self.single_ranking:
            out["similar"] = ranking(self.content_weight, -self.popularity_penalty)
        return out


def ranking(content_weight: float = 0.0, popularity_prior: float = 0.0) -> tuple[float, float]:
    """(w, v) of the ranking cos(q, c) + w * tfidf(q, c) + v * log(1 + n_c), the form
    `evaluator.rankings_scorer` scores: the popular ranking is (0, beta), the similar (w, -gamma)."""
    return (float(content_weight), float(popularity_prior))


def grid_rankings(content_weights, popularity_penalties, betas=DEFAULT_BETAS) -> dict:
    """Every ranking `choose` asks for, keyed ("popular", beta) and ("similar", w, gamma): what
    its `popular_lists` and `similar_lists` callbacks look up."""
    rankings = {("popular", b): ranking(popularity_prior=b) for b in betas}
    for w in content_weights:
        for gamma in popularity_penalties:
            rankings["similar", w, gamma] = ranking(w, -gamma)
    return rankings


def merge(popular: np.ndarray, similar: np.ndarray, k: int, prior_slots: int) -> np.ndarray:
    """[Q, k] corpus indices: popular[:, :prior_slots], then `similar` minus those, then the rest
    of `popular`; -1 entries of either input are padding and skipped, -1 pads the output."""
    out = np.full((len(popular), k), -1, np.int64)
    for r in range(len(popular)):
        listed: list[int] = []
        seen: set[int] = set()
        for source in (popular[r, :prior_slots], similar[r], popular[r, prior_slots:]):
            for i in source:
                if len(listed) == k:
                    break
                if i >= 0 and i not in seen:
                    seen.add(int(i))
                    listed.append(int(i))
        out[r, : len(listed)] = listed
    return out


def objective_value(metrics: dict, references: dict | None, metric: str = "recall@50") -> tuple:
    """What blends are compared by, larger is better.

    "references" (given the reference recommenders' metrics on the same queries): first the
    worst ratio, over slices, of the blend's `metric` to the best reference's on that slice,
    capped at 1; then the mean over slices. A blend at least as good as every reference on every
    slice beats one that is not, and among those the better average wins.
    "slices" (references None): the mean over slices alone.
    """
    values = {s: metrics[s][metric] for s in SLICES if s in metrics}
    values = {s: v for s, v in values.items() if v == v}  # a slice without queries is NaN
    mean = float(np.mean(list(values.values()))) if values else float("nan")
    if references is None:
        return (mean,)
    ratios = []
    for s, v in values.items():
        best = max((r[s][metric] for r in references.values() if s in r), default=0.0)
        if best > 0:
            ratios.append(v / best)
    return (min(1.0, min(ratios, default=1.0)), mean)


def choose(
    popular_lists,
    similar_lists,
    evaluate_lists,
    k: int = 50,
    betas=DEFAULT_BETAS,
    content_weights=DEFAULT_CONTENT_WEIGHTS,
    prior_shares=DEFAULT_PRIOR_SHARES,
    popularity_penalties=DEFAULT_POPULARITY_PENALTIES,
    references: dict | None = None,
    metric: str = "recall@50",
) -> dict:
    """The blend of the grid with the best `objective_value` (ties: the simpler blend).

    Args:
      popular_lists: beta -> [Q, k] top-k of the popular ranking.
      similar_lists: (w, gamma) -> [Q, k] top-k of the similar ranking.
      evaluate_lists: [Q, k] lists -> metrics dict as `evaluation.evaluate` returns.
      references: name -> metrics of the reference recommenders on the same queries, or None
        for the "slices" objective.

    Returns: {"blend": {...}, "objective", "metric", "references", "grid": [{..., "value"}]}.
    """
    popular = {float(b): popular_lists(float(b)) for b in sorted(set(betas))}
    similar: dict[tuple[float, float], np.ndarray] = {}
    trials = []
    for share in sorted(set(float(s) for s in prior_shares), reverse=True):
        single = share >= 1.0  # the similar ranking's options do not matter
        weights = [0.0] if single else sorted(set(float(w) for w in content_weights))
        penalties = [0.0] if single else sorted(set(float(g) for g in popularity_penalties))
        for w in weights:
            for gamma in penalties:
                for beta, lists in popular.items():
                    blend = Blend(beta, w, share, gamma)
                    if not single:
                        if (w, gamma) not in similar:
                            similar[w, gamma] = similar_lists(w, gamma)
                        lists = merge(lists, similar[w, gamma], k, blend.prior_slots(k))
                    metrics = evaluate_lists(lists)
                    value = objective_value(metrics, references, metric)
                    trials.append({**dataclasses.asdict(blend), "value": value, "metrics": metrics})
    # Ties go to the simpler blend: the whole list popular, then no TF-IDF, no penalty, small beta.
    best = max(
        trials,
        key=lambda t: (
            t["value"],
            t["prior_share"],
            -t["content_weight"],
            -t["popularity_penalty"],
            -t["popularity_prior"],
        ),
    )
    return {
        "blend": {f.name: best[f.name] for f in dataclasses.fields(Blend)},
        "objective": "references" if references is not None else "slices",
        "metric": metric,
        "references": references,
        "grid": trials,
    }


def save(model_dir: str, choice: dict) -> None:
    atomic.write_json(os.path.join(model_dir, FILE), choice)


def load(model_dir: str) -> Blend:
    """The blend chosen on validation for this model; a model trained before blends existed gets
    its popularity prior alone (`popularity_prior.json`), and a model with neither plain cosine."""
    from ssl_retrieval import popularity  # noqa: PLC0415

    path = os.path.join(model_dir, FILE)
    if not os.path.exists(path):
        return Blend(popularity_prior=popularity.load_beta(model_dir))
    with open(path) as f:
        return Blend(**json.load(f)["blend"])


NAMES = ("popularity_prior", "content_weight", "prior_share", "popularity_penalty")


def resolve(
    model_dir: str,
    popularity_prior: str | float = "auto",
    content_weight: str | float = "auto",
    prior_share: str | float = "auto",
    popularity_penalty: str | float = "auto",
) -> Blend:
    """The model's chosen blend, with any of its numbers given instead of "auto"."""
    chosen = load(model_dir)
    given = (popularity_prior, content_weight, prior_share, popularity_penalty)
    values = {}
    for name, value in zip(NAMES, given, strict=True):
        if value == "auto":
            values[name] = getattr(chosen, name)
            continue
        try:
            values[name] = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"--{name} must be 'auto' or a number, got {value!r}") from None
    try:
        return Blend(**values)
    except ValueError as e:
        flags = "/".join(f"--{n}" for n in NAMES)
        raise ValueError(f"{flags}: {e}") from None
