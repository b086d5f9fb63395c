"""Choosing a model's blend (`ranking/blend.py`) on the validation split, for each list size.

`choose(corpus, data, config)` ranks every ranking of the grid (`config.BlendConfig`) for the
validation queries in one pass over the corpus, merges them into every blend of the grid, and
keeps, for each list size K of `--blend_ks`, the blend with the best objective on Recall@K;
`run(model_dir, config)` does it for a trained model and writes `blend.json`: what
`python -m ssl_retrieval.blend` and the end of training call.

Objectives: "slices" is the mean Recall@K over the all, head, tail and cold slices;
"references" first asks every slice to beat the best reference recommender (TopPopular, the
feature kNN, co-occurrence) by `--blend_margin`, then the mean; "floor" first asks every slice
to reach `--blend_floor` of the best Recall@K any blend of the grid reaches on it (a mean can
buy the head with a slice's last points: on `synthetic` the tail and cold items get none of the
ten slots), then the mean. Ties go to the simpler blend.

Choosing merges the same lists for hundreds of slot counts: blends that merge the same rankings
share one `merge.Lists` (where each list's items sit in the others is found once), and blends
whose slots come out the same at K are scored once.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import os
from collections.abc import Sequence

import numpy as np

from ssl_retrieval import config as train_config_lib
from ssl_retrieval import progress_bar
from ssl_retrieval.data_dir import DataDir
from ssl_retrieval.evaluation import evaluator
from ssl_retrieval.evaluation import references as references_lib
from ssl_retrieval.ranking import blend as blend_lib
from ssl_retrieval.ranking import factors, fusion, merge, retrieve, scores, tfidf, topk
from ssl_retrieval.ranking.config import BlendConfig

SLICES = blend_lib.SLICES


def objective_value(
    metrics: dict,
    references: dict | None,
    metric: str = "recall@50",
    margin: float = 0.0,
    floors: dict | None = None,
) -> tuple:
    """What blends are compared by, larger is better.

    "references" (given the reference recommenders' metrics on the same queries): first the
    worst ratio, over slices, of the blend's `metric` to the best reference's on that slice,
    capped at 1 + margin; then the mean over slices. A blend better than every reference by the
    margin on every slice beats one that is not, and among those the better average wins.
    "floor" (given `floors`, {slice: the least it should reach}): first the worst ratio, over
    slices, of the blend's `metric` to its floor, capped at 1; then the mean.
    "slices" (neither): the mean over slices alone.
    """
    values = {s: metrics[s][metric] for s in SLICES if s in metrics}
    values = {s: v for s, v in values.items() if v == v}  # a slice without queries is NaN
    mean = float(np.mean(list(values.values()))) if values else float("nan")
    if floors is not None:
        ratios = [min(1.0, v / floors[s]) for s, v in values.items() if floors.get(s, 0) > 0]
        return (min(ratios, default=1.0), mean)
    if references is None:
        return (mean,)
    ratios = []
    for s, v in values.items():
        best = max((r[s][metric] for r in references.values() if s in r), default=0.0)
        if best > 0:
            ratios.append(v / best)
    return (min(1.0 + margin, min(ratios, default=1.0 + margin)), mean)


def grid(config: BlendConfig, fusions: Sequence[tuple[float, ...]] = ()) -> list[blend_lib.Blend]:
    """Every blend of the grid: shares that leave room for each other, and the similar
    ranking's weights only where it has slots; with `fusions` (weights of fused rankings), each
    slot split with the popular slots from each fused ranking as well as from each beta's
    prior."""
    sources = [{"popularity_prior": b} for b in sorted(set(config.blend_betas))]
    sources += [{"fusion": weights} for weights in fusions]
    out = []
    for links in sorted(set(config.blend_links_shares)):
        for share in sorted(set(config.blend_prior_shares), reverse=True):
            if share > 1 - links + 1e-9:
                continue
            single = links + share >= 1 - 1e-9  # the similar ranking's weights do not matter
            weights = [0.0] if single else sorted(set(config.blend_content_weights))
            penalties = [0.0] if single else sorted(set(config.blend_popularity_penalties))
            # The cold slots' numbers go together, as keywords of the blend like `sources`.
            colds = [{"cold_share": 0.0, "cold_content_weight": 0.0}]
            if not single:
                colds += [
                    {"cold_share": c, "cold_content_weight": cw}
                    for c in sorted(set(config.blend_cold_shares))
                    for cw in sorted(set(config.blend_cold_content_weights))
                    if 0 < c <= 1 - share - links + 1e-9
                ]
            for w, gamma, cold, source in itertools.product(weights, penalties, colds, sources):
                blend = blend_lib.Blend(
                    content_weight=w,
                    prior_share=share,
                    popularity_penalty=gamma,
                    links_share=links,
                    **cold,
                    **source,
                )
                out.append(blend)
    return out


def _link_terms(blend) -> bool:
    """Whether the blend's fused ranking weighs the link graph's terms (paths, item-kNN)."""
    ranking = scores.fused(blend.fusion) if blend.fusion else None
    return bool(ranking and (ranking.needs_paths or ranking.needs_knn))


def _simplicity(trial: dict) -> tuple:
    """Ties go to the simpler blend: no fused ranking (or one without the query's degree, then
    without the factorisation, then without the link graph's terms), no known links, the whole
    list popular, then no cold slots, no TF-IDF, no penalty, small beta."""
    return (
        not trial["fused"],
        not trial["degree_terms"],
        not trial["als_terms"],
        not trial["link_terms"],
        -trial["links_share"],
        trial["prior_share"],
        -trial["cold_share"],
        -trial["content_weight"],
        -trial["popularity_penalty"],
        -trial["popularity_prior"],
        -trial["cold_content_weight"],
    )


def choose_for_k(
    blends,
    top,
    score,
    k: int,
    references: dict | None,
    margin: float,
    bar=None,
    floor: float | None = None,
) -> dict:
    """The best of `blends` for lists of `k`.

    Args:
      blends: the grid (`grid`).
      top: Ranking -> [Q, L] top lists of the validation queries (L >= k).
      score: ([Q, k] lists, ks) -> metrics by slice (`evaluator.list_scorer`).
      references: the reference recommenders' metrics at k, or None ("slices").
      bar: a `progress_bar.Bar` advanced by one for each blend scored (optional).
      floor: the "floor" objective's share of each slice's best over the grid, or None.
    """
    metric = f"recall@{k}"
    trials: list = [None] * len(blends)
    groups: dict[tuple, list[int]] = {}
    for i, blend in enumerate(blends):
        groups.setdefault(tuple(sorted(blend.rankings().items())), []).append(i)
    for rankings, members in groups.items():
        lists = merge.Lists({name: top[ranking] for name, ranking in rankings})
        done: dict[tuple, dict] = {}  # blends whose slots come out the same at k
        for i in members:
            blend = blends[i]
            segments = blend.segments(k)
            key = tuple(segments)
            if key not in done:
                merged = lists.merge(segments, k).indices.numpy()
                done[key] = score(merged, (k,))
            numbers = {f: getattr(blend, f) for f in blend_lib.NAMES}
            trials[i] = {
                **numbers,
                "fused": bool(blend.fusion),
                "link_terms": _link_terms(blend),
                "als_terms": blend.uses_als,
                "degree_terms": blend.uses_degree,
                "metrics": done[key],
            }
            if bar is not None:
                bar.update(1)
    floors = None if floor is None else slice_floors([t["metrics"] for t in trials], metric, floor)
    for trial in trials:
        trial["value"] = objective_value(trial["metrics"], references, metric, margin, floors)
    best = max(range(len(trials)), key=lambda i: (trials[i]["value"], *_simplicity(trials[i])))
    return {
        "blend": blend_lib.to_json(blends[best]),
        "metric": metric,
        "value": trials[best]["value"],
        "metrics": trials[best]["metrics"],
        **({"floors": floors} if floors is not None else {}),
        "grid": trials,
    }


def slice_floors(grid_metrics: list[dict], metric: str, floor: float) -> dict:
    """{slice: `floor` times the best `metric` any blend of the grid reaches on it}."""
    best = {}
    for metrics in grid_metrics:
        for s in SLICES:
            value = metrics.get(s, {}).get(metric, float("nan"))
            if value == value:  # a slice without queries is NaN
                best[s] = max(best.get(s, 0.0), value)
    return {s: floor * v for s, v in best.items()}


def grid_rankings(blends) -> set[scores.Ranking]:
    return {r for b in blends for r in b.rankings().values()}


def choose(corpus: retrieve.Corpus, data, config: BlendConfig, data_dir) -> dict:
    """The blend of each list size of `config.blend_ks`, chosen on `data`'s (validation) pairs.

    Args:
      corpus: the model's rankings' terms (`retrieve.Corpus`; `content` and `links` are filled
        here when the grid or the references need them).
      data: `evaluator.EvalData` of the validation queries.
      data_dir: the data dir (the reference recommenders read it).

    Returns: what `blend.json` holds: {"blends": {K: blend}, "choices": {K: {...}}, "objective",
      "margin", "floor" (with the floor objective), "references": {K: metrics} or None, "options",
      "fusion" (its fit, or None)}.
    """
    config.validate()
    ks = sorted(set(config.blend_ks))
    rankings = grid_rankings(grid(config))
    als = config.blend_fusion and config.blend_als
    if config.blend_fusion:
        rankings |= set(fusion.CANDIDATES.values()) | ({fusion.ALS_CANDIDATE} if als else set())
    use_references = config.blend_objective == "references"
    if corpus.content is None and (use_references or any(r.needs_content for r in rankings)):
        corpus.content = tfidf.build(data_dir).matrix
    if corpus.links is None and (als or any(r.needs_links for r in rankings)):
        corpus.links = evaluator.training_links(data)
    score = evaluator.list_scorer(data)
    als_choice = None
    if als and corpus.als is None:
        corpus.als, als_choice = _fit_factors(corpus, data, data_dir, config, score)
    depth = max(max(ks), fusion.FIT_DEPTH if config.blend_fusion else 0)
    found = _rank(corpus, data, data_dir, rankings, use_references, depth)
    references = None
    if use_references:
        references = {
            k: {
                name: score(found[("reference", name)][0][:, :k], (k,))
                for name in references_lib.RECOMMENDERS
            }
            for k in ks
        }
    top = {r: found[r][0] for r in rankings}
    fusions, fit = [], None
    if config.blend_fusion:
        # With --blend_two_hop or --blend_item_knn, a second fused ranking that also weighs the
        # link graph's terms, and with --blend_als a third that weighs the links' factorisation
        # too: each list size takes whichever does better (at 10 the graph's terms helped on
        # the linked source and Debian, results/head_frontier).
        paths, knn = config.blend_two_hop, config.blend_item_knn
        degree = config.blend_query_degree
        queries = np.unique(data.eval_query)
        logging.info("blend: fitting the fused ranking on %d validation queries", len(queries))
        # With the factorisation its own top items join the candidates, but only its fit sees
        # them: the other fits are the ones chosen without it (`fusion.Pairs.base`).
        base_width = sum(top[r].shape[1] for r in fusion.CANDIDATES.values()) if als else None
        pairs = fusion.Pairs.of(
            corpus, data, _candidates(top, als), queries, paths, knn, als, base_width, degree
        )
        variants = _fused_variants(paths, knn, als, degree)
        fit = {"features": list(scores.FEATURES), "out_of_fold": True}
        fold_of = fusion.folds(queries)
        per_fold = {}  # fused ranking -> the weights of each fold's fit without its queries
        loss = config.blend_fusion_loss
        for head_share in sorted(set(config.blend_fusion_head_shares)):
            # Each variant once per weight of the head's positives (1: every slice alike).
            shares = (head_share, 1.0, 1.0)
            fits = fit  # {variant: weights}: the plain fits at the top, the others by share
            if head_share != 1:
                fits = fit.setdefault("head_shares", {}).setdefault(f"{head_share:g}", {})
            for name, terms in variants.items():
                weights = fusion.fit(pairs, *terms, shares=shares, loss=loss)
                per_fold[scores.fused(weights)] = fusion.fit_out_of_fold(
                    pairs, queries, fold_of, *terms, shares=shares, loss=loss
                )
                fusions.append(weights)
                fits[name] = list(weights)
        # Scored by lists of weights fit without each query's own pairs, all in one pass.
        top.update(_out_of_fold_lists(corpus, queries, fold_of, max(ks), per_fold))
        if als:
            fit["als"] = als_choice or dict(factors.PARAMS)
    blends = grid(config, fusions)
    logging.info("blend: %d blends for lists of %s", len(blends), ks)
    margin = config.blend_margin if use_references else None
    floor = config.blend_floor if config.blend_objective == "floor" else None
    with progress_bar.Bar("blend", len(blends) * len(ks), "blends") as bar:
        choices = {
            k: choose_for_k(
                blends, top, score, k, references and references[k], margin or 0.0, bar, floor
            )
            for k in ks
        }
    return {
        "blends": {str(k): c["blend"] for k, c in choices.items()},
        "objective": config.blend_objective,
        "margin": margin,
        **({"floor": floor} if floor is not None else {}),
        "references": None if references is None else {str(k): v for k, v in references.items()},
        "choices": {str(k): c for k, c in choices.items()},
        "options": config.options(),
        "fusion": fit,
    }


def _rank(corpus, data, data_dir, rankings, use_references: bool, depth: int) -> dict:
    """{ranking or ("reference", name): (top lists, scores)} of the validation queries, every
    ranking and reference recommender in one pass over the corpus."""
    product = tfidf.product(corpus.content) if corpus.content is not None else None
    ranked = retrieve.scorer(corpus, {r: r for r in rankings}, product)
    reference_scorers = {}
    if use_references:
        reference_scorers = {
            ("reference", name): references_lib.make(name, data, data_dir, corpus.content, product)
            for name in references_lib.RECOMMENDERS
        }

    def together(rows, start, stop):
        yield from ranked(rows, start, stop)
        for key, reference in reference_scorers.items():
            yield key, reference(rows, start, stop)

    logging.info(
        "blend: %d rankings and %d reference recommenders in one pass",
        len(rankings),
        len(reference_scorers),
    )
    return topk.top_k_many(together, np.unique(data.eval_query), corpus.num_items, depth)


def _fit_factors(corpus, data, data_dir, config: BlendConfig, score) -> tuple:
    """(factors, what was chosen) of the links' factorisation: fit at each size of
    `--blend_als_factors`, the one kept whose own ranking (its score alone) has the best mean
    over slices and list sizes of Recall@K on the validation queries, as the `als` peer's
    tuning chooses its parameters (with one size, no ranking is needed)."""
    ks, sizes = sorted(set(config.blend_ks)), sorted(set(config.blend_als_factors))
    values, best = {}, None  # best: (value, size, factors), the smaller size on a tie
    for size in sizes:
        params = {**factors.PARAMS, "factors": size}
        logging.info("blend: fitting the links' factorisation (%s)", params)
        corpus.als = factors.fit(corpus.links, **params)
        value = 0.0
        if len(sizes) > 1:
            top = _rank(corpus, data, data_dir, {fusion.ALS_CANDIDATE}, False, max(ks))
            lists = top[fusion.ALS_CANDIDATE][0]
            by_k = [objective_value(score(lists[:, :k], (k,)), None, f"recall@{k}") for k in ks]
            value = values[str(size)] = float(np.mean([v[0] for v in by_k]))
        if best is None or value > best[0]:
            best = (value, size, corpus.als)
    _, size, found = best
    if values:
        logging.info("blend: the factorisation's %d factors (validation: %s)", size, values)
    return found, {**factors.PARAMS, "factors": size, "objective_by_factors": values}


def _fused_variants(paths: bool, knn: bool, als: bool, degree: bool) -> dict:
    """{name in blend.json's "fusion": (two_hop, knn, als, degree) terms of `fusion.fit`}: the
    first fused ranking, with the link graph's terms the second, with the factorisation the
    third, and with `degree` one more: the last one's terms and their products with the
    query's degree."""
    variants = {"weights": (False, False, False, False)}
    if paths or knn:
        variants["weights_link_terms"] = (paths, knn, False, False)
    if als:
        variants["weights_als"] = (paths, knn, True, False)
    if degree:
        variants["weights_query_degree"] = (paths, knn, als, True)  # the last one's terms too
    return variants


def _candidates(top, als: bool = False) -> np.ndarray:
    """[Q, L * n] the fusion's candidate rankings' top lists side by side (with `als`, the
    factorisation's too)."""
    rankings = [*fusion.CANDIDATES.values()] + ([fusion.ALS_CANDIDATE] if als else [])
    return np.concatenate([top[r] for r in rankings], axis=1)


def _out_of_fold_lists(corpus, queries: np.ndarray, fold_of, k: int, per_fold: dict) -> dict:
    """{fused ranking: [Q, k] each validation query's list, ranked by the weights of its fold
    (`per_fold[ranking][fold]`, fit without that fold's queries)}: what the blend's choice
    scores a fused ranking by, so that its fit on these pairs does not flatter it. One pass
    over the corpus for every ranking and fold."""
    rankings = {
        (key, f): scores.fused(w)
        for key, weights in per_fold.items()
        for f, w in enumerate(weights)
    }
    found = retrieve.top_lists(corpus, rankings, queries, k)
    out = {}
    for key, weights in per_fold.items():
        out[key] = np.full((len(queries), k), -1, np.int64)
        for f in range(len(weights)):
            out[key][fold_of == f] = found[(key, f)][0][fold_of == f]
    return out


def is_stale(model_dir: str, config: BlendConfig) -> bool:
    """Whether the model's blend was chosen with other options (or never). An option added
    since it was chosen counts as the same when it is at its neutral value (the one that
    chooses as before it existed: `cli.option(neutral=...)`)."""
    path = os.path.join(model_dir, blend_lib.FILE)
    if not os.path.exists(path):
        return True
    with open(path) as f:
        chosen_with = json.load(f).get("options")
    if chosen_with is None:
        return True
    current = config.options()
    for field in dataclasses.fields(config):
        neutral = field.metadata.get("neutral", dataclasses.MISSING)
        if field.name not in chosen_with and neutral is not dataclasses.MISSING:
            value = list(neutral) if isinstance(neutral, tuple) else neutral
            chosen_with = {**chosen_with, field.name: value}
    return chosen_with != current


def run(model_dir: str, config: BlendConfig, data_dir: str | None = None) -> dict:
    """Chooses the blend of a trained model (its best checkpoint) on its validation sample and
    writes `<model_dir>/blend.json`; returns what it wrote."""
    from ssl_retrieval.model import two_tower as model_lib  # noqa: PLC0415  (TensorFlow and the towers)

    train_config = train_config_lib.load(model_dir)
    data_dir = DataDir.of(data_dir or train_config.data_dir)
    data = validation_sample(data_dir, train_config.validation_queries)
    model = model_lib.load_from_model_dir(model_dir, data_dir)
    queries, items = model_lib.embed_corpus(model, data_dir)
    corpus = evaluator.corpus_of(data_dir, data, queries, items)
    choice = choose(corpus, data, config, data_dir)
    save(model_dir, choice, corpus)
    return choice


def save(model_dir: str, choice: dict, corpus: retrieve.Corpus) -> None:
    """Writes `choice` (`choose`'s) as `blend.json`, and the links' factors beside it when a
    chosen blend weighs them (`factors.FILE`; removed when none does). The factors first: a
    blend.json that weighs them never stands without them."""
    if blend_lib.Blends.from_json(choice["blends"]).uses_als:
        factors.save(model_dir, corpus.als)
    else:
        factors.remove(model_dir)
    blend_lib.save(model_dir, choice)


def validation_sample(data_dir, num_queries: int) -> evaluator.EvalData:
    """The validation pairs of the fixed sample of queries that training validates on."""
    data = evaluator.load_eval_data(data_dir, "validation")
    return evaluator.sample_queries(data, num_queries, seed=0)
