"""What more terms, or other slice weights, would give the fused ranking (issue 31 item 4: the
head at Recall@50). Validation only: the 2,000 queries the blend is chosen on, one trained model.

The fused ranking (`ranking/fusion.py`) is a logistic regression over 15 terms of (query, item),
fit on the validation candidates of a few rankings. Here it is refit, out of fold as the blend
does, over the same candidate pool and re-ranked within it (the pool holds the fused ranking's
top 50 almost always: the first line checks it against the model's chosen blend), with:

  base            the shipped terms and slice weights (head, tail, cold positives 1 : 1 : 1)
  +query terms    the query's own log training count and link degree, and their products
                  with the item's log count, cosine and TF-IDF (a popular query's answers are
                  more often popular)
  +two-hop        log(1 + paths q - x - c in the training links), alone, times the log count,
                  the cosine, and normalised by the item's degree (co-occurrence)
  weights 2:1:1   the head's positives weighed twice (and 3:1:1 three times)
  +ALS            (with --als_params, the tuned ALS peer's parameters as JSON) the ALS peer's
                  score U[q] . V[c] of the pair (`evaluation/peers.py`, fitted here on the
                  training links), alone and times the cosine and the item's log count; its own
                  top 100 join the candidate pool (issue 31 item 4: what a factorisation adds)
  +item-kNN       (with --knn) the BM25 item-kNN peer's score of the pair
                  (`evaluation/peers.py`: (e_q + links[q]) S, S implicit's BM25 similarity of
                  the training links, K=200, K1=1.2, B=0.75), log(1 + score), alone, squared and
                  times the cosine and the item's log count; its own top 100 join the candidate pool (so every variant is
                  ranked within the same, larger pool)

Prints one JSON line per variant: Recall@10 and Recall@50 per query on all / head / tail / cold
and their mean (the blend's objective).

  .venv/bin/python scripts/fused_terms.py runs/debian/experiments_recipe/1.0/recipe/seed1
"""

import argparse
import json
import os
import sys

import numpy as np
import scipy.sparse as sp

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ssl_retrieval import config as train_config_lib  # noqa: E402
from ssl_retrieval.data_dir import DataDir  # noqa: E402
from ssl_retrieval.evaluation import blend_choice, evaluator, peers  # noqa: E402
from ssl_retrieval.ranking import fusion, retrieve, scores, tfidf, topk  # noqa: E402
from ssl_retrieval.ranking import links as links_lib  # noqa: E402

SLICES = ("all", "head", "tail", "cold")


