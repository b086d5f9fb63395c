"""The item catalogue an export carries for people to look at: feature values and popularity.

The SavedModel holds the item ids and their embeddings, not what the items *are*. The browser page
(`ssl_retrieval.serving.page`) shows, for every neighbour, its feature values and how often it was a
training candidate, so one sees at a glance whether a list is made of hubs or of look-alikes.
Export writes that into the version directory, beside the model:

  <version>/assets.extra/item_catalog.jsonl.gz     gzip, one line per corpus item, in corpus order:
      <item id as a JSON string> TAB {"features": {name: value}, "train_pairs": n,
                                      "popularity": "head" | "tail" | "cold"}

Feature values are the raw ones of `items-*.tfrecord` (strings, lists of strings, numbers; a
missing value is an absent key; the id feature is the line's key, not repeated). `train_pairs` is
the item's count in `stats/candidate_counts.tsv` (training pairs with the item as candidate);
`popularity` is `head` for the data dir's head set (`stats/head_items.txt`, the top 10% of
training candidates), `tail` for the other training candidates and `cold` for items never a
training candidate. Export streams the lines out; the server keeps them as one bytes buffer plus
the ids sorted once (the id comes first on the line), and answers ids and prefixes by binary
search, without parsing a line before it is asked for.
"""

from __future__ import annotations

import bisect
import gzip
import io
import json
import logging
import os
import zlib

import numpy as np

from ssl_retrieval import schema as schema_lib
from ssl_retrieval.data_dir import DataDir
from ssl_retrieval.serving import files

PATH = os.path.join("assets.extra", "item_catalog.jsonl.gz")
HEAD, TAIL, COLD = "head", "tail", "cold"


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _key(quoted: bytes, line: int) -> bytes:
    """The UTF-8 bytes of a line's id, a JSON string; CatalogError otherwise."""
    # Ids without escapes (nearly all) are the bytes between the quotes.
    if len(quoted) >= 2 and quoted[:1] == quoted[-1:] == b'"' and b"\\" not in quoted:
        return quoted[1:-1]
    try:
        item_id = json.loads(quoted)
    except ValueError:
        item_id = None
    if not isinstance(item_id, str):
        raise CatalogError(f"{PATH}: line {line} does not start with an item id in JSON quotes")
    try:
        return item_id.encode()
    except UnicodeEncodeError:  # a lone surrogate escaped in JSON
        raise CatalogError(f"{PATH}: line {line}: the item id is not valid Unicode") from None


def _read_counts(data_dir: DataDir) -> tuple[dict[str, int], set[str]]:
    ids, counts = data_dir.candidate_counts
    return dict(zip(ids, (int(c) for c in counts), strict=True)), set(
        data_dir.slice_ids("head_items")
    )


def _records(data_dir: str, schema: schema_lib.Schema, batch_size: int = 4096):
    """(item id, {feature: raw value}) for every corpus item, in file order."""
    from ssl_retrieval import data as data_lib  # noqa: PLC0415  (imports TensorFlow)

    id_name = schema.id_feature.name
    for batch in data_lib.items_dataset(data_dir, batch_size, schema):
        columns = {}
        for f in schema.features:
            value = batch[f.name]
            if f.kind == schema_lib.DENSE:  # float32 in the records: its shortest repr
                columns[f.name] = [float(str(v)) for v in value.numpy()]
            else:  # ragged strings: decode the flat values once, then cut rows by row_splits
                flat = [v.decode() for v in value.flat_values.numpy().tolist()]
                splits = value.row_splits.numpy().tolist()
                columns[f.name] = [flat[a:b] for a, b in zip(splits, splits[1:], strict=False)]
        for i, (item_id,) in enumerate(columns[id_name]):
            record = {}
            for f in schema.features:
                value = columns[f.name][i]
                if f.name == id_name or value == [] or value != value:  # NaN: missing dense
                    continue
                record[f.name] = value[0] if f.kind == schema_lib.CATEGORICAL else value
            yield item_id, record


def write(data_dir: str | DataDir, version_dir: str) -> dict:
    """Writes `<version_dir>/assets.extra/item_catalog.jsonl.gz` from a preprocessed data dir.

    Args:
      data_dir: the preprocessed data dir (items-*.tfrecord, stats.json and its stats files).
      version_dir: the export version directory (or the temporary one it is renamed from).

    Returns:
      What export_info.json records of it: {"path", "num_items", "bytes", "uncompressed_bytes"}.
    """
    data_dir = DataDir.of(data_dir)
    schema = data_dir.schema
    counts, head = _read_counts(data_dir)
    path = os.path.join(version_dir, PATH)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    num_items = uncompressed = 0
    chunk = []
    # mtime=0: the same data gives the same bytes; level 6 is zlib's default speed/size trade.
    with (
        open(path, "wb") as f,
        gzip.GzipFile(fileobj=f, mode="wb", mtime=0, compresslevel=6) as out,
    ):
        for item_id, features in _records(data_dir, schema):
            n = counts.get(item_id, 0)
            popularity = HEAD if item_id in head else (TAIL if n > 0 else COLD)
            body = {"features": features, "train_pairs": n, "popularity": popularity}
            key = json.dumps(item_id, ensure_ascii=False)
            chunk.append(f"{key}\t{json.dumps(body, ensure_ascii=False)}\n")
            num_items += 1
            if len(chunk) == 4096:
                data = "".join(chunk).encode()
                out.write(data)
                uncompressed += len(data)
                chunk = []
        data = "".join(chunk).encode()
        out.write(data)
        uncompressed += len(data)
    return {
        "path": PATH,
        "num_items": num_items,
        "bytes": os.path.getsize(path),
        "uncompressed_bytes": uncompressed,
    }


