r"""Prints the neighbours of items from an export: the command-line face of `ssl_retrieval.load`.

  python -m ssl_retrieval.similar --export_dir=runs/demo/export --item_ids=vim,postgresql --k=10

Ids not in the corpus are reported and skipped (exit status 1 if none was found).
"""

import sys

from absl import app, flags

from ssl_retrieval import cli

EXPORT_DIR = flags.DEFINE_string("export_dir", None, "Export dir (newest version) or one version.")
ITEM_IDS = flags.DEFINE_list("item_ids", None, "Comma-separated corpus item ids.")
K = flags.DEFINE_integer("k", 10, "How many neighbours per item.")

flags.mark_flags_as_required(["export_dir", "item_ids"])


def _similar() -> None:
    from ssl_retrieval.serving import api  # noqa: PLC0415  (imports TensorFlow)

    model = api.load(EXPORT_DIR.value)
    found = 0
    for item_id in ITEM_IDS.value:
        try:
            (neighbours,) = model.similar([item_id], k=K.value)
        except api.UnknownItemError:
            print(f"\n{item_id}: not in the corpus")
            continue
        found += 1
        print(f"\n{item_id}:")
        for rank, (neighbour, score) in enumerate(neighbours, 1):
            print(f"  {rank:3d}. {neighbour:40s} {score:.3f}")
    if not found:
        sys.exit(1)


main = cli.main(_similar, errors=(ValueError, OSError), log_level=None)

if __name__ == "__main__":
    app.run(main)
