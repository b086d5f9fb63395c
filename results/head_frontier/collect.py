"""Writes this page's records of trained models: today's defaults on test, and on validation
the blends of models trained with one flag changed, one JSON line each, from the model dirs
under `--runs`.

    .venv/bin/python results/head_frontier/collect.py --runs=runs --output_dir=results/head_frontier

Model dirs (`runs/<dataset>/models/`): `recipe/seedN` (fraction 1.0), `recipe_0.1/seedN`
(fraction 0.1, trained on `data_0.1` with `--epochs=100`) and `recipe_0.01/seedN` (fraction
0.01, `data_0.01`, `--epochs=1000`), `configs/recipe.cfg` with `--seed=N`; where a 1.0 model's
blend was chosen again with the query's degree, the copy `recipe/seedN.qdeg` holds it.
`mixneg_<fraction>/seedN`: the same with `--mixed_negatives`; `temp0.1_<fraction>/seedN` with
`--temperature=0.1`; `cw50_<fraction>/seedN`: today's model, its blend chosen again with
`--blend_content_weights=0,1,2,50` (`linked` 0.01 seed 1 with a wider grid: its blend.json's
"options"). `steps_0.1/seedN.sS`: Debian's fraction 0.1 model trained for exactly S steps
(`--train_steps=S --validate_every=0 --patience=0`), its blend chosen by `python -m
ssl_retrieval.blend`; `probe_0.1/<name>/seedN`: Debian's with one flag of `PROBES`.

- `todays_defaults_test.jsonl`: each model's Recall@K by slice on test (its `metrics.json`,
  written by `ssl_retrieval.evaluate`).
- `mixed_negatives_blend.jsonl`: for each seed that has both, the chosen blends' objective and
  Recall@K by slice on validation (`blend.json`), with `--mixed_negatives` and without.
- `temperature_blend.jsonl`: the same with `--temperature=0.1` and without.
- `tfidf_first_blend.jsonl`: the same with a TF-IDF weight of 50 in the blend's grid and
  without.
- `tfidf_first_test.jsonl`: on test, each `cw50_<fraction>/seedN` model's Recall@K by slice
  beside today's defaults' (its `metrics.json`; where its blends are today's, it was not
  evaluated again: `"same_blends": true` and today's numbers).
- `listwise_blend.jsonl`, `listwise_test.jsonl`: the same for `lw_<fraction>/seedN`, today's
  model with its blend chosen again with `--blend_fusion_loss=listwise`, beside today's defaults
  (`todays_dir`: the `cw50` copy where TF-IDF first changed the blends).
- `budget_blend.jsonl`: the same for Debian's fixed budgets and probes beside its early-stopped
  model.
"""

from __future__ import annotations

import argparse
import json
import os

DATASETS = ("debian", "linked_both", "synthetic", "linked")
SLICES = ("all", "head", "tail", "cold")
SEEDS = range(1, 6)
KS = (10, 50)
FRACTIONS = ("1.0", "0.1", "0.01")
TFIDF_FIRST = "content weight 50 in the grid"
LISTWISE = "listwise fusion fit"
# The variants' records keep the order their first file was written in.
VARIANT_DATASETS = ("debian", "synthetic", "linked", "linked_both")


def recipe_dir(runs: str, dataset: str, fraction: str, seed: int) -> str:
    """The model of today's defaults (`.qdeg`: its blend chosen again with the query's degree)."""
    if fraction != "1.0":
        return os.path.join(runs, dataset, "models", f"recipe_{fraction}", f"seed{seed}")
    path = os.path.join(runs, dataset, "models", "recipe", f"seed{seed}")
    return f"{path}.qdeg" if os.path.exists(f"{path}.qdeg") else path


def todays_dir(runs: str, dataset: str, fraction: str, seed: int) -> str:
    """Today's defaults since TF-IDF first: the `cw50` copy where its blends changed (it holds
    its own test metrics then), else the recipe's model (its blends are today's)."""
    recipe = recipe_dir(runs, dataset, fraction, seed)
    copy = os.path.join(runs, dataset, "models", f"cw50_{fraction}", f"seed{seed}")
    blends = [_load(os.path.join(d, "blend.json")) for d in (recipe, copy)]
    if None in blends or blends[0]["blends"] == blends[1]["blends"]:
        return recipe
    return copy


def _load(path: str) -> dict | None:
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def _slices(metrics: dict, k: int) -> dict:
    return {s: round(metrics[s][f"recall@{k}"], 4) for s in SLICES}


def todays_defaults(runs: str):
    for fraction in FRACTIONS:
        for dataset in DATASETS:
            for seed in SEEDS:
                found = _load(
                    os.path.join(recipe_dir(runs, dataset, fraction, seed), "metrics.json")
                )
                for k in KS if found else ():
                    key = {"dataset": dataset, "fraction": fraction, "seed": seed, "k": k}
                    yield {**key, **_slices(found["metrics"], k)}


def _variant_seeds(runs: str, prefix: str, today):
    """(key, today's model dir, the variant's) for every dataset, fraction and seed, in the
    records' order; `today` names today's model dir (`recipe_dir` or `todays_dir`)."""
    for dataset in VARIANT_DATASETS:
        for fraction in FRACTIONS:
            for seed in SEEDS:
                key = {"dataset": dataset, "fraction": fraction, "seed": seed}
                changed = os.path.join(
                    runs, dataset, "models", f"{prefix}_{fraction}", f"seed{seed}"
                )
                yield key, today(runs, dataset, fraction, seed), changed


