"""Checks that a refactor changes no output: a small end-to-end run, then a comparison.

  .venv/bin/python scripts/compare_flow.py run <out_dir> [debian_data_dir]
  .venv/bin/python scripts/compare_flow.py compare <before_dir> <after_dir>

`run` trains (tiny data written by `ssl_retrieval.testing`, and optionally a Debian data dir for
60 steps), chooses the blend on validation, evaluates under it and under forced numbers (similar,
cold and TF-IDF rankings at work), exports with brute force and ScaNN, and asks 20 items'
neighbours at k = 20 and 7; everything a user sees goes to <out_dir>/flow.json. Run it once with
the old code (a worktree at the old commit, with PYTHONPATH pointing at it) and once with the new;
`compare` reports every difference, the training checkpoints' files (`checkpoints/`, `best/`)
compared byte for byte. The blend is chosen for lists of 50 alone and by the references
objective, as before blends per list size, so defaults chosen since do not count as
differences. ScaNN's index is not built alike twice (its training sample), so its answers are
compared by overlap; everything else must be identical.
"""

import filecmp
import glob
import json
import os
import shutil
import sys

import numpy as np

from ssl_retrieval import config as config_lib
from ssl_retrieval import data as data_lib
from ssl_retrieval import testing
from ssl_retrieval.evaluation import evaluator
from ssl_retrieval.serving import api, exporter
from ssl_retrieval.training import trainer

FORCED = {
    "popularity_prior": "0.05",
    "content_weight": "2",
    "prior_share": "0.4",
    "popularity_penalty": "0.02",
    "cold_share": "0.2",
    "cold_content_weight": "4",
}
TINY = dict(batch_size=32, hidden_layers=(32, 16), embedding_dim=8, train_steps=80)


def _blend_options():
    """Today's options for a blend chosen as before blends per list size (none before)."""
    try:
        from ssl_retrieval.ranking.config import BlendConfig
    except ImportError:
        return ()
    return (BlendConfig(blend_ks=(50,), blend_objective="references"),)


def _overrides(numbers: dict) -> dict:
    try:
        from ssl_retrieval.ranking.config import BlendOverrides
    except ImportError:
        return numbers
    return {"blend": BlendOverrides(**numbers)}


def _answers(export_dir: str, data_dir: str) -> dict:
    model = api.load(export_dir)
    corpus = data_lib.corpus_ids(data_dir)
    queries = [corpus[i] for i in np.random.default_rng(0).choice(len(corpus), 20, replace=False)]
    return {
        "k20": {
            q: [(n.id, round(n.source_score, 5)) for n in row]
            for q, row in zip(queries, model.similar(queries, k=20), strict=True)
        },
        "k7": {
            q: [n.id for n in row]
            for q, row in zip(queries, model.similar(queries, k=7), strict=True)
        },
    }


def run_case(out_dir: str, name: str, data_dir: str, flags: dict) -> dict:
    model_dir = os.path.join(out_dir, name, "model")
    config = config_lib.TrainConfig(data_dir=data_dir, model_dir=model_dir, **flags)
    summary = trainer.run(config, *_blend_options())
    with open(os.path.join(model_dir, "blend.json")) as f:
        chosen = json.load(f)
    grid = chosen["grid"] if "grid" in chosen else chosen["choices"]["50"]["grid"]
    fields = (
        "prior_share",
        "cold_share",
        "content_weight",
        "popularity_penalty",
        "popularity_prior",
    )
    out = {
        "best_validation": summary.get("best_validation_recall@50"),
        "blend": chosen["blend"] if "blend" in chosen else chosen["blends"]["50"],
        "grid": [[t[f] for f in fields] + [t["value"]] for t in grid],
        "metrics": evaluator.run(data_dir, model_dir=model_dir, max_queries=500)["metrics"],
        "forced_metrics": evaluator.run(
            data_dir,
            model_dir=model_dir,
            max_queries=500,
            blend=FORCED,
            output=os.path.join(out_dir, name, "forced.json"),
        )["metrics"],
        "answers": {},
    }
    out["blend"].pop("links_share", None)
    for index in ("brute_force", "scann"):
        for forced in (False, True):
            label = f"{'forced_' if forced else ''}{index}"
            export_dir = os.path.join(out_dir, name, label)
            extra = _overrides(FORCED) if forced else {}
            exporter.run(
                exporter.ExportConfig(
                    data_dir=None,
                    model_dir=model_dir,
                    export_dir=export_dir,
                    k=20,
                    index=index,
                    **extra,
                )
            )
            out["answers"][label] = _answers(export_dir, data_dir)
    return out


def run(out_dir: str, debian: str | None) -> None:
    shutil.rmtree(out_dir, ignore_errors=True)
    os.makedirs(out_dir)
    tiny = testing.make_data_dir(os.path.join(out_dir, "data"), validation_fraction=0.1)
    cases = {"tiny": (tiny, dict(TINY, validate_every=20, validation_queries=200))}
    if debian:
        cases["debian"] = (
            debian,
            dict(train_steps=60, validate_every=30, validation_queries=300, patience=0),
        )
    result = {name: run_case(out_dir, name, d, f) for name, (d, f) in cases.items()}
    with open(os.path.join(out_dir, "flow.json"), "w") as f:
        json.dump(result, f, indent=1, sort_keys=True)


def compare(before_dir: str, after_dir: str) -> list[str]:
    """One line per case and output: identical, or what differs."""
    before = json.load(open(os.path.join(before_dir, "flow.json")))
    after = json.load(open(os.path.join(after_dir, "flow.json")))
    lines = []
    for name in before:
        a, b = before[name], after[name]
        for key in ("best_validation", "blend", "grid", "metrics", "forced_metrics"):
            lines.append(f"{name} {key}: {'identical' if a[key] == b[key] else 'DIFFERENT'}")
        for label, answers in a["answers"].items():
            for k, lists in answers.items():
                other = b["answers"][label][k]
                if lists == other:
                    lines.append(f"{name} export {label} {k}: identical")
                    continue
                ids = [[x[0] if isinstance(x, list) else x for x in row] for row in lists.values()]
                new = [[x[0] if isinstance(x, list) else x for x in row] for row in other.values()]
                overlap = np.mean(
                    [len(set(x) & set(y)) / max(len(x), 1) for x, y in zip(ids, new, strict=True)]
                )
                lines.append(f"{name} export {label} {k}: overlap {overlap:.3f}")
        lines.append(f"{name} checkpoints: {_compare_checkpoints(before_dir, after_dir, name)}")
    return lines


def _compare_checkpoints(before_dir: str, after_dir: str, name: str) -> str:
    """Whether the checkpoint files (data and index) of a case's model are the same bytes."""
    found = sorted(
        os.path.relpath(path, before_dir)
        for kind in ("checkpoints", "best")
        for path in glob.glob(os.path.join(before_dir, name, "model", kind, "ckpt-*"))
    )
    different = [
        relative
        for relative in found
        if not os.path.exists(os.path.join(after_dir, relative))
        or not filecmp.cmp(
            os.path.join(before_dir, relative), os.path.join(after_dir, relative), shallow=False
        )
    ]
    if different:
        return f"DIFFERENT ({', '.join(different)})"
    return f"identical ({len(found)} files)"


if __name__ == "__main__":
    if sys.argv[1] == "run":
        run(sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else None)
    else:
        print("\n".join(compare(sys.argv[2], sys.argv[3])))
