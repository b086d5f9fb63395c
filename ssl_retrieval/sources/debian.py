"""The Debian archive package index as an app-store-like item-to-item dataset.

Items are binary packages with their metadata; pairs are the package relationships a user acts on
when installing (Depends, Pre-Depends, Recommends, Suggests, Enhances): query = the package,
candidate = the package it names. On bookworm main amd64 this gives about 63k items and 295k
pairs with a power-law in-degree (libc6, python3, ... take a large share of all links).

Parsing is streaming, stanza by stanza. The job makes two passes over the index: the first writes
the items and collects the set of package names (about 63k short strings, the one thing held in
memory), the second writes the links whose target is a package of the corpus.

Malformed input is a counted skip, not a crash: a stanza with a line that is neither
`Field: value` nor an indented continuation, or without `Package:`, is skipped as a whole, and
the first few such stanzas are listed (file, line, field, reason) in the summary and README. With
`strict=True` the first one is an error instead.
"""

from __future__ import annotations

import bz2
import contextlib
import glob
import gzip
import io
import logging
import lzma
import os
import re
import subprocess
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field

from ssl_retrieval.sources import jsonl

DEFAULT_GLOB = "/var/lib/apt/lists/*_Packages*"
APT_HELPER = "/usr/lib/apt/apt-helper"
RELATION_FIELDS = ("Depends", "Pre-Depends", "Recommends", "Suggests", "Enhances")
MAX_LISTED_ERRORS = 20

FEATURES = [
    {"name": "item_id", "kind": "id"},
    {"name": "maintainer", "kind": "categorical", "min_count": 2},
    {"name": "section", "kind": "categorical"},
    {"name": "source", "kind": "categorical", "min_count": 2},
    {"name": "tags", "kind": "multi_hot"},
    {"name": "description", "kind": "multi_hot", "min_count": 2, "max_vocab": 20000},
    {"name": "homepage", "kind": "categorical", "min_count": 2},
    {"name": "installed_size", "kind": "dense", "transform": "log"},
]

STOPWORDS = frozenset(
    "a an and are as at be by for from in into is it its of on or the this to with".split()
)
_TOKEN = re.compile(r"[a-z0-9][a-z0-9+]*")
_RESTRICTIONS = re.compile(r"\([^)]*\)|\[[^\]]*\]|<[^>]*>")


class MalformedIndex(ValueError):
    """A stanza of the package index cannot be parsed (raised only in strict mode)."""


@dataclass
class Stanza:
    """One paragraph of the index: its fields and where it starts."""

    path: str
    line: int
    fields: dict[str, str]


@dataclass
class ParseReport:
    """Counts of what the parser skipped, with the first few examples."""

    malformed_stanzas: int = 0
    examples: list[dict] = field(default_factory=list)

    def add(self, path: str, line: int, field_name: str, reason: str) -> None:
        self.malformed_stanzas += 1
        if len(self.examples) < MAX_LISTED_ERRORS:
            self.examples.append(
                {"file": path, "line": line, "field": field_name, "reason": reason}
            )


def find_index_files(pattern: str = DEFAULT_GLOB) -> list[str]:
    """The package index files on this machine (sorted), ignoring apt's partial downloads."""
    return sorted(p for p in glob.glob(pattern) if os.path.isfile(p) and "/partial/" not in p)


