"""Tiny preprocessed data directories for tests, written directly in the pipeline's output format.

The Beam pipeline (`pipelines.preprocess`) is the real producer of a data dir; this module writes
the same layout (docs/contracts.md) in a few milliseconds so that the model, evaluation and export
tests do not depend on running Beam. A test of the pipeline checks that its output reads back the
same way as this one.

The catalogue has real structure: items belong to clusters, their brand and tags depend on the
cluster, and pairs link items of the same cluster with Zipf-skewed popularity, so a model trained
for a few steps beats chance and the mutual information between features is far from zero.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zlib
from collections import Counter
from collections.abc import Iterator

import numpy as np

from ssl_retrieval import data_dir as data_dir_lib
from ssl_retrieval import schema as schema_lib

FEATURES = [
    {"name": "item_id", "kind": "id"},
    {"name": "brand", "kind": "categorical"},
    {"name": "category", "kind": "categorical"},
    {"name": "tags", "kind": "multi_hot"},
    {"name": "price", "kind": "dense", "transform": "log"},
]


def _items(
    num_items: int, num_clusters: int, rng: np.random.Generator, id_prefix: str = "item"
) -> list[dict]:
    items = []
    for i in range(num_items):
        cluster = i % num_clusters
        item: dict = {"item_id": f"{id_prefix}{i:05d}"}
        if rng.random() > 0.05:  # a few missing values, as in real catalogues
            item["brand"] = f"brand{cluster}" if rng.random() < 0.8 else f"brand{rng.integers(50)}"
        item["category"] = f"cat{cluster // 2}"
        n_tags = int(rng.integers(0, 4))
        item["tags"] = sorted({f"tag{cluster}_{int(rng.integers(3))}" for _ in range(n_tags)})
        if rng.random() > 0.1:
            item["price"] = float(np.exp(rng.normal(2 + cluster % 3, 0.5)))
        items.append(item)
    return items


def _pairs(
    num_items: int,
    num_pairs: int,
    num_clusters: int,
    rng: np.random.Generator,
    id_prefix: str = "item",
) -> list[tuple[str, str]]:
    per_cluster = num_items // num_clusters
    ranks = np.arange(1, per_cluster + 1, dtype=np.float64)
    probs = ranks**-1.1
    probs /= probs.sum()
    pairs = []
    for _ in range(num_pairs):
        q = int(rng.integers(num_items))
        cluster = q % num_clusters
        c = cluster + num_clusters * int(rng.choice(per_cluster, p=probs))
        if c != q:
            pairs.append((f"{id_prefix}{q:05d}", f"{id_prefix}{c:05d}"))
    return pairs


def _example(item: dict, prefix: str, features) -> dict:
    from ssl_retrieval.compat import tf

    out = {}
    for f in features:
        value = item.get(f.name)
        if f.kind == schema_lib.DENSE:
            if value is not None:  # missing dense value = absent key (FixedLenFeature default)
                out[prefix + f.name] = tf.train.Feature(
                    float_list=tf.train.FloatList(value=[float(value)])
                )
        else:
            vals = [] if value is None else ([value] if isinstance(value, str) else value)
            out[prefix + f.name] = tf.train.Feature(
                bytes_list=tf.train.BytesList(value=[v.encode() for v in vals])
            )
    return out


def _tokens(item: dict, f) -> list[str]:
    value = item.get(f.name)
    if value is None or value == []:
        return ["<MISSING>"]
    return [value] if isinstance(value, str) else list(value)


def dense_bin(value: float, feature) -> str:
    """The MI token of a dense value (docs/contracts.md): half-std bins of the standardised value."""
    x = math.log1p(value) if feature.dense_transform == "log" else value
    return schema_lib.dense_bin((x - feature.mean) / feature.std)


def mutual_information(items: list[dict], features, vocabs: dict[str, set]) -> dict:
    """Reference MI (eq. 4) with the contract's multi-hot mass weighting, in plain Python.

    Args:
      items: raw item dicts.
      features: the preprocessed schema's features (dense ones need mean/std).
      vocabs: feature name -> set of in-vocabulary values (sparse features).
    """
    sparse = list(features)
    names = [f.name for f in sparse]

    def capped(item, f):
        if f.kind == schema_lib.DENSE:
            value = item.get(f.name)
            return ["<MISSING>"] if value is None else [dense_bin(value, f)]
        return [t if t == "<MISSING>" or t in vocabs[f.name] else "<OOV>" for t in _tokens(item, f)]

    def entropy(counter: Counter, total: float) -> float:
        return -sum((c / total) * math.log(c / total) for c in counter.values() if c > 0)

    n = len(items)
    k = len(sparse)
    mi = np.zeros((k, k))
    ent = np.zeros(k)
    marg = []
    for f in sparse:
        counter: Counter = Counter()
        for item in items:
            vals = capped(item, f)
            for v in vals:
                counter[v] += 1.0 / len(vals)
        marg.append(counter)
    for i in range(k):
        ent[i] = entropy(marg[i], n)
    for i in range(k):
        for j in range(k):
            joint: Counter = Counter()
            for item in items:
                a, b = capped(item, sparse[i]), capped(item, sparse[j])
                if i == j:
                    for v in a:
                        joint[(v, v)] += 1.0 / len(a)
                    continue
                for va in a:
                    for vb in b:
                        joint[(va, vb)] += 1.0 / (len(a) * len(b))
            mi[i, j] = ent[i] + ent[j] - entropy(joint, n)
    for i in range(k):
        mi[i, i] = ent[i]
    ranked = {
        names[i]: [
            names[j] for j in sorted((j for j in range(k) if j != i), key=lambda j: -mi[i, j])
        ]
        for i in range(k)
    }
    return {
        "features": names,
        "mutual_information": mi.tolist(),
        "entropy": ent.tolist(),
        "ranked": ranked,
        "num_items": n,
        "log_base": "e",
    }


# The tiny data dir's shape: every test's expectations were written against these.
NUM_CLUSTERS = 12
EVAL_FRACTION = 0.1


def make_data_dir(
    path: str,
    num_items: int = 240,
    num_pairs: int = 3000,
    validation_fraction: float = 0.0,
    id_prefix: str = "item",
) -> str:
    """Writes a tiny preprocessed data dir at `path` (created) and returns `path`.

    Items fall in `NUM_CLUSTERS` clusters of look-alikes that link to each other; a tenth of the
    pairs (`EVAL_FRACTION`) is the test split. Item ids are `id_prefix` and a 5-digit number
    (`item00042`); a non-ASCII prefix tests that ids are UTF-8 everywhere."""
    rng = np.random.default_rng(0)
    num_clusters = NUM_CLUSTERS
    os.makedirs(os.path.join(path, data_dir_lib.VOCAB_DIR), exist_ok=True)
    os.makedirs(os.path.join(path, data_dir_lib.STATS_DIR), exist_ok=True)
    items = _items(num_items, num_clusters, rng, id_prefix)
    pairs = _pairs(num_items, num_pairs, num_clusters, rng, id_prefix)
    features = schema_lib.from_json({"features": FEATURES}).features
    final_features, vocabs = _write_vocabularies(path, items, features)
    splits = _split(pairs, EVAL_FRACTION, validation_fraction)
    _write_records(path, items, features, splits)
    schema = schema_lib.Schema(
        features=tuple(final_features),
        counts={
            "items": len(items),
            "input_items": len(items),
            "train_pairs": len(splits["train"]),
            "eval_pairs": len(splits["eval"]),
            "validation_pairs": len(splits.get("validation", ())),
            "input_pairs": len(pairs),
            "error_records": 0,
        },
        files={
            "train": "train-*.tfrecord",
            "eval": "eval-*.tfrecord",
            "items": "items-*.tfrecord",
            **({"validation": "validation-*.tfrecord"} if "validation" in splits else {}),
        },
    )
    schema_lib.save(schema, os.path.join(path, data_dir_lib.SCHEMA))
    with open(os.path.join(path, data_dir_lib.MUTUAL_INFO), "w") as out:
        json.dump(mutual_information(items, final_features, vocabs), out, indent=2)
    _write_stats(path, len(items), splits["train"], splits["eval"])
    with open(os.path.join(path, data_dir_lib.README), "w") as out:
        out.write("Tiny test data dir written by ssl_retrieval.testing (see docs/contracts.md).\n")
    return path


def _write_vocabularies(path: str, items: list[dict], features) -> tuple[list, dict[str, set]]:
    """Each sparse feature's vocabulary file (by count, then value); returns the schema's
    features with their sizes and statistics, and {feature: its values}."""
    final_features = []
    vocabs: dict[str, set] = {}
    for f in features:
        if not f.is_sparse:
            vals = np.log1p([i[f.name] for i in items if i.get(f.name) is not None])
            final_features.append(
                schema_lib.Feature(
                    name=f.name,
                    kind=f.kind,
                    transform="log",
                    mean=float(vals.mean()),
                    std=float(vals.std() or 1.0),
                )
            )
            continue
        counts: Counter = Counter()
        for item in items:
            for v in set(_tokens(item, f)) - {"<MISSING>"}:
                counts[v] += 1
        values = sorted(counts, key=lambda v: (-counts[v], v))
        vocabs[f.name] = set(values)
        rel = data_dir_lib.vocab_file(f.name)
        with open(os.path.join(path, rel), "w", encoding="utf-8") as out:
            out.writelines(v + "\n" for v in values)
        num_values = sum(len(_tokens(i, f)) for i in items if f.name in i and i[f.name] != [])
        final_features.append(
            schema_lib.Feature(
                name=f.name,
                kind=f.kind,
                vocab_size=len(values),
                vocab_file=rel,
                oov_buckets=1,
                num_values_mean=num_values / len(items),
            )
        )
    return final_features, vocabs


def _split(pairs, eval_fraction: float, validation_fraction: float) -> dict[str, list]:
    """{"train", "eval"[, "validation"]: pairs}, each pair's split a hash of its ids."""

    def is_eval(q: str, c: str) -> bool:
        return zlib.crc32(f"{q}\t{c}".encode()) % 10_000 < eval_fraction * 10_000

    def is_validation(q: str, c: str) -> bool:
        return zlib.crc32(f"{c}\t{q}".encode()) % 10_000 < validation_fraction * 10_000

    splits = {
        "train": [(q, c) for q, c in pairs if not is_eval(q, c) and not is_validation(q, c)],
        "eval": [(q, c) for q, c in pairs if is_eval(q, c)],
    }
    if validation_fraction > 0:
        splits["validation"] = [
            (q, c) for q, c in pairs if not is_eval(q, c) and is_validation(q, c)
        ]
    return splits


