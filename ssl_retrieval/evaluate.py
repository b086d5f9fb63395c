r"""Evaluates a trained model (or a reference recommender) over the whole corpus.

  python -m ssl_retrieval.evaluate --model_dir=runs/debian/models/cfm
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

The model is evaluated on the data dir it was trained on (its config.json's) unless --data_dir
names another copy of the same data; a data dir with other vocabularies or counts is refused in
one line naming both (`config.model_data_dir`).
"""

import json

from absl import app

from ssl_retrieval import cli
from ssl_retrieval.evaluation import peers
from ssl_retrieval.evaluation.config import EvaluateConfig
from ssl_retrieval.ranking.config import BlendOverrides

# One flag per field of EvaluateConfig, of the blend's numbers (model only, ranking/blend.py:
# "auto" = the model's) and of the peers' options (peers.PeerOptions).
FLAGS = cli.define_flags(EvaluateConfig)
BLEND_FLAGS = cli.define_flags(BlendOverrides)
PEER = cli.define_flags(peers.PeerOptions)


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
    config = cli.from_flags(EvaluateConfig, FLAGS).validate()
    make_scorer = _peer(config.recommender)  # flag errors before TensorFlow's work
    from ssl_retrieval.evaluation import evaluator  # noqa: PLC0415  (imports TensorFlow)

    out = evaluator.run(
        config.data_dir,
        recommender=config.recommender,
        model_dir=config.model_dir,
        ks=list(config.ks),
        exclude_train_positives=config.exclude_train_positives,
        output=config.output,
        split=config.split,
        max_queries=config.max_queries,
        blend=cli.from_flags(BlendOverrides, BLEND_FLAGS).given(),
        make_scorer=make_scorer,
    )
    text = evaluator.report(out)
    if out.get("peer"):
        text += "\n" + _peer_line(out["peer"])
    return text


main = cli.main(_evaluate)

if __name__ == "__main__":
    app.run(main)