@contextlib.contextmanager
def open_index(path: str) -> Iterator[io.TextIOBase]:
    """Opens a Packages file, plain or compressed (.gz, .xz, .bz2, .lz4), as text lines.

    Raises:
      ValueError: the file is missing or cannot be read or decompressed.
    """
    if not os.path.isfile(path):
        raise ValueError(f"{path}: package index not found")
    if not os.access(path, os.R_OK):
        raise ValueError(f"{path}: package index is not readable")
    if path.endswith(".lz4"):
        # The stdlib has no lz4; apt ships a decompressor that knows every format apt uses.
        if not os.access(APT_HELPER, os.X_OK):
            raise ValueError(f"{path}: .lz4 index needs {APT_HELPER} (package apt) to decompress")
        proc = subprocess.Popen(
            [APT_HELPER, "cat-file", path], stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        try:
            yield io.TextIOWrapper(proc.stdout, encoding="utf-8", errors="replace")
        finally:
            proc.stdout.close()
            stderr = proc.stderr.read().decode(errors="replace")
            if proc.wait() != 0:
                raise ValueError(f"{path}: cannot decompress: {stderr.strip()}")
        return
    openers = {".gz": gzip.open, ".xz": lzma.open, ".bz2": bz2.open}
    opener = openers.get(os.path.splitext(path)[1], open)
    try:
        with opener(path, "rt", encoding="utf-8", errors="replace") as f:
            yield f
    except (OSError, EOFError, lzma.LZMAError) as e:
        raise ValueError(f"{path}: cannot read package index ({e})") from None


def read_stanzas(path: str, report: ParseReport, strict: bool = False) -> Iterator[Stanza]:
    """Yields the well-formed stanzas of one index file, streaming.

    Args:
      path: a Packages file (plain or compressed).
      report: counts malformed stanzas (skipped) with examples.
      strict: raise `MalformedIndex` on the first malformed stanza instead of skipping it.
    """
    fields: dict[str, str] = {}
    start = 0
    last_field = None
    error = None  # (line, field, reason) of the first problem in the current stanza

    def finish():
        if not fields and error is None:
            return None
        problem = error
        if problem is None and "Package" not in fields:
            problem = (start, "Package", "stanza has no Package field")
        if problem is not None:
            line, name, reason = problem
            if strict:
                raise MalformedIndex(f"{path}:{line}: field {name!r}: {reason}")
            report.add(path, line, name, reason)
            return None
        return Stanza(path, start, dict(fields))

    with open_index(path) as f:
        for line_no, raw in enumerate(f, start=1):
            line = raw.rstrip("\n")
            if not line.strip():
                stanza = finish()
                if stanza is not None:
                    yield stanza
                fields, last_field, error = {}, None, None
                continue
            if not fields and last_field is None and error is None:
                start = line_no
            if line[0] in " \t":
                if last_field is None:
                    error = error or (line_no, "", "continuation line before any field")
                else:
                    fields[last_field] += "\n" + line.strip()
                continue
            name, sep, value = line.partition(":")
            if not sep or not name or " " in name:
                error = error or (line_no, name.strip()[:40], "line is not 'Field: value'")
                last_field = None
                continue
            last_field = name
            fields[name] = value.strip()
        stanza = finish()
        if stanza is not None:
            yield stanza


def item_from_stanza(fields: dict[str, str]) -> dict:
    """The item record (raw feature values) of one package stanza."""
    name = fields["Package"]
    item: dict = {"item_id": name}
    if fields.get("Maintainer"):
        item["maintainer"] = fields["Maintainer"]
    if fields.get("Section"):
        item["section"] = fields["Section"]
    # Source may carry a version ("foo (1.2-1)"); a package without it is its own source.
    item["source"] = fields.get("Source", name).split(" ")[0] or name
    tags = [t.strip() for t in fields.get("Tag", "").replace("\n", " ").split(",")]
    tags = list(dict.fromkeys(t for t in tags if t))
    if tags:
        item["tags"] = tags
    words = description_unigrams(fields.get("Description", ""))
    if words:
        item["description"] = words
    domain = homepage_domain(fields.get("Homepage", ""))
    if domain:
        item["homepage"] = domain
    size = fields.get("Installed-Size", "").strip()
    if size.isdigit():
        item["installed_size"] = float(size)
    return item


def description_unigrams(description: str) -> list[str]:
    """Lower-cased alphanumeric tokens of the short description (its first line), deduplicated."""
    first_line = description.split("\n", 1)[0].lower()
    tokens = (t for t in _TOKEN.findall(first_line) if t not in STOPWORDS)
    return list(dict.fromkeys(tokens))


def homepage_domain(url: str) -> str | None:
    """`https://www.Example.org:8080/x` -> `example.org`."""
    url = url.strip()
    if not url:
        return None
    if "://" not in url:
        url = "http://" + url
    host = (urllib.parse.urlsplit(url).hostname or "").lower()
    return host.removeprefix("www.") or None


def relation_targets(value: str) -> list[str]:
    """Package names of a relationship field: first alternative, no versions or qualifiers.

    `"a (>= 1), b:any | c, d [amd64] <!nocheck>"` -> `["a", "b", "d"]`.
    """
    names = []
    for clause in value.replace("\n", " ").split(","):
        first = _RESTRICTIONS.sub(" ", clause.split("|", 1)[0]).strip()
        if not first:
            continue
        name = first.split()[0].split(":", 1)[0]
        if name:
            names.append(name)
    return names


README_NOTES = """
Items are binary packages: `item_id` (package name), `maintainer`, `section`, `source` (source
package, the package itself when absent), `tags` (debtags), `description` (unigrams of the short
description), `homepage` (domain), `installed_size` (KiB). Pairs link a package (query) to each
package it Depends, Pre-Depends, Recommends, Suggests or Enhances (candidate): the first
alternative of `a | b`, versions and architecture qualifiers stripped, links to names outside the
corpus (virtual packages) and self-links dropped, duplicates merged. Stanzas that cannot be
parsed are skipped and counted above (`malformed_stanzas_skipped`, first examples listed).
"""


def build(
    output_dir: str,
    packages_files: list[str] | None = None,
    num_shards: int = 1,
    file_format: str = jsonl.JSONL,
    overwrite: bool = False,
    strict: bool = False,
    log_every: int = 20000,
) -> dict:
    """Writes the Debian dataset (items, pairs, schema, README) into `output_dir`.

    Args:
      packages_files: index files; default: every `/var/lib/apt/lists/*_Packages*`.
      strict: fail on the first malformed stanza instead of skipping it.
      log_every: progress line every this many stanzas.
      output_dir, num_shards, file_format, overwrite: as for every source (`jsonl.write_dataset`).

    Returns:
      The summary dict (also written to `summary.json` and README.md).

    Raises:
      ValueError: no index found, an unreadable file, or (strict) a malformed stanza.
    """
    jsonl.check_format(file_format)
    files = list(packages_files) if packages_files else find_index_files()
    if not files:
        raise ValueError(
            f"no Debian package index found ({DEFAULT_GLOB}); run 'apt-get update' or pass "
            "--packages_file=PATH"
        )
    for path in files:
        if not os.path.isfile(path):
            raise ValueError(f"{path}: package index not found")
    report = ParseReport()
    names: set[str] = set()
    duplicates = 0
    pair_stats = {"self_links": 0, "outside_corpus": 0, "duplicate_links": 0}

    def items():
        nonlocal duplicates
        seen = 0
        for path in files:
            for stanza in read_stanzas(path, report, strict):
                seen += 1
                if log_every and seen % log_every == 0:
                    logging.info("debian: %d stanzas read (items pass)", seen)
                name = stanza.fields["Package"]
                if name in names:
                    duplicates += 1
                    continue
                names.add(name)
                yield item_from_stanza(stanza.fields)

    def pairs():  # after items(): `names` is the whole corpus
        written: set[str] = set()
        for path in files:
            # The second pass re-parses the same text: malformed stanzas were counted once.
            for stanza in read_stanzas(path, ParseReport(), strict=False):
                name = stanza.fields["Package"]
                if name in written:
                    continue
                written.add(name)
                targets: dict[str, None] = {}
                for field_name in RELATION_FIELDS:
                    for target in relation_targets(stanza.fields.get(field_name, "")):
                        if target == name:
                            pair_stats["self_links"] += 1
                        elif target not in names:
                            pair_stats["outside_corpus"] += 1
                        elif target in targets:
                            pair_stats["duplicate_links"] += 1
                        else:
                            targets[target] = None
                for target in targets:
                    yield {"query_id": name, "candidate_id": target}

    def describe(num_items, num_pairs):
        summary = {
            "source": "debian",
            "index_files": files,
            "items": num_items,
            "pairs": num_pairs,
            "duplicate_packages_skipped": duplicates,
            "malformed_stanzas_skipped": report.malformed_stanzas,
            "links_dropped_self": pair_stats["self_links"],
            "links_dropped_outside_corpus": pair_stats["outside_corpus"],
            "links_merged_duplicates": pair_stats["duplicate_links"],
            "malformed_examples": report.examples,
        }
        return "Debian package index as an item-to-item dataset", summary, README_NOTES

    summary = jsonl.write_dataset(
        output_dir, FEATURES, items(), pairs(), describe, file_format, num_shards, overwrite
    )
    logging.info("debian: %d items, %d pairs -> %s", summary["items"], summary["pairs"], output_dir)
    return summary