class CatalogError(ValueError):
    """A catalogue the server will not use; the message names the file (relative to its
    version dir, so that it can be shown on the page) and what is wrong."""


def _read_gzip(version_dir: str, max_bytes: int) -> bytes | None:
    """The decompressed catalogue (at most `max_bytes`), None if the version has none."""
    try:
        compressed = files.read_regular(os.path.join(version_dir, PATH), max_bytes + (1 << 20))
    except FileNotFoundError:
        return None
    except files.UnreadableFile as e:
        raise CatalogError(f"{PATH} {e.reason}") from None
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(compressed)) as f:
            raw = f.read(max_bytes + 1)  # bounded: a small file may decompress to gigabytes
    except (OSError, EOFError, zlib.error) as e:  # BadGzipFile is an OSError
        raise CatalogError(f"{PATH} is not a valid gzip file ({e})") from None
    if len(raw) > max_bytes:
        raise CatalogError(f"{PATH} decompresses to more than {max_bytes} bytes")
    return raw


class Catalog:
    """A loaded catalogue: one buffer of lines, and the ids sorted (UTF-8 byte order) with where
    each one's line is."""

    def __init__(self, raw: bytes):
        """Raises CatalogError naming the first malformed line (1-based)."""
        if raw and not raw.endswith(b"\n"):
            raise CatalogError(f"{PATH}: the last line has no newline (a truncated file?)")
        ends = np.flatnonzero(np.frombuffer(raw, np.uint8) == ord("\n"))
        starts = np.concatenate([[0], ends[:-1] + 1]).astype(np.int64)[: len(ends)]
        tabs, keys = [], []
        for line, (s, e) in enumerate(zip(starts.tolist(), ends.tolist(), strict=True), 1):
            t = raw.find(b"\t", s, e)
            if t < 0:
                raise CatalogError(f"{PATH}: line {line} has no TAB after the item id")
            tabs.append(t)
            keys.append(_key(raw[s:t], line))
        order = sorted(range(len(keys)), key=keys.__getitem__)
        self._raw = raw
        self._keys = [keys[i] for i in order]
        self._tabs = np.asarray(tabs, np.int64)[order]
        self._ends = ends[order]
        self._lines = np.asarray(order, np.int64) + 1
        self.num_items = len(keys)
        self.bytes = len(raw)
        self.bad_line: int | None = None  # the first line whose entry was not valid JSON

    @classmethod
    def load(cls, version_dir: str, info: dict | None = None, max_bytes: int = 1 << 30):
        """The catalogue of an export version, or None if it has none (older exports).

        Args:
          version_dir: the version directory.
          info: its export_info.json: a catalogue must hold one line per corpus item
            (`num_items`) and at most the `uncompressed_bytes` recorded when it was written.
          max_bytes: the most bytes read, compressed or not (`--max_catalog_bytes`).

        Raises:
          CatalogError: it is not a regular file, unreadable, too large, not gzip, or a line is
            malformed (one line naming the cause).
        """
        info = info or {}
        recorded = (info.get("item_catalog") or {}).get("uncompressed_bytes")
        limit = min(max_bytes, recorded) if _is_count(recorded) else max_bytes
        raw = _read_gzip(version_dir, limit)
        if raw is None:
            return None
        expected = info.get("num_items")
        lines = raw.count(b"\n")
        if _is_count(expected) and lines != expected:
            raise CatalogError(f"{PATH} holds {lines} lines for {expected} corpus items")
        return cls(raw)

    def get(self, item_id: str) -> dict | None:
        """{"features", "train_pairs", "popularity"} of an item, None if it is not in the corpus
        (or its line is not valid JSON: `bad_line` then says which one)."""
        key = item_id.encode()
        i = bisect.bisect_left(self._keys, key)
        if i == len(self._keys) or self._keys[i] != key:
            return None
        try:
            entry = json.loads(self._raw[self._tabs[i] + 1 : self._ends[i]])
        except (ValueError, RecursionError):
            entry = None
        if not isinstance(entry, dict):
            if self.bad_line is None:
                self.bad_line = int(self._lines[i])
                logging.warning(
                    "item catalogue: line %d is not a JSON object; its item is shown without "
                    "features (other bad lines are not logged)",
                    self.bad_line,
                )
            return None
        return entry

    def prefix(self, prefix: str, limit: int) -> list[str]:
        """Up to `limit` ids starting with `prefix`, in byte order (binary search, then a scan)."""
        key = prefix.encode()
        i = bisect.bisect_left(self._keys, key)
        out = []
        while i < len(self._keys) and len(out) < limit and self._keys[i].startswith(key):
            out.append(self._keys[i].decode())
            i += 1
        return out
