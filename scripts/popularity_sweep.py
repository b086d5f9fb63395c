"""Validation Recall@50 by slice of a trained model with the popularity prior at several betas.

  .venv/bin/python scripts/popularity_sweep.py <model_dir> [data_dir] [betas, e.g. 0,0.02,0.05]

Scores are cos(q, c) + beta * log(1 + training count of c) (ssl_retrieval/ranking/popularity.py), on a
fixed sample of 4,000 validation queries. Prints one line per beta.
"""

import sys

from ssl_retrieval.evaluation import evaluator
from ssl_retrieval.model import two_tower as model_lib
from ssl_retrieval.ranking import popularity, topk

SLICES = ("all", "head", "tail", "cold")


def main(argv):
    model_dir = argv[1]
    data_dir = argv[2] if len(argv) > 2 else "runs/debian/data"
    betas = [float(b) for b in (argv[3] if len(argv) > 3 else "0,0.02,0.05,0.1").split(",")]
    data = evaluator.load_eval_data(data_dir, "validation")
    data = evaluator.sample_queries(data, 4000, seed=0)
    model = model_lib.load_from_model_dir(model_dir, data_dir)
    queries, items = evaluator.embed_corpus(model, data_dir)
    prior = popularity.log_counts(data_dir, data.item_ids)
    for beta in betas:
        scorer = topk.embedding_scorer(*popularity.augment(queries, items, prior, beta))
        metrics = evaluator.evaluate(data, scorer, ks=(10, 50))
        cells = " ".join(f"{s} {metrics[s]['recall@50']:.3f}" for s in SLICES)
        print(f"beta {beta:5.3f} {cells} recall@10 {metrics['all']['recall@10']:.3f}", flush=True)


if __name__ == "__main__":
    main(sys.argv)
