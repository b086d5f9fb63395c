"""Evaluation the way the paper does it: top K from the whole corpus, Recall@K and MAP@K.

`evaluate(data_dir, scorer, ...)` runs any recommender (a `topk.Scorer`) over the eval
pairs of a data dir; `model_retriever(model_dir)` makes the lists of a trained model by embedding
the whole corpus with both towers (an eval query is a corpus item, so its query embedding is the
query tower on its features) and ranking under the model's blends (`ranking/blend.py`), and
`evaluate_lists` scores such lists. `python -m ssl_retrieval.evaluate` is the
CLI.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable, Sequence

import numpy as np

from ssl_retrieval import atomic
from ssl_retrieval.data import corpus_ids, pair_indices
from ssl_retrieval.data_dir import DataDir
from ssl_retrieval.evaluation import metrics as metrics_lib
from ssl_retrieval.evaluation import references
from ssl_retrieval.model.two_tower import embed_corpus
from ssl_retrieval.ranking import blend as blend_lib
from ssl_retrieval.ranking import factors, links, popularity, retrieve, tfidf, topk


@dataclasses.dataclass
class EvalData:
    """Everything evaluation needs from a data dir, as corpus indices.

    Attributes:
      item_ids: [N] corpus ids in items-* file order (the corpus index).
      eval_query, eval_candidate: [P] corpus indices of the eval pairs.
      train_query, train_candidate: [T] corpus indices of the training pairs.
      head, cold: [N] bool slice membership (stats/head_items.txt, stats/cold_items.txt).
    """

    item_ids: np.ndarray
    eval_query: np.ndarray
    eval_candidate: np.ndarray
    train_query: np.ndarray
    train_candidate: np.ndarray
    head: np.ndarray
    cold: np.ndarray

    @property
    def num_items(self) -> int:
        return len(self.item_ids)


def load_eval_data(data_dir, split: str = "eval") -> EvalData:
    """Reads corpus ids, the pairs of `split` and the training pairs (ids only), and slices.

    `split` is "eval" (the test split: report on it) or "validation" (choose on it). The cold
    slice is the split's candidates never seen as training candidates.
    """
    data_dir = DataDir.of(data_dir)
    schema = data_dir.schema
    ids = corpus_ids(data_dir, schema)
    item_ids = np.array(ids, dtype=object)
    index = {item_id: i for i, item_id in enumerate(ids)}
    eval_query, eval_candidate = pair_indices(data_dir, split, ids)
    train_query, train_candidate = pair_indices(data_dir, "train", ids)

    def membership(name):
        member = np.zeros(len(ids), bool)
        for item_id in data_dir.slice_ids(name):
            if item_id in index:
                member[index[item_id]] = True
        return member

    if split == "eval":
        cold = membership("cold_items")
    else:
        cold = np.ones(len(ids), bool)
        cold[train_candidate] = False
    return EvalData(
        item_ids=item_ids,
        eval_query=eval_query,
        eval_candidate=eval_candidate,
        train_query=train_query,
        train_candidate=train_candidate,
        head=membership("head_items"),
        cold=cold,
    )


def sample_queries(data: EvalData, num_queries: int, seed: int = 0) -> EvalData:
    """The same data with the eval pairs of at most `num_queries` random queries (fixed seed)."""
    queries = np.unique(data.eval_query)
    if len(queries) <= num_queries:
        return data
    chosen = np.random.default_rng(seed).choice(queries, num_queries, replace=False)
    keep = np.isin(data.eval_query, chosen)
    return dataclasses.replace(
        data, eval_query=data.eval_query[keep], eval_candidate=data.eval_candidate[keep]
    )


def resolve_popularity_prior(model_dir: str, popularity_prior: str | float) -> float:
    """beta: "auto" = the one chosen on validation for this model (0 if none), else a number.
    With a blend per list size, the beta of the largest one's."""
    blends = blend_lib.resolve(model_dir, popularity_prior=popularity_prior)
    return blends.by_k[-1][1].popularity_prior


Retriever = retrieve.Retriever


def corpus_of(data_dir, data: EvalData, query_embeddings, item_embeddings) -> retrieve.Corpus:
    """The terms of a model's rankings over the corpus of `data` (TF-IDF and links are added
    by whoever needs them: `model_retriever`, `blend_choice.choose`)."""
    log_counts = popularity.log_counts(data_dir, data.item_ids)
    return retrieve.Corpus(query_embeddings, item_embeddings, log_counts)