def _write_records(path: str, items: list[dict], features, splits: dict[str, list]) -> None:
    """The items' and each split's pairs' TFRecords."""
    from ssl_retrieval.compat import tf  # noqa: PLC0415  (the rest of the module is plain Python)

    def write(name: str, records) -> None:
        with tf.io.TFRecordWriter(os.path.join(path, name)) as w:
            for feats in records:
                w.write(
                    tf.train.Example(features=tf.train.Features(feature=feats)).SerializeToString()
                )

    write("items-00000-of-00001.tfrecord", (_example(i, "", features) for i in items))
    by_id = {item["item_id"]: item for item in items}
    for split, split_pairs in splits.items():
        records = []
        for q, c in split_pairs:
            feats = _example(by_id[q], schema_lib.QUERY_PREFIX, features)
            feats.update(_example(by_id[c], schema_lib.CANDIDATE_PREFIX, features))
            feats[schema_lib.WEIGHT_KEY] = tf.train.Feature(
                float_list=tf.train.FloatList(value=[1.0])
            )
            records.append(feats)
        write(f"{split}-00000-of-00001.tfrecord", records)


def _write_stats(path: str, num_items: int, train: list, evals: list) -> None:
    """stats/: candidate counts, head and cold items, stats.json."""
    cand_counts = Counter(c for _, c in train)
    ordered = sorted(cand_counts, key=lambda i: (-cand_counts[i], i))
    head = ordered[: max(1, int(round(0.1 * len(ordered))))]
    cold = sorted({c for _, c in evals} - set(cand_counts))
    with open(os.path.join(path, data_dir_lib.CANDIDATE_COUNTS), "w") as out:
        out.writelines(f"{i}\t{cand_counts[i]}\n" for i in ordered)
    with open(os.path.join(path, data_dir_lib.HEAD_ITEMS), "w") as out:
        out.writelines(i + "\n" for i in head)
    with open(os.path.join(path, data_dir_lib.COLD_ITEMS), "w") as out:
        out.writelines(i + "\n" for i in cold)
    stats = {
        "num_items": num_items,
        "num_train_pairs": len(train),
        "num_eval_pairs": len(evals),
        "num_train_candidates": len(ordered),
        "head_fraction": 0.1,
        "num_head_items": len(head),
        "num_cold_items": len(cold),
        "files": dict(data_dir_lib.STATS_FILES),
    }
    with open(os.path.join(path, data_dir_lib.STATS), "w") as out:
        json.dump(stats, out, indent=2)


