"""Chooses (again) the blend of a trained model on its validation split, as training does at its
end, and writes `<model_dir>/blend.json`: for models trained before blends existed, or to try
other grids.

  .venv/bin/python scripts/choose_blend.py <model_dir> [data_dir] [--slices]

Prints the chosen blend and its validation Recall@50 by slice beside the references'.
"""

import dataclasses
import sys

from ssl_retrieval import blending
from ssl_retrieval import config as config_lib
from ssl_retrieval import model as model_lib
from ssl_retrieval.training import trainer

SLICES = ("all", "head", "tail", "cold")


def main(argv):
    args = [a for a in argv[1:] if not a.startswith("--")]
    model_dir = args[0]
    config = config_lib.load(model_dir)
    # The grids are today's defaults, not the ones the model was trained with.
    defaults = {
        f.name: f.default for f in dataclasses.fields(config) if f.name.startswith("blend_")
    }
    changes = {"model_dir": model_dir, **defaults}
    if len(args) > 1:
        changes["data_dir"] = args[1]
    if "--slices" in argv:
        changes["blend_objective"] = "slices"
    config = dataclasses.replace(config, **changes)
    model = model_lib.load_from_model_dir(model_dir, config.data_dir)
    choice = trainer.Validator(config).choose_blend(model, config)
    blending.save(model_dir, choice)
    best = blending.Blend(**choice["blend"])
    rows = {
        "blend": next(
            t["metrics"]
            for t in choice["grid"]
            if blending.Blend(**{name: t[name] for name in blending.NAMES}) == best
        )
    }
    rows.update(choice["references"] or {})
    print(best)
    for name, metrics in rows.items():
        print(f"{name:14s} " + " ".join(f"{s} {metrics[s]['recall@50']:.3f}" for s in SLICES))


if __name__ == "__main__":
    main(sys.argv)
