r"""Prints the neighbours of items from an export: the command-line face of `ssl_retrieval.load`.

  python -m ssl_retrieval.similar --export_dir=runs/demo/export --item_ids=vim,postgresql --k=10

Each line: rank, id, the list's own score (1 at the top, falling evenly: it never rises down the
list), then in parentheses the ranking that listed the item and that ranking's own score (a
blended list mixes rankings whose scores are on different scales: `api.Neighbour`). Ids not in
the corpus are reported and skipped (exit status 1 if none was found).
"""

import sys

from absl import app

from ssl_retrieval import cli
from ssl_retrieval.serving.config import SimilarConfig

# One flag per SimilarConfig field: names, defaults and help are the dataclass's.
FLAGS = cli.define_flags(SimilarConfig, required=("export_dir", "item_ids"))


def _similar() -> None:
    config = cli.from_flags(SimilarConfig, FLAGS)
    from ssl_retrieval.serving import api  # noqa: PLC0415  (imports TensorFlow)

    model = api.load(config.export_dir)
    found = 0
    for item_id in config.item_ids:
        try:
            (neighbours,) = model.similar([item_id], k=config.k)
        except api.UnknownItemError:
            print(f"\n{item_id}: not in the corpus")
            continue
        found += 1
        print(f"\n{item_id}:")
        for rank, n in enumerate(neighbours, 1):
            came_from = f"{n.source} {n.source_score:.3f}" if n.source else f"{n.source_score:.3f}"
            print(f"  {rank:3d}. {n.id:40s} {n.score:.2f}   ({came_from})")
    if not found:
        sys.exit(1)


main = cli.main(_similar, errors=(ValueError, OSError), log_level=None)

if __name__ == "__main__":
    app.run(main)