def merge_reference(lists: dict, segments: list, k: int) -> np.ndarray:
    """`ranking.merge` in plain Python, the tests' reference: walk the segments (ranking name,
    start, stop) of the lists {name: [Q, L]} and keep each item where it first comes, -1 padding
    skipped, until k are listed (-1 pads the result)."""
    rows = len(next(iter(lists.values())))
    out = []
    for r in range(rows):
        listed: list[int] = []
        for name, start, stop in segments:
            for item in np.asarray(lists[name][r]).tolist()[start:stop]:
                if item >= 0 and item not in listed and len(listed) < k:
                    listed.append(item)
        out.append(listed + [-1] * (k - len(listed)))
    return np.array(out, np.int64).reshape(rows, k)


def run_command(module: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """`python -m <module> <args>` in a new process of this interpreter; its output as text."""
    return subprocess.run(
        [sys.executable, "-m", module, *args], capture_output=True, text=True, timeout=timeout
    )


def free_port() -> int:
    """A TCP port free on loopback now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _fd_limit(limit: int | None):
    """A preexec_fn setting the child's file-descriptor limit (soft and hard), or None."""
    if limit is None:
        return None

    def set_limit():
        import resource  # noqa: PLC0415  (Unix only; only the child needs it)

        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

    return set_limit


@contextlib.contextmanager
def running_server(
    export_dir,
    *flags: str,
    timeout: float = 180.0,
    fd_limit: int | None = None,
    log=None,
    code: str | None = None,
) -> Iterator[str]:
    """`python -m ssl_retrieval.serve` on a free loopback port for the duration of the block.

    Yields its base URL `http://127.0.0.1:<port>` once /healthz answers. Raises RuntimeError with
    the end of the server's output when it exits first or does not answer within `timeout` s.
    `fd_limit` caps the server's file descriptors (soft and hard: it cannot raise it); `log`, a
    file opened for binary writing, receives the server's output (else a temporary file).
    `code`: another checkout whose `ssl_retrieval` runs the server (a benchmark's baseline).
    """
    port = free_port()
    with contextlib.ExitStack() as stack:
        output = log if log is not None else stack.enter_context(tempfile.TemporaryFile())
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "ssl_retrieval.serve",
                f"--export_dir={export_dir}",
                f"--port={port}",
                "--poll_seconds=0",
                *flags,
            ],
            stdout=output,
            stderr=subprocess.STDOUT,
            preexec_fn=_fd_limit(fd_limit),
            cwd=code,  # `-m` imports from the working directory first
        )
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.time() + timeout
            while True:
                try:
                    urllib.request.urlopen(f"{base}/healthz", timeout=2)
                    break
                except (urllib.error.URLError, ConnectionError):
                    if proc.poll() is not None or time.time() > deadline:
                        tail = f"(its output: {output.name})"
                        if log is None:
                            output.seek(0)
                            tail = output.read().decode(errors="replace")[-3000:]
                        raise RuntimeError(f"the server did not start:\n{tail}") from None
                    time.sleep(0.5)
            yield base
        finally:
            proc.terminate()
            proc.wait(timeout=30)


