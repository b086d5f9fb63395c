"""One list of neighbours from three rankings: the popular, the cold and the similar one.

The popular ranking is cos(q, c) + beta * log(1 + n_c) (`popularity.py`): it finds the hubs
that most held-out links of a power-law graph point to, and it pushes down every item with few
or no training pairs, so the tail and cold items a user asks "more like this" for fall out of
the list. The similar ranking is cos(q, c) + w * tfidf(q, c) - gamma * log(1 + n_c): the model's
cosine plus the TF-IDF cosine of the two items' feature values (`tfidf.py`), with a little
popularity taken off so that its half of the list looks further down the tail.

A list of k takes its first round(prior_share * k) slots from the popular ranking, the next
round(cold_share * k) from the cold ranking (below), and fills the rest from the similar
ranking, skipping items already listed (and, if the similar ranking runs out, from further down
the popular one). prior_share = 1 is the popular ranking alone, and with
beta = 0 too, plain cosine: the model as trained.

Why slots and not one score: the two scores disagree about cold items by design (no count, no
boost), and a single weighted sum can only trade the head for the cold slice along one curve. On
the Debian validation split (recipe model, seed 0, 2,000 queries, Recall@50 all / head / tail /
cold) the prior alone at its best beta (0.05) gave 0.741 / 0.802 / 0.551 / 0.509; 60% of the
slots from the popular ranking at beta 0.08 and the rest from cos + 2 tfidf - 0.02 log count
gave 0.741 / 0.795 / 0.564 / 0.602 (without the TF-IDF term, cold 0.578). No prior-only ranking
met every reference recommender on every slice; 63 of the 276 grid points did.

Cold slots: the next round(cold_share * k) slots go to items without a single training pair,
ranked by cos + w_cold * tfidf among those items alone (the cold ranking). The similar ranking
mostly lists items with some pairs, because the model has learned those; an item nobody has
linked yet is the one a long-tail catalogue is full of, and only its features can find it. On
the validation splits (recipe model, seed 0, 2,000 queries, Recall@50 all / head / tail / cold;
a grid of 3 betas, 6 prior shares, 2 x 2 similar rankings, cold w 4) the best blend without cold
slots that beat every reference by 2% on every slice gave, at
Debian fraction 0.1, 0.575 / 0.644 / 0.455 / 0.523 and with 15 of 50 cold slots
0.597 / 0.684 / 0.456 / 0.522; on the synthetic source no blend without cold slots met the
references (cold at most 0.78 of the feature kNN), and 20 cold slots gave 0.596 / 0.882 /
0.177 / 0.168 against the references' best 0.499 / 0.743 / 0.160 / 0.153.

The six numbers (beta, w, prior_share, gamma, cold_share, w_cold) are chosen together on the
validation split at the end of training (`choose`), and written to `blend.json` in the model
dir; evaluation and export read them from there ("auto") or take them from flags.

The margin: the blend is the best of hundreds on 2,000 validation queries, so its validation
score is optimistic (at Debian 0.1 the chosen blend met the feature kNN's cold Recall@50 on
validation, 0.513 against 0.512, and fell short on test, 0.519 against 0.528 over 5 seeds).
The "references" objective therefore counts a blend as good enough only when it beats every
reference by `margin` (default 2%) on every slice. The 2% is a judgement, not a validation
result: it is about the size of that gap.
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
DEFAULT_COLD_SHARES = (0.0, 0.1, 0.2, 0.3, 0.4)
DEFAULT_COLD_CONTENT_WEIGHTS = (4.0,)
DEFAULT_MARGIN = 0.02
# The cold ranking's popularity weight: -COLD_PENALTY * log(1 + n) sinks every item with a
# training pair below every item without one (scores are at most 1 + w); `only_cold` then drops
# any that remain when the corpus has fewer cold items than the list is long.
COLD_PENALTY = 1e4


@dataclasses.dataclass(frozen=True)
class Blend:
    popularity_prior: float = 0.0  # beta of the popular ranking
    content_weight: float = 0.0  # w of TF-IDF in the similar ranking
    prior_share: float = 1.0  # share of the list's slots from the popular ranking
    popularity_penalty: float = 0.0  # gamma of log(1 + count) taken off the similar ranking
    cold_share: float = 0.0  # share of the list's slots for items without training pairs
    cold_content_weight: float = 0.0  # w_cold of TF-IDF in the cold ranking

    def __post_init__(self):
        weights = (
            self.popularity_prior,
            self.content_weight,
            self.popularity_penalty,
            self.cold_content_weight,
        )
        if not all(w >= 0 for w in weights):
            raise ValueError(f"blend weights must be >= 0, got {self}")
        if not 0 <= self.prior_share <= 1:
            raise ValueError(f"prior_share must be in [0, 1], got {self.prior_share}")
        if not 0 <= self.cold_share <= 1 - self.prior_share + 1e-9:
            raise ValueError(
                f"cold_share must be in [0, 1 - prior_share], got {self.cold_share} with "
                f"prior_share {self.prior_share}"
            )

    def prior_slots(self, k: int) -> int:
        return min(int(k), int(math.floor(self.prior_share * k + 0.5)))

    def cold_slots(self, k: int) -> int:
        """Slots after the popular ones for the cold ranking (0 without cold slots)."""
        return min(int(k) - self.prior_slots(k), int(math.floor(self.cold_share * k + 0.5)))

    @property
    def single_ranking(self) -> bool:
        """True when the list is the popular ranking alone (no similar ranking needed)."""
        return self.prior_share >= 1.0

    @property
    def uses_content(self) -> bool:
        """True when a ranking of the blend has a TF-IDF term (the TF-IDF matrix is needed)."""
        return bool(
            (not self.single_ranking and self.content_weight)
            or (self.cold_share and self.cold_content_weight)
        )

    def rankings(self) -> dict[str, tuple[float, float]]:
        """The rankings this blend merges: {"popular", "similar", "cold"} (see `ranking`); the
        cold ranking's lists need `only_cold`."""
        out = {"popular": ranking(popularity_prior=self.popularity_prior)}
        if not self.single_ranking:
            out["similar"] = ranking(self.content_weight, -self.popularity_penalty)
        if self.cold_share:
            out["cold"] = cold_ranking(self.cold_content_weight)
        return out

    def merge(self, lists: dict[str, np.ndarray], k: int) -> np.ndarray:
        """[Q, k] lists of this blend from the [Q, >= k] lists of its `rankings` (the cold ones
        already passed through `only_cold`)."""
        popular = lists["popular"]
        if self.single_ranking:
            return popular[:, :k]
        return merge(
            popular,
            lists["similar"],
            k,
            self.prior_slots(k),
            cold=lists.get("cold"),
            cold_slots=self.cold_slots(k),
        )


