"""The Python API over an export: `ssl_retrieval.load(export_dir).similar(["vim"], k=10)`.

Versions. An export dir holds numbered version directories; **the version is the directory
name**. A version is complete when its `export_info.json` exists: the exporter writes it last,
inside a temporary directory that it then renames to the number, so a reader never sees a
half-written version under a number. A version without it, or one that does not load, is skipped
with one log line naming the directory and what is wrong (`BrokenVersionError`), and the newest
version that loads is used. To push a version by hand, copy it under a temporary name in the
export dir (`cp -r 516 .tmp-600`), then rename it to the next number (`mv .tmp-600 600`).

Loading. Each loaded version runs in its own TensorFlow session (graph mode, as TF Serving
loads a SavedModel), so dropping the last reference to a `SimilarItems` frees everything it
holds, the ScaNN searcher included; `tf.saved_model.load` in eager mode keeps the searcher of
every version ever loaded (about the size of the index per reload). `scann` is imported first:
its ops must be registered before a SavedModel holding them loads. Every request is validated
here, so callers get a `ValueError` naming the problem instead of a TensorFlow error.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import reprlib
import stat
from typing import NamedTuple

import numpy as np

from ssl_retrieval import schema as schema_lib
from ssl_retrieval.compat import tf
from ssl_retrieval.serving import files

MARKER = "export_info.json"  # written last by the exporter: a version without it is incomplete
MAX_INFO_BYTES = 16 << 20  # export_info.json is a few kB; a larger one is not ours
SIGNATURES = ("similar_items", "similar_items_by_features", "item_embedding")
_VERSION_NAME = re.compile(r"[0-9]{1,18}")
_short = reprlib.Repr()
_short.maxstring = _short.maxother = 80
_short.maxlevel = 3
_short.maxlist = 5


def short_repr(value) -> str:
    """A bounded repr for error messages (long strings, deep or huge JSON values)."""
    try:
        return _short.repr(value)
    except (ValueError, RecursionError):  # ints over the str-conversion limit, deep nesting
        return f"<{type(value).__name__}>"


class Neighbour(NamedTuple):
    """One item of a list of neighbours, best first.

    A blended list takes its slots from several rankings (linked, popular, cold, similar:
    `ssl_retrieval/ranking/blend.py`) whose scores are on different scales, so one ranking's
    score cannot be compared with another's and would rise and fall down the list. Hence two:

    Attributes:
      id: the item's id.
      score: the list's own rank score, 1 at the top falling evenly to 1/n at the n-th (last)
        item: it never rises down the list and says where the item stands in it.
      source: the ranking that listed the item ("linked", "popular" or "fused", "cold", "similar"; empty
        for an export made before rankings were named).
      source_score: that ranking's own score (the model's cosine for plain cosine ranking; cos +
        beta * log(1 + count) for the popular one: docs/evaluation.md); comparable only between
        items of the same source.
    """

    id: str
    score: float
    source: str
    source_score: float


class UnknownItemError(ValueError):
    """Some requested item ids are not in the exported corpus."""

    def __init__(self, ids):
        self.ids = list(ids)
        shown = ", ".join(short_repr(i) for i in self.ids[:10])
        super().__init__(f"unknown item id(s): {shown}" + (" ..." if len(self.ids) > 10 else ""))


class BrokenVersionError(ValueError):
    """A version directory that cannot be served; the message is one line naming it."""


def version_dirs(export_dir: str) -> list[int]:
    """Every numbered directory under `export_dir` (complete or not), ascending."""
    try:
        names = os.listdir(export_dir)
    except OSError:
        return []
    return sorted(
        int(n)
        for n in names
        if _VERSION_NAME.fullmatch(n) and os.path.isdir(os.path.join(export_dir, n))
    )


def versions(export_dir: str) -> list[int]:
    """Numbered version directories holding the completion marker (export_info.json), ascending."""
    return [
        v
        for v in version_dirs(export_dir)
        if os.path.isfile(os.path.join(export_dir, str(v), MARKER))
    ]


def is_version_dir(path: str) -> bool:
    """True if `path` is one version (a SavedModel or its marker), not an export dir."""
    return os.path.exists(os.path.join(path, "saved_model.pb")) or os.path.exists(
        os.path.join(path, MARKER)
    )


def resolve(export_dir: str) -> str:
    """A version dir as is, else the newest complete version under `export_dir` (not loaded)."""
    if is_version_dir(export_dir):
        return export_dir
    found = versions(export_dir)
    if not found:
        raise ValueError(
            f"{export_dir}: no SavedModel version found (python -m ssl_retrieval.export)"
        )
    return os.path.join(export_dir, str(found[-1]))


def fingerprint(version_dir: str) -> tuple:
    """What identifies a version's content on disk: (name, size, mtime) of the files loaded.

    Files others add to a version dir (pages, catalogues) are not part of it, so writing them
    does not make the server reload.
    """
    out = []
    for rel in (MARKER, "saved_model.pb", "variables"):
        path = os.path.join(version_dir, rel)
        names = [rel]
        if rel == "variables" and os.path.isdir(path):
            names = [os.path.join(rel, n) for n in sorted(os.listdir(path))]
        for name in names:
            try:
                st = os.stat(os.path.join(version_dir, name))
            except OSError:
                continue
            out.append((name, st.st_size, st.st_mtime_ns, st.st_ino))
    return tuple(out)


def _one_line(error: BaseException) -> str:
    text = getattr(error, "message", None) or str(error) or type(error).__name__
    line = text.strip().splitlines()[0] if text.strip() else type(error).__name__
    return line if len(line) <= 300 else line[:300] + "..."


def read_info(version_dir: str) -> dict:
    """The version's export_info.json, checked; raises BrokenVersionError naming the problem.

    Only a regular file is read (a FIFO would block the reader forever), at most
    `MAX_INFO_BYTES`, within `files.READ_TIMEOUT_SECONDS`.
    """
    try:
        if not stat.S_ISDIR(os.stat(version_dir).st_mode):
            raise BrokenVersionError(f"{version_dir}: not a directory")
    except FileNotFoundError:
        raise BrokenVersionError(f"{version_dir}: no such version directory") from None
    except OSError as e:
        raise BrokenVersionError(f"{version_dir}: cannot be read ({files.problem(e)})") from None
    path = os.path.join(version_dir, MARKER)
    try:
        raw = files.read_regular(path, MAX_INFO_BYTES)
    except FileNotFoundError:
        raise BrokenVersionError(
            f"{version_dir}: incomplete, no {MARKER} (the exporter writes it last; push a "
            "version under a temporary name, then rename it to its number)"
        ) from None
    except files.UnreadableFile as e:  # not regular, too large, permission denied, too slow
        raise BrokenVersionError(f"{version_dir}: {MARKER} {e.reason}") from None
    try:
        info = json.loads(raw)
    except (ValueError, RecursionError) as e:
        raise BrokenVersionError(
            f"{version_dir}: {MARKER} is not valid JSON ({short_repr(str(e))})"
        ) from None
    if not isinstance(info, dict):
        raise BrokenVersionError(f"{version_dir}: {MARKER} must hold a JSON object")
    max_k = info.get("max_k")
    if isinstance(max_k, bool) or not isinstance(max_k, int) or max_k < 1:
        raise BrokenVersionError(
            f"{version_dir}: {MARKER}: 'max_k' must be a positive integer, got {short_repr(max_k)}"
        )
    features = info.get("features")
    if (
        not isinstance(features, list)
        or not features
        or not all(
            isinstance(f, dict)
            and isinstance(f.get("name"), str)
            and f.get("kind") in schema_lib.KINDS
            for f in features
        )
    ):
        raise BrokenVersionError(
            f"{version_dir}: {MARKER}: 'features' must be a list of {{'name', 'kind'}} "
            f"with kind in {list(schema_lib.KINDS)}"
        )
    return info


def unreadable(version_dir: str) -> str | None:
    """Why the files of a version dir that exists cannot be read (e.g. "Permission denied"), or
    None if they can, or if the directory is gone (a deleted version is not an unreadable one).
    """
    try:
        os.listdir(version_dir)
        for rel in (MARKER, "saved_model.pb", "variables"):
            try:
                os.stat(os.path.join(version_dir, rel))
            except FileNotFoundError:
                continue
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as e:
        return f"{files.problem(e)}: {e.filename}"
    return None


def _check_regular(version_dir: str) -> None:
    """Every file TensorFlow will open is a regular file: a FIFO among them would block the
    loader forever. assets.extra (files beside the model, not part of it) is not opened."""

    def fail(error: OSError):
        raise BrokenVersionError(
            f"{version_dir}: cannot be read ({files.problem(error)}: {error.filename})"
        )

    for root, dirs, names in os.walk(version_dir, onerror=fail):
        if root == version_dir and "assets.extra" in dirs:
            dirs.remove("assets.extra")
        for name in names:
            path = os.path.join(root, name)
            try:
                mode = os.stat(path).st_mode
            except OSError as e:
                fail(e)
            if not stat.S_ISREG(mode):
                rel = os.path.relpath(path, version_dir)
                raise BrokenVersionError(
                    f"{version_dir}: {rel} is {files.kind(mode)}, not a regular file"
                )


def _check_files(version_dir: str) -> None:
    _check_regular(version_dir)
    if not os.path.isfile(os.path.join(version_dir, "saved_model.pb")):
        raise BrokenVersionError(f"{version_dir}: saved_model.pb is missing")
    variables = os.path.join(version_dir, "variables")
    if not os.path.isfile(os.path.join(variables, "variables.index")):
        raise BrokenVersionError(f"{version_dir}: variables/variables.index is missing")
    shards = [n for n in os.listdir(variables) if n.startswith("variables.data-")]
    if not shards:
        raise BrokenVersionError(f"{version_dir}: variables/variables.data-* is missing")
    match = re.fullmatch(r"variables\.data-\d+-of-(\d+)", shards[0])
    if match:
        total = int(match.group(1))
        for i in range(total):
            name = f"variables.data-{i:05d}-of-{total:05d}"
            if name not in shards:
                raise BrokenVersionError(f"{version_dir}: variables/{name} is missing")


def _load_error(version_dir: str, error: BaseException) -> BrokenVersionError:
    if isinstance(error, tf.errors.DataLossError | tf.errors.OutOfRangeError):
        what = "the variables are truncated or corrupt"
    elif isinstance(error, tf.errors.NotFoundError):
        what = "a file of the SavedModel is missing"
    else:
        what = "the SavedModel does not load"
    return BrokenVersionError(f"{version_dir}: {what} ({type(error).__name__}: {_one_line(error)})")


class _Signature:
    """One signature of the session's graph as a callable over feeds in a fixed order."""

    def __init__(self, session, signature_def, name: str, version_dir: str):
        self.inputs = sorted(signature_def.inputs)
        self.outputs = sorted(signature_def.outputs)
        self._call = session.make_callable(
            [signature_def.outputs[o].name for o in self.outputs],
            [signature_def.inputs[i].name for i in self.inputs],
        )
        self.name = name

    def __call__(self, feeds: dict) -> dict:
        values = self._call(*[feeds[i] for i in self.inputs])
        return dict(zip(self.outputs, values, strict=True))


