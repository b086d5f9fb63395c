"""Writes this page's records of trained models: today's defaults on test and mixed negatives on
validation, one JSON line each, from the model dirs under `--runs`.

    .venv/bin/python results/head_frontier/collect.py --runs=runs --output_dir=results/head_frontier

Model dirs (`runs/<dataset>/models/`): `recipe/seedN` (fraction 1.0) and `recipe_0.1/seedN`
(fraction 0.1, trained on `data_0.1` with `--epochs=100`), `configs/recipe.cfg` with `--seed=N`;
where a 1.0 model's blend was chosen again with the query's degree, the copy `recipe/seedN.qdeg`
holds it. `mixneg_<fraction>/seedN`: the same with `--mixed_negatives`.

- `todays_defaults_test.jsonl`: each model's Recall@K by slice on test (its `metrics.json`,
  written by `ssl_retrieval.evaluate`).
- `mixed_negatives_blend.jsonl`: for each seed that has both, the chosen blends' objective and
  Recall@K by slice on validation (`blend.json`), with `--mixed_negatives` and without.
"""

from __future__ import annotations

import argparse
import json
import os

DATASETS = ("debian", "linked_both", "synthetic", "linked")
SLICES = ("all", "head", "tail", "cold")
SEEDS = range(1, 6)
KS = (10, 50)


def recipe_dir(runs: str, dataset: str, fraction: str, seed: int) -> str:
    """The model of today's defaults (`.qdeg`: its blend chosen again with the query's degree)."""
    if fraction != "1.0":
        return os.path.join(runs, dataset, "models", f"recipe_{fraction}", f"seed{seed}")
    path = os.path.join(runs, dataset, "models", "recipe", f"seed{seed}")
    return f"{path}.qdeg" if os.path.exists(f"{path}.qdeg") else path


def _load(path: str) -> dict | None:
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def _slices(metrics: dict, k: int) -> dict:
    return {s: round(metrics[s][f"recall@{k}"], 4) for s in SLICES}


def todays_defaults(runs: str):
    for fraction in ("1.0", "0.1"):
        for dataset in DATASETS:
            for seed in SEEDS:
                found = _load(
                    os.path.join(recipe_dir(runs, dataset, fraction, seed), "metrics.json")
                )
                for k in KS if found else ():
                    key = {"dataset": dataset, "fraction": fraction, "seed": seed, "k": k}
                    yield {**key, **_slices(found["metrics"], k)}


def mixed_negatives(runs: str):
    for dataset in ("debian", "synthetic", "linked", "linked_both"):
        for fraction in ("1.0", "0.1"):
            for seed in SEEDS:
                mixed = os.path.join(runs, dataset, "models", f"mixneg_{fraction}", f"seed{seed}")
                dirs = {
                    "recipe": recipe_dir(runs, dataset, fraction, seed),
                    "mixed_negatives": mixed,
                }
                blends = {v: _load(os.path.join(d, "blend.json")) for v, d in dirs.items()}
                if None in blends.values():
                    continue
                for variant, blend in blends.items():
                    for k in KS:
                        choice = blend["choices"][str(k)]
                        yield {
                            **{"dataset": dataset, "fraction": fraction, "seed": seed, "k": k},
                            "variant": variant,
                            "objective": round(choice["value"][-1], 4),
                            **_slices(choice["metrics"], k),
                        }


def _write(path: str, rows) -> None:
    """All lines to a temporary file, then renamed: a failed run leaves the old file whole."""
    with open(f"{path}.tmp", "w") as f:
        f.writelines(json.dumps(row) + "\n" for row in rows)
    os.replace(f"{path}.tmp", path)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", default="runs", help="the dir holding <dataset>/models/")
    parser.add_argument("--output_dir", default="results/head_frontier", help="where to write")
    args = parser.parse_args()
    _write(os.path.join(args.output_dir, "todays_defaults_test.jsonl"), todays_defaults(args.runs))
    _write(os.path.join(args.output_dir, "mixed_negatives_blend.jsonl"), mixed_negatives(args.runs))


if __name__ == "__main__":
    main()
