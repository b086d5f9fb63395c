"""Benchmark of one validation during training (`Validator`, training/validation.py): embedding
the corpus and ranking it for the validation queries, as every early-stopping check does.

Prints JSON lines, measured in this run on the same model, data and queries:
  {"figure": "validation", "embedding": "whole_corpus", "seconds", "recall_at_50"}
      both towers over every item, read from the TFRecords at each validation (before)
  {"figure": "validation", "embedding": "queries_only", "seconds", "recall_at_50"}
      the item tower over every item, the query tower over the validation queries only, from
      corpus batches read once (what the Validator does)
  {"figure": "comparison", "speedup", "same_recall"}

Seconds are the median of --repeats validations after one warm-up (tracing). The model dir is a
trained run with two towers (the paper setup; shared towers embed once either way).

  .venv/bin/python bench/validation.py [--model_dir=runs/debian/protocol/0.1/baseline/seed0]
"""

import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ssl_retrieval import config as config_lib  # noqa: E402
from ssl_retrieval.compat import tf  # noqa: E402
from ssl_retrieval.model import two_tower as model_lib  # noqa: E402
from ssl_retrieval.training import validation  # noqa: E402


def emit(**fields):
    print(json.dumps(fields), flush=True)


def timed(validate, repeats):
    validate()  # traces the towers
    seconds, result = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        result = validate()
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds), result["all"]["recall@50"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model_dir", default="runs/debian/protocol/0.1/baseline/seed0")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    config = config_lib.load(args.model_dir)
    model = model_lib.load_from_model_dir(args.model_dir)
    validator = validation.Validator(config)
    functions = (
        tf.function(model.query_tower, reduce_retracing=True),
        tf.function(model.item_tower, reduce_retracing=True),
    )

    def whole_corpus():
        queries, items = model_lib.embed_corpus(model, config.data_dir, functions=functions)
        return validator.evaluate(queries, items)

    before, before_recall = timed(whole_corpus, args.repeats)
    emit(figure="validation", embedding="whole_corpus", seconds=before, recall_at_50=before_recall)
    after, after_recall = timed(lambda: validator(model), args.repeats)
    emit(figure="validation", embedding="queries_only", seconds=after, recall_at_50=after_recall)
    emit(
        figure="comparison",
        speedup=before / after,
        same_recall=abs(before_recall - after_recall) < 1e-6,
    )


if __name__ == "__main__":
    main()
