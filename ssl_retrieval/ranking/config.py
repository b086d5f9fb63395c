"""The blend's options, without TensorFlow: how it is chosen (`BlendConfig`: `train` and
`python -m ssl_retrieval.blend`) and what evaluation and export override (`BlendOverrides`)."""

from __future__ import annotations

import dataclasses

from ssl_retrieval.cli import option

OBJECTIVES = ("references", "slices", "floor")
FUSION_LOSSES = ("pointwise", "listwise")
# The defaults were chosen on the validation splits of Debian, the linked source (links once and
# in both directions) and the synthetic one (docs/evaluation.md, "The blend of rankings"): a blend
# for the ten items a person reads and one for lists of 50, by the mean Recall@K over slices,
# the fused ranking among the candidates; the grid is the part of the former one (betas 0 to
# 0.12, six prior shares, five cold shares, three penalties) the choices fell in, so that with
# the fused ranking and the links slots added it stays at 645 blends (the former: 1,356
# without them), about a minute and a half per Debian model for both list sizes. Each fused
# ranking added since (`blend_choice.grid`: every fit in the popular slots of every blend)
# grew it: 1,290 with the factorisation's and the head-weighted fits, 1,548 with the query
# degree's (1 min 23 s for both list sizes on Debian). A content weight of 50 (TF-IDF first in
# the similar slots, the cosine breaking ties) makes it 2,052: where the model has hardly learned
# (`linked` at 1% of the pairs) validation Recall@50 rose 0.160-0.169 -> 0.203-0.209, elsewhere
# the objective was the same or up to 0.009 better (results/head_frontier, "TF-IDF first").
DEFAULT_KS = (10, 50)
DEFAULT_BETAS = (0.0, 0.03, 0.08, 0.12)
DEFAULT_CONTENT_WEIGHTS = (0.0, 1.0, 2.0, 50.0)
DEFAULT_POPULARITY_PENALTIES = (0.0, 0.05)
DEFAULT_PRIOR_SHARES = (1.0, 0.8, 0.6, 0.4)
DEFAULT_COLD_SHARES = (0.0, 0.1, 0.2, 0.3)
DEFAULT_COLD_CONTENT_WEIGHTS = (4.0,)
DEFAULT_LINKS_SHARES = (0.0, 0.2, 0.4)
DEFAULT_MARGIN = 0.02
DEFAULT_FLOOR = 0.2