def training_links(data: EvalData):
    """[N, N] training link counts, either direction (the linked ranking)."""
    return links.matrix(data.train_query, data.train_candidate, data.num_items)


def model_retriever(
    model_dir: str,
    data_dir: str | None = None,
    blends: blend_lib.Blends | None = None,
    data: EvalData | None = None,
) -> Retriever:
    """The trained model's lists under `blends` (default: the ones chosen for it on validation).
    `data`: the evaluation data (its training pairs give the linked ranking's links)."""
    from ssl_retrieval.model import two_tower as model_lib  # noqa: PLC0415

    blends = blends or blend_lib.load(model_dir)
    model = model_lib.load_from_model_dir(model_dir, data_dir)
    data_dir = DataDir.of(data_dir or model.config.data_dir)
    data = data or load_eval_data(data_dir)
    query_embeddings, item_embeddings = embed_corpus(model, data_dir)
    corpus = corpus_of(data_dir, data, query_embeddings, item_embeddings)
    if blends.uses_content:
        corpus.content = tfidf.build(data_dir).matrix
    if blends.uses_links:
        corpus.links = training_links(data)
    if blends.uses_als:
        corpus.als = factors.load(model_dir)  # the ones the blend's weights were fit with
    logging.info("evaluate: %s", blends.describe())
    return retrieve.retriever(corpus, blends)


def train_positives(data: EvalData, queries: np.ndarray) -> list[np.ndarray]:
    """Per query (corpus index), its training candidates."""
    order = np.argsort(data.train_query, kind="stable")
    sorted_q = data.train_query[order]
    lo = np.searchsorted(sorted_q, queries, "left")
    hi = np.searchsorted(sorted_q, queries, "right")
    return [data.train_candidate[order[a:b]] for a, b in zip(lo, hi, strict=True)]


def evaluate(
    data: EvalData,
    scorer: topk.Scorer,
    ks: Sequence[int] = (10, 50),
    exclude_train_positives: bool = False,
    query_batch: int = 1024,
    corpus_chunk: int = 32768,
) -> dict:
    """Metrics of `scorer` on the eval pairs: {"all", "head", "tail", "cold"} (see metrics.py)."""

    def retrieve(queries, ks, exclude):
        lists = topk.top_k(
            scorer,
            queries,
            data.num_items,
            max(ks),
            exclude=exclude,
            query_batch=query_batch,
            corpus_chunk=corpus_chunk,
        )[0]
        return {k: lists[:, :k] for k in ks}

    return evaluate_lists(data, retrieve, ks, exclude_train_positives)


def evaluate_lists(
    data: EvalData, retrieve: Retriever, ks: Sequence[int] = (10, 50), exclude_train_positives=False
) -> dict:
    """Metrics of the lists `retrieve` returns for the eval queries (see metrics.py); the
    metrics at K are those of the list asked for with K (a blend's top 10 is not the first 10
    of its top 50)."""
    queries = np.unique(data.eval_query)
    exclude = train_positives(data, queries) if exclude_train_positives else None
    lists = retrieve(queries, sorted(set(ks)), exclude)
    score = list_scorer(data)
    out: dict[str, dict] = {}
    for k in sorted(set(ks)):
        for name, metrics in score(lists[k], [k]).items():
            out.setdefault(name, {}).update(metrics)
    return out


def list_scorer(data: EvalData) -> Callable[[np.ndarray, Sequence[int]], dict]:
    """(lists [Q, K] of the eval queries in sorted order, ks) -> metrics by slice, with the eval
    pairs prepared once: for scoring many lists of the same queries (choosing a blend)."""
    queries, query_of_pair = np.unique(data.eval_query, return_inverse=True)
    slices = {"head": data.head, "tail": ~data.head, "cold": data.cold}
    relevance = metrics_lib.Relevance(len(queries), query_of_pair, data.eval_candidate, slices)
    return relevance.compute


def format_table(results: dict, ks: Sequence[int]) -> str:
    """A plain-text table: one row per slice, Recall@K and MAP@K columns."""
    columns = (
        [f"recall@{k}" for k in ks] + [f"map@{k}" for k in ks] + [f"pair_recall@{k}" for k in ks]
    )
    lines = [f"{'slice':<6} {'queries':>8} " + " ".join(f"{c:>15}" for c in columns)]
    for name, m in results.items():
        cells = " ".join(f"{m[c]:>15.4f}" for c in columns)
        lines.append(f"{name:<6} {m['num_queries']:>8} {cells}")
    return "\n".join(lines)