def variant_beside_recipe(runs: str, prefix: str, variant: str, today=recipe_dir):
    """The blends of `<prefix>_<fraction>/seedN` (one flag added to the recipe's training or
    blend choice) and of today's defaults (the model dir `today` names) on the same seed, for
    every seed that has both."""
    for key, todays, changed in _variant_seeds(runs, prefix, today):
        blends = {
            v: _load(os.path.join(d, "blend.json"))
            for v, d in (("recipe", todays), (variant, changed))
        }
        if None in blends.values():
            continue
        for name, blend in blends.items():
            yield from _blend_rows({**key, "variant": name}, blend)


def variant_test_beside_recipe(runs: str, prefix: str, variant: str, today=recipe_dir):
    """Test Recall@K of `<prefix>_<fraction>/seedN` (its blend chosen again) and of today's
    defaults on the same seed; a variant whose blends are today's has today's numbers."""
    for key, todays, changed in _variant_seeds(runs, prefix, today):
        blends = [_load(os.path.join(d, "blend.json")) for d in (todays, changed)]
        metrics = [_load(os.path.join(d, "metrics.json")) for d in (todays, changed)]
        if None in blends or metrics[0] is None:
            continue
        same = blends[0]["blends"] == blends[1]["blends"]
        if same:
            metrics[1] = metrics[0]
        if metrics[1] is None:
            continue
        for name, found in zip(("recipe", variant), metrics, strict=True):
            for k in KS:
                extra = {"same_blends": same} if name == variant else {}
                yield {**key, "k": k, "variant": name, **extra, **_slices(found["metrics"], k)}


def _best_step(model_dir: str) -> int:
    """The step of the checkpoint in best/: the first validation with the highest Recall@50."""
    with open(os.path.join(model_dir, "validation.jsonl")) as f:
        history = [json.loads(line) for line in f]
    return max(history, key=lambda r: (r["value"], -r["step"]))["step"]


def _blend_rows(key: dict, blend: dict):
    for k in KS:
        choice = blend["choices"][str(k)]
        yield {
            **key,
            "k": k,
            "objective": round(choice["value"][-1], 4),
            **_slices(choice["metrics"], k),
        }


# Debian 0.1 probes: the model dir's name under probe_0.1/ and the one flag it changes.
PROBES = {
    "lr3e-4": "--learning_rate=0.0003",
    "iddrop0.5": "--id_dropout=0.5",
    "temp0.035": "--temperature=0.035",
    "temp0.05": "--temperature=0.05",
}


def _fixed_budgets(longer: str, seed: int) -> list[int]:
    """The S of every `seed<seed>.s<S>` dir under `longer`, sorted."""
    prefix = f"seed{seed}.s"
    names = os.listdir(longer) if os.path.isdir(longer) else ()
    return sorted(
        int(n[len(prefix) :]) for n in names if n.startswith(prefix) and n[len(prefix) :].isdigit()
    )


def budget(runs: str):
    models = os.path.join(runs, "debian", "models")
    longer = os.path.join(models, "steps_0.1")
    for seed in SEEDS:
        early = recipe_dir(runs, "debian", "0.1", seed)
        # (variant, model dir, steps: None for an early-stopped model, read from its validations)
        runs_of_seed = [("early stopped", early, None)]
        for steps in _fixed_budgets(longer, seed):
            runs_of_seed.append(
                ("fixed budget", os.path.join(longer, f"seed{seed}.s{steps}"), steps)
            )
        for name, flag in PROBES.items():
            runs_of_seed.append(
                (flag, os.path.join(models, "probe_0.1", name, f"seed{seed}"), None)
            )
        blends = [(v, d, n, _load(os.path.join(d, "blend.json"))) for v, d, n in runs_of_seed]
        blends = [b for b in blends if b[3] is not None]
        if len(blends) < 2 or blends[0][1] != early:
            continue
        for variant, model_dir, steps, blend in blends:
            key = {"dataset": "debian", "fraction": "0.1", "seed": seed, "variant": variant}
            key["steps"] = steps if steps is not None else _best_step(model_dir)
            yield from _blend_rows(key, blend)


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
    runs = args.runs
    outputs = {
        "todays_defaults_test.jsonl": todays_defaults(runs),
        "mixed_negatives_blend.jsonl": variant_beside_recipe(runs, "mixneg", "mixed_negatives"),
        "temperature_blend.jsonl": variant_beside_recipe(runs, "temp0.1", "temperature 0.1"),
        "tfidf_first_blend.jsonl": variant_beside_recipe(runs, "cw50", TFIDF_FIRST),
        "tfidf_first_test.jsonl": variant_test_beside_recipe(runs, "cw50", TFIDF_FIRST),
        "listwise_blend.jsonl": variant_beside_recipe(runs, "lw", LISTWISE, todays_dir),
        "listwise_test.jsonl": variant_test_beside_recipe(runs, "lw", LISTWISE, todays_dir),
        "budget_blend.jsonl": budget(runs),
    }
    for name, rows in outputs.items():
        _write(os.path.join(args.output_dir, name), rows)


if __name__ == "__main__":
    main()