class SimilarItems:
    """One loaded version. Thread-safe: the session runs concurrent calls.

    Attributes:
      path: the version directory; directory: its name; version: its number (the directory
        name, or export_info.json's `version` for a directory not named by a number); info: its
        export_info.json; max_k; features: [{"name", "kind"}] in signature order;
        fingerprint: what identifies the loaded files (see `fingerprint`).

    Raises (constructor):
      BrokenVersionError: the directory is incomplete or does not load; one line naming it.
    """

    def __init__(self, version_dir: str):
        import scann  # noqa: F401, PLC0415  (registers the ScaNN ops before loading)
        from tensorflow.python.util import deprecation  # noqa: PLC0415  (quiet v1 loader)

        self.path = version_dir
        self.fingerprint = fingerprint(version_dir)
        self.info = read_info(version_dir)
        self.directory = name = os.path.basename(os.path.normpath(version_dir))
        if _VERSION_NAME.fullmatch(name):
            self.version = int(name)
        else:  # a version dir outside an export dir, under any name
            version = self.info.get("version", 0)
            self.version = version if isinstance(version, int) else 0
        self.max_k = int(self.info["max_k"])
        self.features = self.info["features"]
        _check_files(version_dir)
        graph = tf.Graph()
        self._session = tf.compat.v1.Session(graph=graph)
        try:
            with graph.as_default(), deprecation.silence():
                meta = tf.compat.v1.saved_model.loader.load(self._session, ["serve"], version_dir)
            self._signatures = self._bind(meta)
            # Runs the index once: a ScaNN searcher is rebuilt from its saved state on the first
            # search, and a broken state must fail here, not on a user's request.
            self._warm_up()
        except BrokenVersionError:
            self._session.close()
            raise
        except Exception as e:  # noqa: BLE001  (translated at the boundary, one line)
            self._session.close()
            raise _load_error(version_dir, e) from None
        graph.finalize()

    def _bind(self, meta) -> dict:
        names = {f["name"] for f in self.features}
        out = {}
        for name in SIGNATURES:
            if name not in meta.signature_def:
                raise BrokenVersionError(f"{self.path}: the SavedModel has no signature {name!r}")
            sig = meta.signature_def[name]
            expected = {"item_id", "k"} if name == "similar_items" else set(names)
            if name == "similar_items_by_features":
                expected = names | {"k"}
            if set(sig.inputs) != expected:
                raise BrokenVersionError(
                    f"{self.path}: signature {name!r} takes {sorted(sig.inputs)}, but "
                    f"{MARKER} describes {sorted(expected)}"
                )
            out[name] = _Signature(self._session, sig, name, self.path)
        return out

    def _warm_up(self) -> None:
        out = self._signatures["similar_items"]({"item_id": np.array([b""], object), "k": 1})
        if out["ids"].shape != (1, 1):
            raise BrokenVersionError(
                f"{self.path}: similar_items answered shape {out['ids'].shape}, expected (1, 1)"
            )

    def _check_k(self, k) -> int:
        if isinstance(k, bool) or not isinstance(k, int | np.integer):
            raise ValueError(f"k must be an integer, got {short_repr(k)}")
        if not 1 <= k <= self.max_k:
            raise ValueError(f"k must be between 1 and {self.max_k}, got {short_repr(k)}")
        return int(k)

    def similar_rows(self, item_ids, k: int) -> tuple[list[list[Neighbour]], np.ndarray]:
        """Neighbour rows and `found` [B] bool; rows of unknown ids are empty. No raising on them.

        One call of the index for the whole batch: what the HTTP server's batching uses.
        """
        k = self._check_k(k)
        ids = encode_ids(item_ids)
        if not ids:
            return [], np.zeros([0], bool)
        out = self._signatures["similar_items"]({"item_id": np.array(ids, object), "k": k})
        return neighbour_rows(out), out["found"]

    def similar(self, item_ids, k: int = 10) -> list[list[Neighbour]]:
        """Neighbours of corpus items, each list best first, the item itself excluded.

        Each neighbour is a `Neighbour` (id, score, source, source_score): `score` never rises
        down a list; `source_score` is the score of the ranking that listed the item.

        Raises:
          UnknownItemError: an id is not in the corpus (all are checked first).
          ValueError: bad ids or k.
        """
        rows, found = self.similar_rows(item_ids, k)
        if not found.all():
            raise UnknownItemError([i for i, ok in zip(item_ids, found, strict=True) if not ok])
        return rows

    def _feature_feeds(self, records: list[dict]) -> dict:
        if not isinstance(records, list) or not records:
            raise ValueError("records must be a non-empty list of feature dicts")
        known = {f["name"] for f in self.features}
        for i, record in enumerate(records):
            if not isinstance(record, dict):
                raise ValueError(
                    f"record {i}: expected an object of features, got {short_repr(record)}"
                )
            unknown = sorted(set(record) - known)
            if unknown:
                raise ValueError(
                    f"record {i}: unknown feature(s) {short_repr(unknown)}; known: {sorted(known)}"
                )
        columns = {}
        for f in self.features:
            name, kind = f["name"], f["kind"]
            values = [_check_value(r.get(name), kind, i, name) for i, r in enumerate(records)]
            if kind == schema_lib.DENSE:
                columns[name] = np.array(values, np.float32)
            else:
                width = max(1, max(len(v) for v in values))
                padded = np.full((len(values), width), b"", object)
                for row, v in enumerate(values):
                    padded[row, : len(v)] = v
                columns[name] = padded
        return columns

    def similar_by_features(self, records: list[dict], k: int = 10) -> list[list[Neighbour]]:
        """Neighbours of items described by raw features (e.g. a new item, cold start)."""
        k = self._check_k(k)
        feeds = self._feature_feeds(records)
        return neighbour_rows(self._signatures["similar_items_by_features"]({**feeds, "k": k}))

    def embed(self, records: list[dict]) -> np.ndarray:
        """Item-tower embeddings [len(records), d] of raw feature records."""
        return self._signatures["item_embedding"](self._feature_feeds(records))["embedding"]


