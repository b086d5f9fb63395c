r"""Evaluates a trained model (or a reference recommender) over the whole corpus.

  python -m ssl_retrieval.evaluate --data_dir=runs/debian/data --model_dir=runs/debian/models/cfm
  python -m ssl_retrieval.evaluate --data_dir=runs/debian/data --recommender=top_popular \
      --output=runs/debian/reference/top_popular.json
  python -m ssl_retrieval.evaluate --data_dir=runs/debian/data --recommender=lightfm \
      --output=runs/debian/reference/lightfm.json

A reference is one of the project's own (top_popular, feature_knn, cooccurrence: references.py)
or a peer, an established library (links, als, itemknn, lightfm: peers.py) tuned on the
validation split first unless --peer_params gives its parameters; the chosen parameters and
the grid's validation values are written beside the metrics ("peer").

For every eval query (or, with --max_queries, a fixed random sample of them: large corpora),
the top K items from the whole corpus (exact; the query item itself excluded), ranked the way
the model's export serves them: the blend of popularity prior, cosine and TF-IDF chosen on
validation at the end of training (ranking/blend.py); Recall@K, MAP@K and per-pair recall, overall
and on the head, tail and cold slices. Writes metrics JSON (default <model_dir>/metrics.json,
with how many eval queries were evaluated) and prints a table.
"""

import json

from absl import app, flags

from ssl_retrieval import cli
from ssl_retrieval.evaluation import peers
from ssl_retrieval.ranking.config import BlendOverrides

DATA_DIR = flags.DEFINE_string("data_dir", None, "Preprocessed data dir.")
MODEL_DIR = flags.DEFINE_string("model_dir", None, "Trained model dir (for --recommender=model).")
RECOMMENDER = flags.DEFINE_enum(
    "recommender",
    "model",
    ["model", *peers.RECOMMENDERS],
    "What to evaluate: the trained model, or a reference recommender (references.py) or peer "
    "(peers.py: an established library, tuned on validation).",
)
KS = flags.DEFINE_list("ks", ["10", "50"], "Cut-offs K for Recall@K and MAP@K.")
EXCLUDE_TRAIN = flags.DEFINE_bool(
    "exclude_train_positives",
    False,
    "Filtered setting: leave each query's training candidates out of its ranking.",
)
SPLIT = flags.DEFINE_enum(
    "split",
    "eval",
    ["eval", "validation"],
    "Pairs to evaluate on: eval (the test split, to report) or validation (to choose on).",
)
# The blend's numbers (model only, ranking/blend.py): "auto" = the model's.
BLEND_FLAGS = cli.define_flags(BlendOverrides)
MAX_QUERIES = flags.DEFINE_integer(
    "max_queries",
    0,
    "Evaluate only the pairs of this many eval queries, a fixed random sample (seed 0); 0 = "
    "all. For large corpora: each query is scored against every item.",
)
OUTPUT = flags.DEFINE_string(
    "output", None, "Metrics JSON path (default <model_dir>/metrics.json)."
)
PEER = cli.define_flags(peers.PeerOptions)

flags.mark_flag_as_required("data_dir")


def _peer(name: str):
    """(data, data dir) -> (scorer, record) of the peer `name` (None for any other recommender),
    from the --peer_* flags."""
    options = cli.from_flags(peers.PeerOptions, PEER)
    if name not in peers.PEERS:
        for flag in ("peer_params", "peer_grid"):
            if getattr(options, flag):
                raise ValueError(f"--{flag} is for the peers {list(peers.PEERS)}, not {name}")
        return None
    return lambda data, data_dir: peers.make(name, data, data_dir, options)


def _peer_line(peer: dict) -> str:
    """What a peer was evaluated with: its parameters, and how they were chosen."""
    how = "tuned on validation" if peer["tuned"] else "given by --peer_params"
    line = f"{peer['name']}: {json.dumps(peer['params'], sort_keys=True)} ({how})"
    if tuning := peer["tuning"]:
        line += (
            f", validation {tuning['best_value']:.4f} (mean Recall@{tuning['ks']} of "
            f"{tuning['queries']['evaluated']} queries), {len(tuning['points'])} grid points "
            f"in {tuning['seconds']}s"
        )
    return line


def _evaluate() -> str:
    ks = [int(k) for k in KS.value]
    if not ks or min(ks) < 1:
        raise ValueError(f"--ks must be positive integers, got {KS.value}")
    make_scorer = _peer(RECOMMENDER.value)  # flag errors before TensorFlow loads
    from ssl_retrieval.evaluation import evaluator  # noqa: PLC0415  (imports TensorFlow)

    out = evaluator.run(
        DATA_DIR.value,
        recommender=RECOMMENDER.value,
        model_dir=MODEL_DIR.value,
        ks=ks,
        exclude_train_positives=EXCLUDE_TRAIN.value,
        output=OUTPUT.value,
        split=SPLIT.value,
        max_queries=MAX_QUERIES.value,
        blend=cli.from_flags(BlendOverrides, BLEND_FLAGS).given(),
        make_scorer=make_scorer,
    )
    table = evaluator.format_table(out["metrics"], ks)
    q = out["queries"]
    sample = (
        f"a fixed random sample of {q['evaluated']} of {q['of']} eval queries (seed {q['seed']})"
        if q["sampled"]
        else f"all {q['evaluated']} eval queries"
    )
    if out.get("peer"):
        table += "\n" + _peer_line(out["peer"])
    return (
        f"{table}\nevaluate: {out['recommender']} on {sample} in {out['seconds']}s "
        f"-> {out['output']}"
    )


main = cli.main(_evaluate)

if __name__ == "__main__":
    app.run(main)