@dataclasses.dataclass(frozen=True)
class BlendConfig:
    """How the blend (`ranking/blend.py`) is chosen on the validation split; each field is the
    flag of the same name (`python -m ssl_retrieval.blend --help`)."""

    choose_popularity_prior: bool = option(
        True,
        "After training (with --validate_every), choose on validation how lists are ranked "
        "(ranking/blend.py): the popular ranking's beta, the similar ranking's TF-IDF weight w "
        "and popularity penalty gamma, and the share of slots each ranking fills, for each list "
        "size of --blend_ks (blend.json; used by evaluate and export unless told otherwise).",
    )
    # Options added after runs were recorded carry the value that chooses as before they
    # existed (`neutral`): at that value they void no recorded blend (experimentation/keys.py).
    blend_ks: tuple[int, ...] = option(
        DEFAULT_KS,
        "List sizes a blend is chosen for, each on its own Recall@K; a request for k items "
        "takes the blend of the smallest of them >= k.",
        neutral=(50,),
    )
    blend_betas: tuple[float, ...] = option(
        DEFAULT_BETAS,
        "Grid of beta (the popular ranking's weight of log(1 + count)).",
        neutral=(0.0, 0.02, 0.03, 0.05, 0.08, 0.12),
    )
    blend_content_weights: tuple[float, ...] = option(
        DEFAULT_CONTENT_WEIGHTS, "Grid of w (TF-IDF weight of the similar ranking)."
    )
    blend_popularity_penalties: tuple[float, ...] = option(
        DEFAULT_POPULARITY_PENALTIES, "Grid of gamma (log-count penalty of the similar ranking)."
    )
    blend_prior_shares: tuple[float, ...] = option(
        DEFAULT_PRIOR_SHARES,
        "Grid of the share of slots from the popular ranking (1 = the popular ranking alone).",
    )
    blend_cold_shares: tuple[float, ...] = option(
        DEFAULT_COLD_SHARES,
        "Grid of the share of slots for items without training pairs (the cold ranking; 0 = "
        "no cold slots).",
    )
    blend_cold_content_weights: tuple[float, ...] = option(
        DEFAULT_COLD_CONTENT_WEIGHTS,
        "Grid of w_cold of the cold ranking cos + w_cold*tfidf.",
    )
    blend_links_shares: tuple[float, ...] = option(
        DEFAULT_LINKS_SHARES,
        "Grid of the share of slots, first in the list, for the query's own training links "
        "(either direction, by count; 0 = none).",
        neutral=(0.0,),
    )
    blend_fusion: bool = option(
        True,
        "Also try the popular slots from a fused ranking (ranking/fusion.py): one score over "
        "the cosine, TF-IDF, popularity, cold and link terms, its weights fit on the validation "
        "pairs, scored on queries it was not fit on.",
        neutral=False,
    )
    blend_two_hop: bool = option(
        True,
        "Also try a second fused ranking whose terms hold log(1 + the two-step paths q - x - c "
        "in the training links, i.e. co-occurrence); each list size takes whichever fused "
        "ranking does better (the export then counts a query's paths: a sparse product over "
        "the links). On by default: on validation it lifted the objective at K=10 by 0.018 on "
        "the linked source and by 0.001 to 0.006 on Debian and synthetic, level at K=50 "
        "(results/head_frontier).",
        neutral=False,
    )
    blend_item_knn: bool = option(
        True,
        "The second fused ranking (see --blend_two_hop) also weighs log(1 + the BM25 item-kNN's "
        "score of c for q): implicit's BM25Recommender on the training links, the itemknn "
        "peer's defaults (K=200, K1=1.2, B=0.75), with its products with the cosine and the "
        "log count. The export ships the kNN similarity (about K entries per item) and scores "
        "a query's profile against it. On by default: on validation (the campaign's models, "
        "the blend chosen again) it lifted the objective at K=10 by 0.025 on linked with links "
        "both ways, 0.013 on linked, 0.015 on Debian, and at K=50 by 0.015 on Debian; "
        "synthetic kept its blends (results/head_frontier).",
        neutral=False,
    )
    blend_als: bool = option(
        True,
        "Also try a third fused ranking that weighs, beside the second's terms, a "
        "factorisation's score of the training links U[q] . V[c] and its products with the "
        "cosine and the log count (ranking/factors.py: implicit's ALS at fixed parameters, fit "
        "when the blend is chosen, the factors kept beside blend.json and shipped by the "
        "export); each list size takes it only where it does better on validation. On by "
        "default with --blend_fusion_head_shares=1,2: on validation (the campaigns' models, the "
        "blend chosen again) the two lifted Debian's objective at K=50 on all 5 models (+0.005 "
        "+- 0.001) and were never below (results/head_frontier).",
        neutral=False,
    )
    blend_query_degree: bool = option(
        True,
        "Also try a fused ranking that weighs, beside the richest one's terms, their products "
        "with the query's own degree log(1 + its distinct training neighbours): how much the "
        "known links, the item-kNN and the factorisation count may then depend on how well the "
        "links know the query (a query that is no corpus item has degree 0). Each list size "
        "takes it only where it does better on validation. On by default: on validation (the "
        "same models, the blend chosen again) it lifted the objective at K=10 by 0.075 on "
        "linked with links both ways (all 0.55 -> 0.65, tail 0.49 -> 0.62), by 0.004 +- 0.005 "
        "on Debian (3 seeds) and 0.001 on linked; synthetic kept its blends "
        "(results/head_frontier).",
        neutral=False,
    )
    blend_als_factors: tuple[int, ...] = option(
        (128,),
        "Grid of the links' factorisation's number of factors (--blend_als): each is fit when "
        "the blend is chosen, and the one whose own ranking has the best mean Recall@K over "
        "the slices and --blend_ks on the validation queries is the fused ranking's term, as "
        "the als peer's tuning chooses. The export ships 2 x items x factors floats. One size "
        "by default: with 128,256 the factorisation alone was far better on validation where "
        "the als peer's tuning also chose 256 (linked both ways: 0.30 -> 0.45), but the "
        "blend's objective stayed level on Debian, linked and linked both ways "
        "(results/head_frontier).",
        neutral=(128,),
    )
    blend_fusion_head_shares: tuple[float, ...] = option(
        (1.0, 2.0),
        "Grid of the weight of the head's positives in each fused ranking's fit, the tail's and "
        "the cold items' being 1 (1: every slice alike, ranking/fusion.py). Each fused ranking "
        "is fit once per value and the blend's grid tries every fit, so a list size can take "
        "one that ranks popular answers higher in its fused slots while its cold and similar "
        "slots keep the rest (with 2, Debian's head at K=50 reached the tuned LightFM's on "
        "validation; results/head_frontier).",
        neutral=(1.0,),
    )
    blend_fusion_loss: str = option(
        "pointwise",
        "How each fused ranking's weights are fit on the validation pairs (ranking/fusion.py): "
        "pointwise = logistic regression over every (query, candidate) pair, each labelled on its "
        "own; listwise = a softmax over each query's candidates, so a weight is judged by how "
        "it orders one query's candidates and never by how one query's scores compare with "
        "another's (what a list is made of). Not the default: on validation (today's models, "
        "two seeds per dataset) listwise lifted the lists of ten at 100% of the pairs on every "
        "dataset (+0.001 to +0.007) and the lists of 50 on three of four, but left linked both "
        "ways' at -0.0002 and was level or mixed at 10% (synthetic's lists of 50 -0.004); "
        "results/head_frontier.",
        enum=FUSION_LOSSES,
        neutral="pointwise",
    )
    blend_objective: str = option(
        "slices",
        "How the blend is chosen on validation: slices = the best mean Recall@K over the "
        "all/head/tail/cold slices (every slice counts alike; no other recommender needed); "
        "references = first better than the best reference recommender (TopPopular, feature "
        "kNN, co-occurrence) by --blend_margin on every slice, then that mean; floor = first "
        "at least --blend_floor of the best Recall@K any blend of the grid reaches on each "
        "slice (no slice left with nothing), then that mean.",
        enum=OBJECTIVES,
    )
    blend_margin: float = option(
        DEFAULT_MARGIN,
        "How much better than every reference (a ratio: 0.02 = 2%) the references objective "
        "asks a blend to be on every slice of validation, because the best of a grid on a "
        "validation sample looks better there than on new data.",
    )

    blend_floor: float = option(
        DEFAULT_FLOOR,
        "The floor objective's share: a blend meets it when on every slice its validation "
        "Recall@K is at least this share of the best the grid's blends reach on that slice "
        "(0.2: a fifth of what the slice could have).",
        neutral=DEFAULT_FLOOR,
    )

    def validate(self) -> BlendConfig:
        grids = {
            "blend_betas": (self.blend_betas, 0, None),
            "blend_content_weights": (self.blend_content_weights, 0, None),
            "blend_popularity_penalties": (self.blend_popularity_penalties, 0, None),
            "blend_prior_shares": (self.blend_prior_shares, 0, 1),
            "blend_cold_shares": (self.blend_cold_shares, 0, 1),
            "blend_cold_content_weights": (self.blend_cold_content_weights, 0, None),
            "blend_links_shares": (self.blend_links_shares, 0, 1),
            "blend_fusion_head_shares": (self.blend_fusion_head_shares, 1e-6, None),
            "blend_als_factors": (self.blend_als_factors, 1, None),
        }
        for name, (values, low, high) in grids.items():
            bound = f"in [{low}, {high}]" if high is not None else f">= {low}"
            if not values or not all(low <= v and (high is None or v <= high) for v in values):
                raise ValueError(f"--{name} must be numbers {bound}, got {list(values)}")
        if not self.blend_ks or min(self.blend_ks) < 1:
            raise ValueError(f"--blend_ks must be list sizes >= 1, got {list(self.blend_ks)}")
        if self.blend_margin < 0:
            raise ValueError(f"--blend_margin must be >= 0, got {self.blend_margin}")
        if not 0 < self.blend_floor <= 1:
            raise ValueError(f"--blend_floor must be in (0, 1], got {self.blend_floor}")
        if self.blend_objective not in OBJECTIVES:
            raise ValueError(f"--blend_objective must be one of {list(OBJECTIVES)}")
        if self.blend_fusion_loss not in FUSION_LOSSES:
            raise ValueError(f"--blend_fusion_loss must be one of {list(FUSION_LOSSES)}")
        return self

    def options(self) -> dict:
        """The options as JSON values (in blend.json: a blend chosen with other options is
        chosen again)."""
        return {
            f.name: list(getattr(self, f.name))
            if isinstance(getattr(self, f.name), tuple)
            else getattr(self, f.name)
            for f in dataclasses.fields(self)
        }