class Pool:
    """The validation queries' candidate pairs, their labels and terms."""

    def __init__(self, model_dir: str, knn: bool = False, als_params: dict | None = None):
        from ssl_retrieval.model import two_tower as model_lib  # noqa: PLC0415

        train_config = train_config_lib.load(model_dir)
        data_dir = DataDir.of(train_config.data_dir)
        self.data = blend_choice.validation_sample(data_dir, train_config.validation_queries)
        model = model_lib.load_from_model_dir(model_dir, data_dir)
        corpus = evaluator.corpus_of(data_dir, self.data, *model_lib.embed_corpus(model, data_dir))
        corpus.content = tfidf.build(data_dir).matrix
        corpus.links = evaluator.training_links(self.data)
        self.queries = np.unique(self.data.eval_query)
        rankings = list(fusion.CANDIDATES.values())
        ranked = retrieve.scorer(corpus, {r: r for r in rankings}, tfidf.product(corpus.content))
        found = topk.top_k_many(ranked, self.queries, corpus.num_items, fusion.FIT_DEPTH)
        lists = np.concatenate([found[r][0] for r in rankings], axis=1)
        self.knn_scores = self.knn_lists = None
        if knn:
            # The peer's scores (`links.knn_scores`, the product's term before its log).
            self.knn_scores = links_lib.knn_scores(
                corpus.links, corpus.item_knn(), self.queries
            ).tolil()
            self.knn_scores[np.arange(len(self.queries)), self.queries] = 0  # never an answer
            self.knn_scores = self.knn_scores.tocsr()
            self.knn_scores.eliminate_zeros()
            self.knn_lists = _top_rows(self.knn_scores, fusion.FIT_DEPTH)
            lists = np.concatenate([lists, self.knn_lists], axis=1)
        self.als_scorer = self.als_lists = None
        if als_params:
            context = peers.Context(data_dir, seed=0, num_threads=2)
            ((_, self.als_scorer),) = list(peers.fits("als", self.data, [als_params], context))
            self.als_lists = topk.top_k(
                self.als_scorer, self.queries, corpus.num_items, fusion.FIT_DEPTH
            )[0]
            lists = np.concatenate([lists, self.als_lists], axis=1)
        self.pair_query, self.pair_item = fusion.candidate_pairs(lists, self.queries)
        # The shipped terms without the link graph's (`two_hop_terms` and `knn_terms` add them).
        without = fusion.pair_features(corpus, self.pair_query, self.pair_item, paths=False)
        self.base = without[:, self.BASE]
        relevant = set(
            zip(self.data.eval_query.tolist(), self.data.eval_candidate.tolist(), strict=True)
        )
        self.labels = np.array(
            [
                p in relevant
                for p in zip(self.pair_query.tolist(), self.pair_item.tolist(), strict=True)
            ]
        )
        row_of = {q: i for i, q in enumerate(self.queries)}
        self.row = np.array([row_of[q] for q in self.pair_query.tolist()])
        self.fold = fusion.folds(self.queries)[self.row]
        self.corpus = corpus
        self.score = evaluator.list_scorer(self.data)

    # The fused ranking's terms before the link graph's (the paths, the item-kNN).
    BASE = [i for i, f in enumerate(scores.FEATURES) if f not in scores.PATHS | scores.KNN]

    def term(self, name: str) -> np.ndarray:
        return self.base[:, self.BASE.index(scores.FEATURES.index(name))]

    def query_terms(self) -> np.ndarray:
        links = sp.csr_matrix(self.corpus.links)
        degree = np.log1p(np.asarray(links.sum(axis=1)).ravel())[self.pair_query]
        count = np.asarray(self.corpus.log_counts)[self.pair_query]
        products = [q * self.term(t) for q in (degree, count) for t in ("logn", "cos", "tfidf")]
        return np.stack([degree, count, degree * self.term("cold"), *products], axis=1)

    def two_hop_terms(self) -> np.ndarray:
        linked = sp.csr_matrix(self.corpus.links).astype(np.float32)
        linked.data[:] = 1.0
        paths = sp.csr_matrix(linked[self.queries] @ linked)
        count = np.asarray(paths[self.row, self.pair_item]).ravel()
        degree = np.asarray(linked.sum(axis=0)).ravel()[self.pair_item]
        log_paths, normalised = np.log1p(count), np.log1p(count / np.sqrt(1.0 + degree))
        cos = self.term("cos")
        return np.stack(
            [
                log_paths,
                log_paths * self.term("logn"),
                log_paths * cos,
                normalised,
                normalised * cos,
            ],
            axis=1,
        )

    def knn_terms(self) -> np.ndarray:
        score = np.log1p(np.asarray(self.knn_scores[self.row, self.pair_item]).ravel())
        return np.stack(
            [score, score * self.term("cos"), score * self.term("logn"), score**2], axis=1
        )

    def als_terms(self) -> np.ndarray:
        score = np.zeros(len(self.pair_query), np.float32)
        for start in range(0, len(self.queries), 256):
            rows = np.flatnonzero((self.row >= start) & (self.row < start + 256))
            dense = self.als_scorer(self.queries[start : start + 256], 0, self.corpus.num_items)
            score[rows] = dense[self.row[rows] - start, self.pair_item[rows]]
        return np.stack([score, score * self.term("cos"), score * self.term("logn")], axis=1)

    def alone(self, lists: np.ndarray) -> dict:
        """Recall@10 and @50 per slice of one ranking's own lists ([Q, >= 50], sorted queries)."""
        out = {}
        for k in (10, 50):
            metrics = self.score(lists[:, :k], (k,))
            out[f"recall@{k}"] = {s: round(metrics[s][f"recall@{k}"], 4) for s in SLICES}
        return out

    def evaluate(self, features: np.ndarray, slice_weights=(1.0, 1.0, 1.0)) -> dict:
        """Recall@10 and @50 per slice of the fused ranking fit out of fold on `features`."""
        from sklearn.linear_model import LogisticRegression  # noqa: PLC0415

        fused = np.zeros(len(self.labels))
        head, cold = self.data.head[self.pair_item], self.data.cold[self.pair_item]
        for fold in range(int(self.fold.max()) + 1):
            fit = self.fold != fold
            weights = fusion.sample_weights(self.labels[fit], head[fit], cold[fit], slice_weights)
            mean, scale = features[fit].mean(0), features[fit].std(0)
            scale = np.where(scale > 0, scale, 1.0)
            model = LogisticRegression(C=1.0, max_iter=3000)
            model.fit((features[fit] - mean) / scale, self.labels[fit], sample_weight=weights)
            fused[~fit] = model.decision_function((features[~fit] - mean) / scale)
        lists = self._lists(fused, 50)
        out = {}
        for k in (10, 50):
            metrics = self.score(lists[:, :k], (k,))
            values = [round(metrics[s][f"recall@{k}"], 4) for s in SLICES]
            out[f"recall@{k}"] = dict(zip(SLICES, values, strict=True))
            out[f"recall@{k}"]["mean"] = round(float(np.mean(values)), 4)
        return out

    def _lists(self, pair_scores: np.ndarray, k: int) -> np.ndarray:
        """[Q, k] each query's pool items by score (rows in sorted query order)."""
        order = np.lexsort((-pair_scores, self.row))
        rows, items = self.row[order], self.pair_item[order]
        out = np.full((len(self.queries), k), -1, np.int64)
        starts = np.searchsorted(rows, np.arange(len(self.queries)))
        ends = np.searchsorted(rows, np.arange(len(self.queries)), side="right")
        for row, (start, end) in enumerate(zip(starts, ends, strict=True)):
            top = items[start:end][:k]
            out[row, : len(top)] = top
        return out


