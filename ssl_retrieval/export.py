r"""Exports a trained model as a SavedModel with a ScaNN index: "items similar to X".

  python -m ssl_retrieval.export --model_dir=runs/debian/models/cfm --export_dir=runs/debian/export

Writes <export_dir>/<step>/ (TF Serving layout) with the signatures similar_items,
similar_items_by_features and item_embedding, and export_info.json with the index parameters,
its build time and its Recall@10 against brute force on a sample of corpus items. An index under
--min_recall is rebuilt searching twice the leaves and re-scoring twice the candidates until it
reaches it (--notune: keep the given parameters); a loud warning if it still does not.
"""

import logging
import sys

from absl import app, flags

DATA_DIR = flags.DEFINE_string("data_dir", None, "Data dir (default: the one in config.json).")
MODEL_DIR = flags.DEFINE_string("model_dir", None, "Trained model dir.")
EXPORT_DIR = flags.DEFINE_string("export_dir", None, "Where the numbered version goes.")
INDEX = flags.DEFINE_enum("index", "scann", ["scann", "brute_force"], "Nearest-neighbour index.")
K = flags.DEFINE_integer("k", 100, "Largest k a query may ask for.")
MIN_RECALL = flags.DEFINE_float(
    "min_recall",
    0.95,
    "Recall@10 against brute force the index must reach (tuned to it, or warned).",
)
TUNE = flags.DEFINE_bool(
    "tune", True, "Double ScaNN's leaves searched and --reorder until --min_recall is met."
)
RECALL_SAMPLE = flags.DEFINE_integer("recall_sample", 1000, "Corpus items used to measure recall.")
NUM_LEAVES = flags.DEFINE_integer("num_leaves", None, "ScaNN tree leaves (default ~sqrt(N)).")
LEAVES_TO_SEARCH = flags.DEFINE_integer(
    "num_leaves_to_search", None, "ScaNN leaves searched per query (default ~10% of leaves)."
)
THRESHOLD = flags.DEFINE_float(
    "anisotropic_quantization_threshold", 0.2, "ScaNN anisotropic quantisation threshold."
)
REORDER = flags.DEFINE_integer("reorder", 200, "ScaNN candidates re-scored exactly.")
OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace an existing version directory.")
POPULARITY_PRIOR = flags.DEFINE_string(
    "popularity_prior",
    "auto",
    "beta of the popularity prior cos + beta*log(1+training count) built into the index: auto = "
    "the one chosen on validation when the model was trained (0 if none), 0 = pure cosine.",
)
CONTENT_WEIGHT = flags.DEFINE_string(
    "content_weight",
    "auto",
    "w of the similar ranking cos + w*tfidf (blending.py); auto = the model's blend (0 if none).",
)
PRIOR_SHARE = flags.DEFINE_string(
    "prior_share",
    "auto",
    "Share of the list's slots from the popular ranking (the index), the rest from the exact "
    "similar ranking (blending.py); auto = the model's blend (1 if none).",
)

flags.mark_flags_as_required(["model_dir", "export_dir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.getLogger().setLevel(logging.INFO)
    try:
        from ssl_retrieval import exporting  # noqa: PLC0415  (imports TensorFlow)
        from ssl_retrieval import index as index_lib  # noqa: PLC0415

        info = exporting.run(
            exporting.ExportConfig(
                data_dir=DATA_DIR.value,
                model_dir=MODEL_DIR.value,
                export_dir=EXPORT_DIR.value,
                index=INDEX.value,
                k=K.value,
                min_recall=MIN_RECALL.value,
                tune=TUNE.value,
                recall_sample=RECALL_SAMPLE.value,
                scann=index_lib.ScannParams(
                    num_leaves=NUM_LEAVES.value,
                    num_leaves_to_search=LEAVES_TO_SEARCH.value,
                    anisotropic_quantization_threshold=THRESHOLD.value,
                    reorder=REORDER.value,
                ),
                overwrite=OVERWRITE.value,
                popularity_prior=POPULARITY_PRIOR.value,
                content_weight=CONTENT_WEIGHT.value,
                prior_share=PRIOR_SHARE.value,
            )
        )
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    print(
        f"export: {info['num_items']} items, {info['index']} index, Recall@10 vs brute force "
        f"{info['recall_at_10_vs_brute_force']:.3f} -> {info['export_path']}"
    )


if __name__ == "__main__":
    app.run(main)