def encode_ids(item_ids) -> list[bytes]:
    """Item ids as UTF-8 bytes; ValueError naming the first one that is not a string or text."""
    if isinstance(item_ids, str | bytes) or not isinstance(item_ids, list | tuple):
        raise ValueError("item_ids must be a list of strings")
    out = []
    for i, item in enumerate(item_ids):
        if not isinstance(item, str):
            raise ValueError(f"item_ids[{i}]: expected a string, got {short_repr(item)}")
        try:
            out.append(item.encode("utf-8"))
        except UnicodeEncodeError:
            raise ValueError(
                f"item_ids[{i}]: not valid Unicode text (lone surrogate) {short_repr(item)}"
            ) from None
    return out


def _check_value(value, kind, index, name):
    where = f"record {index}: feature {name!r}"
    if kind == schema_lib.DENSE:
        if value is None:
            return float("nan")
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{where}: expected a finite number, got {short_repr(value)}")
        try:
            number = float(value)
        except OverflowError:
            number = float("inf")
        if not math.isfinite(number):
            raise ValueError(f"{where}: expected a finite number, got {short_repr(value)}")
        return number
    if value is None:
        return []
    if kind == schema_lib.MULTI_HOT:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ValueError(f"{where}: expected a list of strings, got {short_repr(value)}")
        values = [v for v in value if v]
    elif not isinstance(value, str):
        raise ValueError(f"{where}: expected a string, got {short_repr(value)}")
    else:
        values = [value] if value else []
    try:
        return [v.encode("utf-8") for v in values]
    except UnicodeEncodeError:
        raise ValueError(f"{where}: not valid Unicode text (lone surrogate)") from None