def _top_rows(scores: sp.csr_matrix, k: int) -> np.ndarray:
    """[Q, k] each row's k best columns, -1 padding."""
    out = np.full((scores.shape[0], k), -1, np.int64)
    for row in range(scores.shape[0]):
        start, end = scores.indptr[row], scores.indptr[row + 1]
        columns, values = scores.indices[start:end], scores.data[start:end]
        best = columns[np.argsort(-values, kind="stable")[:k]]
        out[row, : len(best)] = best
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir", help="a trained model dir with its blend.json")
    parser.add_argument("--knn", action="store_true", help="also try the item-kNN term")
    parser.add_argument(
        "--als_params",
        type=json.loads,
        default=None,
        help="also try the ALS peer's score as a term, fitted with these parameters, e.g. "
        '\'{"factors": 128, "regularization": 10, "alpha": 100, "iterations": 15, '
        '"both_ways": true}\' (the tuned ones: reference/als.json beside the campaign); its '
        "variants replace --knn's",
    )
    args = parser.parse_args()
    pool = Pool(args.model_dir, knn=args.knn or bool(args.als_params), als_params=args.als_params)
    with open(os.path.join(args.model_dir, "blend.json")) as f:
        chosen = json.load(f)["choices"]
    common = {"model_dir": args.model_dir, "pairs": int(len(pool.labels))}
    for k in ("10", "50"):
        metrics = chosen[k]["metrics"]
        values = {s: round(metrics[s][f"recall@{k}"], 4) for s in SLICES}
        fused = bool(chosen[k]["blend"].get("fusion"))
        print(json.dumps({**common, "variant": f"chosen blend, K={k}", "fused": fused, **values}))
    if args.als_params:
        print(json.dumps({**common, "variant": "ALS alone", **pool.alone(pool.als_lists)}))
        shipped = np.hstack([pool.base, pool.two_hop_terms(), pool.knn_terms()])
        variants = {
            "+two-hop +item-kNN (shipped)": (shipped, (1, 1, 1)),
            "+two-hop +item-kNN +ALS": (np.hstack([shipped, pool.als_terms()]), (1, 1, 1)),
        }
    elif args.knn:
        alone = pool.alone(pool.knn_lists)
        print(json.dumps({**common, "variant": "item-kNN alone (its ties unbroken)", **alone}))
        paths = np.hstack([pool.base, pool.two_hop_terms()])
        variants = {
            "base": (pool.base, (1, 1, 1)),
            "+two-hop": (paths, (1, 1, 1)),
            "+item-kNN": (np.hstack([pool.base, pool.knn_terms()]), (1, 1, 1)),
            "+two-hop +item-kNN": (np.hstack([paths, pool.knn_terms()]), (1, 1, 1)),
        }
    else:
        two_hop, query = pool.two_hop_terms(), pool.query_terms()
        variants = {
            "base": (pool.base, (1, 1, 1)),
            "+query terms": (np.hstack([pool.base, query]), (1, 1, 1)),
            "+two-hop": (np.hstack([pool.base, two_hop]), (1, 1, 1)),
            "+query terms +two-hop": (np.hstack([pool.base, query, two_hop]), (1, 1, 1)),
            "weights 2:1:1": (pool.base, (2, 1, 1)),
            "weights 3:1:1": (pool.base, (3, 1, 1)),
        }
    for name, (features, weights) in variants.items():
        result = pool.evaluate(features, weights)
        print(json.dumps({**common, "variant": name, **result}), flush=True)


if __name__ == "__main__":
    main()