def ranking(content_weight: float = 0.0, popularity_prior: float = 0.0) -> tuple[float, float]:
    """(w, v) of the ranking cos(q, c) + w * tfidf(q, c) + v * log(1 + n_c), the form
    `evaluator.rankings_scorer` scores: the popular ranking is (0, beta), the similar
    (w, -gamma)."""
    return (float(content_weight), float(popularity_prior))


def cold_ranking(content_weight: float) -> tuple[float, float]:
    """(w, v) of the cold ranking: cos + w * tfidf, every item with a training pair sunk."""
    return ranking(content_weight, -COLD_PENALTY)


def only_cold(lists: np.ndarray, log_counts: np.ndarray) -> np.ndarray:
    """`lists` of the cold ranking with items that have training pairs replaced by -1."""
    counted = np.asarray(log_counts)[np.maximum(lists, 0)] > 0
    return np.where(counted | (lists < 0), -1, lists)


def grid_rankings(
    content_weights,
    popularity_penalties,
    betas=DEFAULT_BETAS,
    cold_content_weights=(),
) -> dict:
    """Every ranking `choose` asks for, keyed ("popular", beta), ("similar", w, gamma) and
    ("cold", w_cold): what its `popular_lists`, `similar_lists` and `cold_lists` look up."""
    rankings = {("popular", b): ranking(popularity_prior=b) for b in betas}
    for w in content_weights:
        for gamma in popularity_penalties:
            rankings["similar", w, gamma] = ranking(w, -gamma)
    for w in cold_content_weights:
        rankings["cold", w] = cold_ranking(w)
    return rankings


