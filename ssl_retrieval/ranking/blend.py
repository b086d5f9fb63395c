"""One list of neighbours from up to four rankings: the linked, popular, cold and similar ones.

The rankings (`scores.py`): *popular* cos + beta * log(1 + n_c) finds the hubs most held-out
links of a power-law graph point to, and pushes down every item with few or no training pairs;
*similar* cos + w * tfidf - gamma * log(1 + n_c) finds look-alikes a little down the tail; *cold*
cos + w_cold * tfidf over the items without a single training pair, which only their features
can find; *linked* the query's own training neighbours (either direction) by link count.

A list of k takes its first round(links_share * k) slots from the linked ranking, the next
round(prior_share * k) from the popular ranking, the next round(cold_share * k) from the cold
ranking, and fills the rest from the similar ranking (then from further down the popular one),
each item once, where it first comes (`merge.py`). prior_share = 1 is the popular ranking alone,
and with beta = 0 as well, plain cosine: the model as trained.

Why slots and not one score: the rankings disagree by design (a cold item has no count, so no
boost; a linked item is a known answer whatever its cosine), and one weighted sum can only trade
the head for the cold slice along one curve. What each part bought on validation is in
docs (the recipe page) and `evaluation/blend_choice.py`.

**One blend per list size.** A person reads the first ten; a list of 50 serves other needs. So
a blend is chosen on validation for each K of `--blend_ks` (10 and 50 by default), and a request
for k items takes the blend chosen for the smallest K >= k (the largest K's above it): `Blends`.
The numbers are written to `blend.json` in the model dir; evaluation and export read them from
there ("auto") or take them from flags (`config.BlendOverrides`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os

from ssl_retrieval import atomic
from ssl_retrieval.compat import tf
from ssl_retrieval.ranking import popularity
from ssl_retrieval.ranking import scores as scores_lib

FILE = "blend.json"
SLICES = ("all", "head", "tail", "cold")
# The rankings' names, in the order their slots come; "fused" takes the popular ranking's slots
# when the blend has fusion weights (the name is what `similar` and the API show as the source).
RANKINGS = ("linked", "popular", "fused", "cold", "similar")


def slots(share: float, k):
    """round(share * k), in float64 like Python's arithmetic, for an int or a scalar tensor k."""
    if isinstance(k, int):
        return int(math.floor(share * k + 0.5))
    scaled = tf.constant(share, tf.float64) * tf.cast(k, tf.float64)
    return tf.cast(tf.floor(scaled + 0.5), k.dtype)


