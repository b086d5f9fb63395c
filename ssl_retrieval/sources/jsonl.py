"""Writing raw data in the project's input format: sharded JSON Lines in an atomic output dir.

Every source writes `items*.jsonl`, `pairs*.jsonl`, `schema.json` and `README.md` into a
temporary sibling of the output directory and renames it into place only when complete, so an
interrupted run never leaves a half-written dataset and an existing one is never half-replaced.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator

from ssl_retrieval import schema as schema_lib


def shard_name(prefix: str, index: int, num_shards: int) -> str:
    """`items.jsonl` for one shard, `items-00003-of-00008.jsonl` for several."""
    if num_shards == 1:
        return f"{prefix}.jsonl"
    return f"{prefix}-{index:05d}-of-{num_shards:05d}.jsonl"


class ShardedJsonlWriter:
    """Writes JSON objects round-robin over `num_shards` files named by `shard_name`.

    Round-robin keeps shards the same size without knowing the record count up front.
    """

    def __init__(self, directory: str, prefix: str, num_shards: int = 1):
        if num_shards < 1:
            raise ValueError(f"num_shards must be >= 1, got {num_shards}")
        self._files = [
            open(os.path.join(directory, shard_name(prefix, i, num_shards)), "w", encoding="utf-8")
            for i in range(num_shards)
        ]
        self.count = 0

    def write(self, record: dict) -> None:
        line = json.dumps(record, ensure_ascii=False, separators=(",", ":"))
        self._files[self.count % len(self._files)].write(line + "\n")
        self.count += 1

    def write_lines(self, lines: list[str]) -> None:
        """Writes pre-serialised JSON lines (the fast path for vectorised generators)."""
        for line in lines:
            self._files[self.count % len(self._files)].write(line + "\n")
            self.count += 1

    def close(self) -> None:
        for f in self._files:
            f.close()

    def __enter__(self) -> ShardedJsonlWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def check_output_dir(output_dir: str, overwrite: bool) -> None:
    """Raises ValueError if `output_dir` exists with content and `overwrite` is False."""
    if os.path.isfile(output_dir):
        raise ValueError(f"--output_dir={output_dir} is a file, not a directory")
    if os.path.isdir(output_dir) and os.listdir(output_dir) and not overwrite:
        raise ValueError(
            f"--output_dir={output_dir} exists and is not empty; choose another directory or "
            "pass --overwrite to replace it (the old one is removed only after the new one is "
            "complete)"
        )


@contextlib.contextmanager
def atomic_output_dir(output_dir: str, overwrite: bool = False) -> Iterator[str]:
    """Yields a temporary directory that replaces `output_dir` when the block succeeds.

    On an exception the temporary directory is removed and `output_dir` is left as it was.
    """
    check_output_dir(output_dir, overwrite)
    parent = os.path.dirname(os.path.abspath(output_dir))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(output_dir)}.tmp-", dir=parent)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if os.path.exists(output_dir):
        old = tempfile.mkdtemp(prefix=f".{os.path.basename(output_dir)}.old-", dir=parent)
        os.rmdir(old)
        os.rename(output_dir, old)
    os.rename(tmp, output_dir)
    if old:
        shutil.rmtree(old, ignore_errors=True)


def write_schema(directory: str, features: list[dict]) -> schema_lib.Schema:
    """Validates the dataset schema and writes it as `schema.json`."""
    schema = schema_lib.from_json({"features": features}, source="built-in source schema")
    schema_lib.save(schema, os.path.join(directory, "schema.json"))
    return schema


def write_readme(directory: str, title: str, summary: dict, notes: str) -> None:
    """Writes README.md: what the files are and the counts of this run."""
    lines = [
        f"# {title}",
        "",
        "Raw data in the ssl_retrieval input format (docs/contracts.md):",
        "",
        "- `items*.jsonl`: one JSON object per item, keys = feature names from `schema.json`.",
        "- `pairs*.jsonl`: one JSON object per observed pair: `query_id`, `candidate_id`.",
        "- `schema.json`: the dataset schema (feature names and kinds).",
        "- `summary.json`: the counts below, machine-readable.",
        "",
        "## Counts",
        "",
    ]
    lines += [f"- {key}: {value}" for key, value in summary.items()]
    lines += ["", notes.strip(), ""]
    with open(os.path.join(directory, "README.md"), "w", encoding="utf-8") as f:
        f.write("\n".join(lines))
    with open(os.path.join(directory, "summary.json"), "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2, sort_keys=True)
        f.write("\n")


def remove_tree(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)