def merge(
    popular: np.ndarray,
    similar: np.ndarray,
    k: int,
    prior_slots: int,
    cold: np.ndarray | None = None,
    cold_slots: int = 0,
) -> np.ndarray:
    """[Q, k] corpus indices: popular[:, :prior_slots], then cold[:, :cold_slots], then `similar`,
    then the rest of `popular`, each item listed once (where it first comes); -1 entries of the
    inputs are padding and skipped, -1 pads the output."""
    sources = [popular[:, :prior_slots]]
    if cold is not None and cold_slots:
        sources.append(cold[:, :cold_slots])
    sources += [similar, popular[:, prior_slots:]]
    candidates = np.concatenate([np.asarray(s, np.int64) for s in sources], axis=1)
    # A stable sort keeps equal items in list order: all but the first of each run are repeats.
    order = np.argsort(candidates, axis=1, kind="stable")
    ordered = np.take_along_axis(candidates, order, axis=1)
    repeat_sorted = np.zeros_like(ordered, bool)
    repeat_sorted[:, 1:] = ordered[:, 1:] == ordered[:, :-1]
    repeat = np.empty_like(repeat_sorted)
    np.put_along_axis(repeat, order, repeat_sorted, axis=1)
    return _first_k_kept(candidates, ~repeat & (candidates >= 0), k)


def _first_k_kept(candidates: np.ndarray, keep: np.ndarray, k: int) -> np.ndarray:
    """[Q, k]: each row's first k `candidates` where `keep`, in order; -1 pads."""
    position = np.cumsum(keep, axis=1) - 1
    keep = keep & (position < k)
    out = np.full((len(candidates), k), -1, np.int64)
    rows, columns = np.nonzero(keep)
    out[rows, position[rows, columns]] = candidates[rows, columns]
    return out


class Merger:
    """`merge` of one (popular, similar, cold) triple for many slot counts, without a sort per
    call: choosing a blend merges each triple for every prior and cold share (over a thousand
    merges of the same lists), and `merge`'s sort was most of that.

    Where an item was first listed is found once, from where each list's items sit in the
    other lists; that needs each row of each list to name an item at most once (top-k lists
    do; -1 padding aside). Lists that do not are merged by `merge`.
    """

    def __init__(self, popular, similar, cold=None):
        self.popular = np.asarray(popular, np.int64)
        self.similar = np.asarray(similar, np.int64)
        self.cold = None if cold is None else np.asarray(cold, np.int64)
        lists = [self.popular, self.similar] + ([] if cold is None else [self.cold])
        self.exact = all(_rows_unique(x) for x in lists)
        if not self.exact:
            return
        # Position of each item in another list (that list's width where absent).
        self.similar_in_popular = _positions_in(self.similar, self.popular)
        self.popular_in_similar = _positions_in(self.popular, self.similar) < self.similar.shape[1]
        if self.cold is not None:
            self.similar_in_cold = _positions_in(self.similar, self.cold)
            self.cold_in_popular = _positions_in(self.cold, self.popular)
            self.popular_in_cold = _positions_in(self.popular, self.cold)

    def merge(self, k: int, prior_slots: int, cold_slots: int = 0) -> np.ndarray:
        """`merge(popular, similar, k, prior_slots, cold, cold_slots)`."""
        cold_slots = cold_slots if self.cold is not None else 0
        if not self.exact:
            return merge(self.popular, self.similar, k, prior_slots, self.cold, cold_slots)
        p, c = prior_slots, cold_slots
        head, tail = self.popular[:, :p], self.popular[:, p:]
        # An item is kept where it first comes: each list names it once, so it is a repeat
        # exactly when an earlier segment names it.
        sources = [head]
        keeps = [head >= 0]
        similar_keep = (self.similar >= 0) & (self.similar_in_popular >= p)
        tail_keep = (tail >= 0) & ~self.popular_in_similar[:, p:]
        if c:
            cold = self.cold[:, :c]
            sources.append(cold)
            keeps.append((cold >= 0) & (self.cold_in_popular[:, :c] >= p))
            similar_keep &= self.similar_in_cold >= c
            tail_keep &= self.popular_in_cold[:, p:] >= c
        sources += [self.similar, tail]
        keeps += [similar_keep, tail_keep]
        candidates = np.concatenate(sources, axis=1)
        return _first_k_kept(candidates, np.concatenate(keeps, axis=1), k)


