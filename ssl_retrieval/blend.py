r"""Chooses a trained model's blend on its validation split, as training does at its end.

  python -m ssl_retrieval.blend --model_dir=runs/debian/models/recipe
  python -m ssl_retrieval.blend --model_dir=... --blend_objective=slices --blend_ks=10,20,50

The blend says how a list is ranked at retrieval (ranking/blend.py): the popular ranking's beta,
the similar ranking's TF-IDF weight and popularity penalty, and the share of slots each ranking
fills, one blend per list size. Writes <model_dir>/blend.json (what evaluate and export read)
and prints the chosen blends with their validation Recall@K by slice.
"""

from absl import app

from ssl_retrieval import cli
from ssl_retrieval.evaluation.config import BlendChoiceConfig
from ssl_retrieval.ranking.config import BlendConfig

FLAGS = cli.define_flags(BlendChoiceConfig, required=("model_dir",))
BLEND_FLAGS = cli.define_flags(BlendConfig)


def _blend() -> str:
    which = cli.from_flags(BlendChoiceConfig, FLAGS)
    config = cli.from_flags(BlendConfig, BLEND_FLAGS).validate()
    from ssl_retrieval.evaluation import blend_choice  # noqa: PLC0415  (imports TensorFlow)

    choice = blend_choice.run(which.model_dir, config, which.data_dir)
    lines = []
    for k, chosen in choice["choices"].items():
        metrics = chosen["metrics"]
        slices = " ".join(f"{s} {metrics[s][chosen['metric']]:.3f}" for s in metrics)
        lines.append(f"lists of {k}: {chosen['blend']}\n  validation {chosen['metric']}: {slices}")
    lines.append(f"blend: -> {which.model_dir}/blend.json")
    return "\n".join(lines)


main = cli.main(_blend)

if __name__ == "__main__":
    app.run(main)