@dataclasses.dataclass(frozen=True)
class Blend:
    popularity_prior: float = 0.0  # beta of the popular ranking
    content_weight: float = 0.0  # w of TF-IDF in the similar ranking
    prior_share: float = 1.0  # share of the list's slots from the popular ranking
    popularity_penalty: float = 0.0  # gamma of log(1 + count) taken off the similar ranking
    cold_share: float = 0.0  # share of the list's slots for items without training pairs
    cold_content_weight: float = 0.0  # w_cold of TF-IDF in the cold ranking
    links_share: float = 0.0  # share of the list's slots for the query's known links
    # The popular slots from a fused ranking (`fusion.py`: a weight per `scores.FEATURES`)
    # instead of cos + beta * log(1 + count); () = the prior's.
    fusion: tuple[float, ...] = ()

    def __post_init__(self):
        object.__setattr__(self, "fusion", _weights(self.fusion) if self.fusion else ())
        if self.fusion:
            if self.popularity_prior:
                raise ValueError("a fused blend has no popularity_prior (its weights hold it)")
        weights = (
            self.popularity_prior,
            self.content_weight,
            self.popularity_penalty,
            self.cold_content_weight,
        )
        if not all(w >= 0 for w in weights):
            raise ValueError(f"blend weights must be >= 0, got {self}")
        if not 0 <= self.links_share <= 1:
            raise ValueError(f"links_share must be in [0, 1], got {self.links_share}")
        if not 0 <= self.prior_share <= 1 - self.links_share + 1e-9:
            raise ValueError(
                f"prior_share must be in [0, 1 - links_share], got {self.prior_share} with "
                f"links_share {self.links_share}"
            )
        if not 0 <= self.cold_share <= 1 - self.prior_share - self.links_share + 1e-9:
            raise ValueError(
                f"cold_share must be in [0, 1 - prior_share - links_share], got {self.cold_share} "
                f"with prior_share {self.prior_share} and links_share {self.links_share}"
            )

    @property
    def single_ranking(self) -> bool:
        """True when the list is the popular ranking alone."""
        return self.prior_share >= 1.0

    @property
    def has_similar(self) -> bool:
        """Whether slots are left after the linked and popular ones (the similar ranking's)."""
        return self.links_share + self.prior_share < 1.0 - 1e-9

    @property
    def uses_content(self) -> bool:
        """True when a ranking of the blend has a TF-IDF term (the TF-IDF matrix is needed)."""
        return any(r.needs_content for r in self.rankings().values())

    @property
    def uses_links(self) -> bool:
        """True when a ranking of the blend reads the training links (the linked one, a fused
        one that weighs them)."""
        return any(r.needs_links for r in self.rankings().values())

    @property
    def uses_als(self) -> bool:
        """True when its fused ranking weighs the links' factorisation (`factors.py`)."""
        return any(r.needs_als for r in self.rankings().values())

    @property
    def uses_degree(self) -> bool:
        """True when its fused ranking weighs the query's degree in the links."""
        return any(r.needs_degree for r in self.rankings().values())

    def describe(self) -> str:
        """One short line for logs: each ranking's share of the list and its terms."""
        similar_share = 1.0 - self.links_share - self.prior_share - self.cold_share
        parts = []
        if self.links_share:
            parts.append(f"{self.links_share:.0%} linked")
        if self.fusion:
            ranking = scores_lib.fused(self.fusion)
            terms = [
                ("two-step paths", ranking.needs_paths),
                ("item-kNN", ranking.needs_knn),
                ("ALS", ranking.needs_als),
                ("the query's degree", ranking.needs_degree),
            ]
            named = ", ".join(name for name, used in terms if used)
            named = " and ".join(named.rsplit(", ", 1))
            also = f" with {named}" if named else ""
            parts.append(f"{self.prior_share:.0%} fused ({len(self.fusion)} weights{also})")
        else:
            prior = f" + {self.popularity_prior:g} log count" if self.popularity_prior else ""
            parts.append(f"{self.prior_share:.0%} popular (cos{prior})")
        if self.cold_share:
            parts.append(f"{self.cold_share:.0%} cold (cos + {self.cold_content_weight:g} tfidf)")
        if self.has_similar:
            terms = f" + {self.content_weight:g} tfidf" if self.content_weight else ""
            terms += f" - {self.popularity_penalty:g} log count" if self.popularity_penalty else ""
            parts.append(f"{similar_share:.0%} similar (cos{terms})")
        return ", ".join(parts)

    def rankings(self) -> dict[str, scores_lib.Ranking]:
        """The rankings this blend merges, by name (`RANKINGS`)."""
        out = {}
        if self.links_share:
            out["linked"] = scores_lib.linked()
        if self.fusion:
            out["fused"] = scores_lib.fused(self.fusion)
        else:
            out["popular"] = scores_lib.popular(self.popularity_prior)
        if self.cold_share:
            out["cold"] = scores_lib.cold(self.cold_content_weight)
        if self.has_similar:
            out["similar"] = scores_lib.similar(self.content_weight, self.popularity_penalty)
        return out

    def segments(self, k) -> list:
        """The `merge.Segment`s of a list of `k` (an int or a scalar tensor)."""
        minimum = min if isinstance(k, int) else tf.minimum
        linked = slots(self.links_share, k)
        prior = minimum(k - linked, slots(self.prior_share, k))
        first = "fused" if self.fusion else "popular"
        out = []
        if self.links_share:
            out.append(("linked", 0, linked))
        out.append((first, 0, prior))
        if self.cold_share:
            out.append(("cold", 0, minimum(k - linked - prior, slots(self.cold_share, k))))
        if self.has_similar:
            out.append(("similar", 0, None))
        out.append((first, prior, None))
        return out