def _rows_unique(lists: np.ndarray) -> bool:
    """Whether no row of `lists` names an item (>= 0) twice."""
    ordered = np.sort(lists, axis=1)
    return not ((ordered[:, 1:] == ordered[:, :-1]) & (ordered[:, 1:] >= 0)).any()


def _positions_in(items: np.ndarray, other: np.ndarray) -> np.ndarray:
    """[Q, A] position of each of `items` [Q, A] in the same row of `other` [Q, B] (B where
    absent; -1 entries are never found). Rows of `other` name each item once."""
    match = (items[:, :, None] == other[:, None, :]) & (items[:, :, None] >= 0)
    return np.where(match.any(axis=2), match.argmax(axis=2), other.shape[1])


def objective_value(
    metrics: dict, references: dict | None, metric: str = "recall@50", margin: float = 0.0
) -> tuple:
    """What blends are compared by, larger is better.

    "references" (given the reference recommenders' metrics on the same queries): first the
    worst ratio, over slices, of the blend's `metric` to the best reference's on that slice,
    capped at 1 + margin; then the mean over slices. A blend better than every reference by the
    margin on every slice beats one that is not, and among those the better average wins.
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
    return (min(1.0 + margin, min(ratios, default=1.0 + margin)), mean)


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
    cold_lists=None,
    cold_shares=(0.0,),
    cold_content_weights=DEFAULT_COLD_CONTENT_WEIGHTS,
    margin: float = 0.0,
) -> dict:
    """The blend of the grid with the best `objective_value` (ties: the simpler blend).

    Args:
      popular_lists: beta -> [Q, k] top-k of the popular ranking.
      similar_lists: (w, gamma) -> [Q, k] top-k of the similar ranking.
      evaluate_lists: [Q, k] lists -> metrics dict as `evaluation.evaluate` returns.
      references: name -> metrics of the reference recommenders on the same queries, or None
        for the "slices" objective.
      cold_lists: w_cold -> [Q, k] top-k of the cold ranking after `only_cold`; needed when
        `cold_shares` has a share above 0.
      margin: how much better than every reference the "references" objective asks for.

    Returns: {"blend": {...}, "objective", "metric", "margin", "references", "grid": [...]}.
    """
    popular = {float(b): popular_lists(float(b)) for b in sorted(set(betas))}
    similar: dict[tuple[float, float], np.ndarray] = {}
    cold: dict[float, np.ndarray] = {}
    blends = []  # the grid, in the order of "grid"
    for share in sorted(set(float(s) for s in prior_shares), reverse=True):
        single = share >= 1.0  # the similar ranking's options do not matter
        weights = [0.0] if single else sorted(set(float(w) for w in content_weights))
        penalties = [0.0] if single else sorted(set(float(g) for g in popularity_penalties))
        colds = [(0.0, 0.0)]
        if not single:
            colds += [
                (c, cw)
                for c in sorted(set(float(c) for c in cold_shares))
                for cw in sorted(set(float(w) for w in cold_content_weights))
                if 0 < c <= 1 - share + 1e-9
            ]
        for w in weights:
            for gamma in penalties:
                if not single and (w, gamma) not in similar:
                    similar[w, gamma] = similar_lists(w, gamma)
                for cold_share, cold_weight in colds:
                    if cold_share and cold_weight not in cold:
                        cold[cold_weight] = cold_lists(cold_weight)
                    for beta in popular:
                        blends.append(Blend(beta, w, share, gamma, cold_share, cold_weight))
    # Blends that merge the same lists are merged by one Merger (what their merges share is
    # found once), one Merger alive at a time.
    groups: dict[tuple | None, list[int]] = {}
    for i, blend in enumerate(blends):
        key = None
        if not blend.single_ranking:
            cold_weight = blend.cold_content_weight if blend.cold_share else None
            key = (blend.popularity_prior, blend.content_weight, blend.popularity_penalty)
            key += (cold_weight,)
        groups.setdefault(key, []).append(i)
    trials: list = [None] * len(blends)
    for key, members in groups.items():
        merger = None
        if key is not None:
            beta, w, gamma, cold_weight = key
            merger = Merger(
                popular[beta], similar[w, gamma], None if cold_weight is None else cold[cold_weight]
            )
        for i in members:
            blend = blends[i]
            if merger is None:
                merged = popular[blend.popularity_prior][:, :k]
            else:
                merged = merger.merge(k, blend.prior_slots(k), blend.cold_slots(k))
            metrics = evaluate_lists(merged)
            value = objective_value(metrics, references, metric, margin)
            trials[i] = {**dataclasses.asdict(blend), "value": value, "metrics": metrics}
    # Ties go to the simpler blend: the whole list popular, then no cold slots, no TF-IDF, no
    # penalty, small beta.
    best = max(
        trials,
        key=lambda t: (
            t["value"],
            t["prior_share"],
            -t["cold_share"],
            -t["content_weight"],
            -t["popularity_penalty"],
            -t["popularity_prior"],
            -t["cold_content_weight"],
        ),
    )
    return {
        "blend": {f.name: best[f.name] for f in dataclasses.fields(Blend)},
        "objective": "references" if references is not None else "slices",
        "metric": metric,
        "margin": margin if references is not None else None,
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


NAMES = tuple(f.name for f in dataclasses.fields(Blend))
# The flags of evaluate and export that set a blend's numbers ("auto" = the model's own).
FLAG_HELP = {
    "popularity_prior": "beta of the popular ranking cos + beta*log(1+training count) (the "
    "index's ranking in an export); auto = the model's blend (0 if none), 0 = pure cosine.",
    "content_weight": "w of the similar ranking cos + w*tfidf - gamma*log(1+training count); "
    "auto = the model's blend (0 if none).",
    "prior_share": "Share of the list's slots from the popular ranking; auto = the model's blend "
    "(1 if none), 1 = the popular ranking alone.",
    "popularity_penalty": "gamma of the similar ranking; auto = the model's blend (0 if none).",
    "cold_share": "Share of the list's slots for items without training pairs, from the cold "
    "ranking cos + w_cold*tfidf over them; auto = the model's blend (0 if none).",
    "cold_content_weight": "w_cold of the cold ranking; auto = the model's blend (0 if none).",
}


def resolve(model_dir: str, **given: str | float) -> Blend:
    """The model's chosen blend (`load`), with any of its numbers (`NAMES`) given instead of
    "auto"."""
    unknown = set(given) - set(NAMES)
    if unknown:
        raise TypeError(f"not numbers of a blend: {sorted(unknown)}")
    chosen = load(model_dir)
    values = {}
    for name in NAMES:
        value = given.get(name, "auto")
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