_AUTO = "auto = the model's blend (chosen on validation); a number applies to every list size."


@dataclasses.dataclass(frozen=True)
class BlendOverrides:
    """Numbers of the model's blend given instead of the chosen ones ("auto"), for evaluation
    and export; each field is the flag of the same name."""

    popularity_prior: str | float = option(
        "auto", f"beta of the popular ranking cos + beta*log(1+training count). {_AUTO}"
    )
    content_weight: str | float = option(
        "auto", f"w of the similar ranking cos + w*tfidf - gamma*log(1+training count). {_AUTO}"
    )
    prior_share: str | float = option(
        "auto", f"Share of the list's slots from the popular ranking (1 = it alone). {_AUTO}"
    )
    popularity_penalty: str | float = option("auto", f"gamma of the similar ranking. {_AUTO}")
    cold_share: str | float = option(
        "auto", f"Share of the list's slots for items without training pairs. {_AUTO}"
    )
    cold_content_weight: str | float = option(
        "auto", f"w_cold of the cold ranking cos + w_cold*tfidf. {_AUTO}"
    )
    links_share: str | float = option(
        "auto", f"Share of the list's slots, first, for the query's known links. {_AUTO}"
    )
    fusion: str = option(
        "auto",
        "The popular slots from the fused ranking the blend was chosen with (auto), or from "
        "cos + beta*log(1+training count) (off: with --popularity_prior=0 --prior_share=1, the "
        "model's cosine alone).",
        enum=("auto", "off"),
    )

    def given(self) -> dict:
        return dataclasses.asdict(self)