def rank_scores(n: int) -> list[float]:
    """The list's own scores of n items: 1, then down by 1/n per rank to 1/n."""
    return [(n - rank) / n for rank in range(n)]


def neighbour_rows(out) -> list[list[Neighbour]]:
    """A signature's outputs (ids, scores, sources [B, k]) as rows of `Neighbour`s."""
    ids = out["ids"]
    sources = out.get("sources", np.full(np.shape(ids), b"", object))
    rows = []
    for row_ids, row_scores, row_sources in zip(ids, out["scores"], sources, strict=True):
        listed = [
            (i, s, src) for i, s, src in zip(row_ids, row_scores, row_sources, strict=True) if i
        ]
        rows.append(
            [
                Neighbour(i.decode(), score, src.decode(), float(s))
                for (i, s, src), score in zip(listed, rank_scores(len(listed)), strict=True)
            ]
        )
    return rows


def load_newest(export_dir: str, skip=None, failed: dict | None = None) -> SimilarItems:
    """The newest version under `export_dir` that loads.

    Newer versions that do not (incomplete, broken) are skipped with one log line saying why.

    Args:
      export_dir: the parent of the numbered version directories.
      skip: optional predicate on a version number: versions to pass over without trying.
      failed: optional dict that receives {version: its `fingerprint`} of each version that
        did not load (a follower retries them only when their files change).

    Raises:
      ValueError: no version loads (the message says why each one failed).
    """
    skipped = []
    for version in reversed(version_dirs(export_dir)):
        if skip is not None and skip(version):
            continue
        path = os.path.join(export_dir, str(version))
        fp = fingerprint(path)
        try:
            model = SimilarItems(path)
        except BrokenVersionError as e:
            skipped.append(str(e))
            if failed is not None:
                failed[version] = fp
            continue
        if skipped:
            logging.warning(
                "serving: loaded version %d; skipped newer: %s", model.version, "; ".join(skipped)
            )
        return model
    if skipped:
        raise ValueError(f"{export_dir}: no version loads: " + "; ".join(skipped))
    raise ValueError(f"{export_dir}: no SavedModel version found (python -m ssl_retrieval.export)")


def load(export_dir: str, failed: dict | None = None) -> SimilarItems:
    """Loads the newest version under `export_dir` that loads (or that version dir itself).

    `failed`: see `load_newest`.

    Raises:
      BrokenVersionError: `export_dir` is one version and it does not load (one line).
      ValueError: no version under `export_dir` loads.
    """
    if is_version_dir(export_dir):
        return SimilarItems(export_dir)
    return load_newest(export_dir, failed=failed)
