r"""Evaluates a trained model (or a reference recommender) over the whole corpus.

  python -m ssl_retrieval.evaluate --data_dir=runs/debian/data --model_dir=runs/debian/models/cfm
  python -m ssl_retrieval.evaluate --data_dir=runs/debian/data --recommender=top_popular \
      --output=runs/debian/reference/top_popular.json

For every eval query (or, with --max_queries, a fixed random sample of them: large corpora),
the top K items from the whole corpus (exact; the query item itself excluded), ranked the way
the model's export serves them: the blend of popularity prior, cosine and TF-IDF chosen on
validation at the end of training (ranking/blend.py); Recall@K, MAP@K and per-pair recall, overall
and on the head, tail and cold slices. Writes metrics JSON (default <model_dir>/metrics.json,
with how many eval queries were evaluated) and prints a table.
"""

from absl import app

from ssl_retrieval import cli
from ssl_retrieval.evaluation.config import EvaluateConfig
from ssl_retrieval.ranking.config import BlendOverrides

# One flag per EvaluateConfig field, and the blend's numbers (model only, ranking/blend.py:
# "auto" = the model's) from BlendOverrides.
FLAGS = cli.define_flags(EvaluateConfig, required=("data_dir",))
BLEND_FLAGS = cli.define_flags(BlendOverrides)


def _evaluate() -> str:
    config = cli.from_flags(EvaluateConfig, FLAGS).validate()
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
    )
    return evaluator.report(out)


main = cli.main(_evaluate)

if __name__ == "__main__":
    app.run(main)