@contextlib.contextmanager
def serving_in_thread(app, connections=None) -> Iterator[tuple[int, object]]:
    """`app` served on a free loopback port by the server's own transport (uvicorn with
    `transport.GuardedProtocol`), in a thread of this process: yields (port, its Guard).

    Args:
      app: an ASGI app (`http_app.create_app(...)`).
      connections: `config.Connections` (default: the flags' defaults).
    """
    import asyncio  # noqa: PLC0415
    import threading  # noqa: PLC0415

    import uvicorn  # noqa: PLC0415

    from ssl_retrieval.serving import transport  # noqa: PLC0415  (imports uvicorn)
    from ssl_retrieval.serving.config import Connections  # noqa: PLC0415

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config, guard = transport.uvicorn_config(app, connections or Connections())
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=asyncio.run, args=(transport.serve(server, guard, [sock]),), daemon=True
    )
    thread.start()
    try:
        deadline = time.time() + 60
        while not server.started:
            if not thread.is_alive() or time.time() > deadline:
                raise RuntimeError("the in-thread server did not start")
            time.sleep(0.05)
        yield sock.getsockname()[1], guard
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


@contextlib.contextmanager
def unprivileged(uid: int = 65534) -> Iterator[None]:
    """Runs the block with file permissions enforced, as a server not run by root sees them.

    Root reads a `chmod 000` file anyway; as root, the block runs with the effective uid
    `uid` (nobody), restored after. Files the block must read need permissions for others.
    """
    if os.geteuid() != 0:
        yield
        return
    os.seteuid(uid)
    try:
        yield
    finally:
        os.seteuid(0)


def tiny_train_config(data_dir, model_dir, **overrides):
    """A `TrainConfig` small enough to train in seconds on `make_data_dir`'s data."""
    from ssl_retrieval import config as config_lib  # noqa: PLC0415

    tiny = {"batch_size": 32, "hidden_layers": (32, 16), "embedding_dim": 8}
    return config_lib.TrainConfig(
        data_dir=str(data_dir), model_dir=str(model_dir), **{**tiny, **overrides}
    )
