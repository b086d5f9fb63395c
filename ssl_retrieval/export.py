r"""Exports a trained model as a SavedModel with a ScaNN index: "items similar to X".

  python -m ssl_retrieval.export --model_dir=runs/debian/models/cfm --export_dir=runs/debian/export

Writes <export_dir>/<step>/ (TF Serving layout) with the signatures similar_items,
similar_items_by_features and item_embedding, and export_info.json with the index parameters,
its build time and its Recall@10 against brute force on a sample of corpus items. An index under
--min_recall is rebuilt searching twice the leaves and re-scoring twice the candidates until it
reaches it (--notune: keep the given parameters); a loud warning if it still does not.

The model's corpus is read from the data dir it was trained on (its config.json's) unless
--data_dir names another copy of the same data; a data dir with other vocabularies or counts is
refused in one line naming both (`config.model_data_dir`).
"""

from absl import app

from ssl_retrieval import cli
from ssl_retrieval.ranking.config import BlendOverrides
from ssl_retrieval.serving.config import ExportConfig, ScannParams

# One flag per ExportConfig field, per ScaNN parameter and per number of the blend, from the
# dataclasses.
FLAGS = cli.define_flags(ExportConfig, required=("model_dir", "export_dir"))
SCANN_FLAGS = cli.define_flags(ScannParams)
BLEND_FLAGS = cli.define_flags(BlendOverrides)
DONE = (
    "export: {num_items} items, {index} index, Recall@10 vs brute force "
    "{recall_at_10_vs_brute_force:.3f} -> {export_path}"
)


def _export() -> str:
    scann = cli.from_flags(ScannParams, SCANN_FLAGS)
    blend = cli.from_flags(BlendOverrides, BLEND_FLAGS)
    config = cli.from_flags(ExportConfig, FLAGS, scann=scann, blend=blend).validate()
    from ssl_retrieval.serving import exporter  # noqa: PLC0415  (imports TensorFlow)

    return DONE.format(**exporter.run(config))


main = cli.main(_export)

if __name__ == "__main__":
    app.run(main)