@dataclasses.dataclass(frozen=True)
class Blends:
    """The blend chosen for each list size K: a request for k items takes the blend of the
    smallest K >= k, and above the largest K, the largest's."""

    by_k: tuple[tuple[int, Blend], ...]

    def __post_init__(self):
        ks = [k for k, _ in self.by_k]
        if not ks or ks != sorted(set(ks)) or ks[0] < 1:
            raise ValueError(f"blends need distinct list sizes >= 1 in order, got {ks}")

    @classmethod
    def single(cls, blend: Blend, k: int = 50) -> Blends:
        return cls(((k, blend),))

    @property
    def ks(self) -> list[int]:
        return [k for k, _ in self.by_k]

    def for_k(self, k: int) -> Blend:
        for size, blend in self.by_k:
            if k <= size:
                return blend
        return self.by_k[-1][1]

    def __iter__(self):
        return iter(self.by_k)

    def to_json(self) -> dict:
        return {str(k): to_json(b) for k, b in self.by_k}

    @classmethod
    def from_json(cls, values: dict) -> Blends:
        return cls(tuple(sorted((int(k), Blend(**b)) for k, b in values.items())))

    def describe(self) -> str:
        """One short line for logs: "lists of 10: ...; of 50: ..." (`Blend.describe`)."""
        return "; ".join(f"lists of {k}: {b.describe()}" for k, b in self.by_k)

    @property
    def uses_content(self) -> bool:
        return any(b.uses_content for _, b in self.by_k)

    @property
    def uses_links(self) -> bool:
        return any(b.uses_links for _, b in self.by_k)

    @property
    def uses_als(self) -> bool:
        return any(b.uses_als for _, b in self.by_k)


def save(model_dir: str, choice: dict) -> None:
    atomic.write_json(os.path.join(model_dir, FILE), choice)


def load(model_dir: str) -> Blends:
    """The blends chosen on validation for this model. Older model dirs: one blend for every k
    (`"blend"` in blend.json), or the popularity prior alone (`popularity_prior.json`), or,
    with neither, plain cosine."""
    path = os.path.join(model_dir, FILE)
    if not os.path.exists(path):
        return Blends.single(Blend(popularity_prior=popularity.load_beta(model_dir)))
    with open(path) as f:
        chosen = json.load(f)
    if "blends" in chosen:
        return Blends.from_json(chosen["blends"])
    return Blends.single(Blend(**chosen["blend"]))


def _weights(values) -> tuple[float, ...]:
    """A fusion's weights from a tuple, a list, or blend.json's {feature: weight}."""
    if isinstance(values, dict):
        unknown = set(values) - set(scores_lib.FEATURES)
        if unknown:
            raise ValueError(f"fusion: unknown features {sorted(unknown)}")
        values = [values.get(f, 0.0) for f in scores_lib.FEATURES]
    return tuple(float(v) for v in values)


def to_json(blend: Blend) -> dict:
    """`blend` as blend.json holds it: its numbers, a fusion as {feature: weight}."""
    out = dataclasses.asdict(blend)
    out["fusion"] = (
        dict(zip(scores_lib.FEATURES, blend.fusion, strict=True)) if blend.fusion else {}
    )
    return out


NAMES = tuple(f.name for f in dataclasses.fields(Blend) if f.name != "fusion")


def resolve(model_dir: str, **given: str | float) -> Blends:
    """The model's chosen blends (`load`), with any of their numbers (`NAMES`) given instead of
    "auto": a number given applies to the blend of every list size."""
    unknown = set(given) - set(NAMES) - {"fusion"}
    if unknown:
        raise TypeError(f"not numbers of a blend: {sorted(unknown)}")
    numbers = {}
    for name, value in given.items():
        if value == "auto":
            continue
        if name == "fusion":
            if value != "off":
                raise ValueError(f"--fusion must be 'auto' or 'off', got {value!r}")
            numbers["fusion"] = ()
            continue
        try:
            numbers[name] = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"--{name} must be 'auto' or a number, got {value!r}") from None
    chosen = load(model_dir)
    try:
        return Blends(tuple((k, dataclasses.replace(b, **numbers)) for k, b in chosen))
    except ValueError as e:
        flags = "/".join(f"--{n}" for n in NAMES)
        raise ValueError(f"{flags}: {e}") from None