def report(out: dict) -> str:
    """What `python -m ssl_retrieval.evaluate` prints of `run`'s result: the table, then what was
    evaluated on which queries, how long it took and where the metrics went."""
    q = out["queries"]
    sample = (
        f"a fixed random sample of {q['evaluated']} of {q['of']} eval queries (seed {q['seed']})"
        if q["sampled"]
        else f"all {q['evaluated']} eval queries"
    )
    line = f"evaluate: {out['recommender']} on {sample} in {out['seconds']}s -> {out['output']}"
    return f"{format_table(out['metrics'], out['ks'])}\n{line}"


def slice_table(named: dict[str, dict], column: str = "recall@50") -> str:
    """A plain-text table of `column` per slice, one row per recommender.

    Args:
      named: {name: metrics as written by `run` (the "metrics" object)}.
    """
    slices = ("all", "head", "tail", "cold")
    lines = [f"{column + ' per query':<28}" + "".join(f"{s:>8}" for s in slices)]
    for name, metrics in named.items():
        cells = "".join(f"{metrics[s][column]:>8.3f}" for s in slices)
        lines.append(f"{name:<28}{cells}")
    return "\n".join(lines)


write_json = atomic.write_json
QUERY_SAMPLE_SEED = 0  # --max_queries: the same sample on every run, as validation's


def run(
    data_dir: str,
    recommender: str = "model",
    model_dir: str | None = None,
    ks: Sequence[int] = (10, 50),
    exclude_train_positives: bool = False,
    output: str | None = None,
    split: str = "eval",
    max_queries: int = 0,
    blend: dict | None = None,
    make_scorer: Callable | None = None,
) -> dict:
    """Evaluates one recommender and writes its metrics JSON; returns the written object.

    `max_queries` > 0: only the eval pairs of that many queries, a fixed random sample
    (`sample_queries`, seed 0), so that a large corpus is evaluated in bounded time; the
    written object says how many of how many ("queries"). `blend`: numbers of the model's blend
    given instead of the chosen ones ({name: number or "auto"}, `blend.resolve`).
    `make_scorer`: (data, data dir) -> (scorer, {key: value} written beside the metrics), for a
    recommender that is not one of references.py's (a peer, tuned on validation: peers.make).
    """
    if max_queries < 0:
        raise ValueError(f"--max_queries must be >= 0 (0 = all), got {max_queries}")
    start = time.time()
    source = DataDir.of(data_dir)  # read once, passed down
    data = load_eval_data(source, split)
    total_queries = len(np.unique(data.eval_query))
    if max_queries:
        data = sample_queries(data, max_queries, seed=QUERY_SAMPLE_SEED)
    evaluated = len(np.unique(data.eval_query))
    chosen, extra = None, {}
    if recommender == "model":
        if not model_dir:
            raise ValueError("--model_dir is required for --recommender=model")
        chosen = blend_lib.resolve(model_dir, **(blend or {}))
        retrieve_lists = model_retriever(model_dir, source, chosen, data)
    elif make_scorer is not None:
        scorer, extra = make_scorer(data, source)
    else:
        scorer = references.make(recommender, data, source)
    logging.info(
        "evaluate: %s on %d eval pairs, %d items", recommender, len(data.eval_query), data.num_items
    )
    if chosen is None:
        results = evaluate(data, scorer, ks, exclude_train_positives)
    else:
        results = evaluate_lists(data, retrieve_lists, ks, exclude_train_positives)
    out = {
        "recommender": recommender,
        "model_dir": model_dir,
        "data_dir": data_dir,
        "ks": list(ks),
        "exclude_train_positives": exclude_train_positives,
        "split": split,
        "popularity_prior": chosen.by_k[-1][1].popularity_prior if chosen else None,
        "blend": dataclasses.asdict(chosen.by_k[-1][1]) if chosen else None,
        "blends": chosen.to_json() if chosen else None,
        "metrics": results,
        "queries": {
            "evaluated": evaluated,
            "of": total_queries,
            "sampled": evaluated < total_queries,
            "seed": QUERY_SAMPLE_SEED if evaluated < total_queries else None,
        },
        "seconds": round(time.time() - start, 2),
        **extra,
    }
    if output is None:
        if model_dir is None:
            raise ValueError("--output is required when there is no --model_dir")
        name = "metrics.json" if split == "eval" else f"metrics_{split}.json"
        output = os.path.join(model_dir, name)
    write_json(output, out)
    out["output"] = output
    return out
