"""The Debian source on a hand-written index and, when present, on the machine's real one."""

import json
import os

import pytest

from ssl_retrieval import schema as schema_lib
from ssl_retrieval.sources import debian

DATA = os.path.join(os.path.dirname(__file__), "data")
SMALL = os.path.join(DATA, "Packages.small")


def read_jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


@pytest.mark.parametrize("index", ["Packages.small", "Packages.small.gz"])
def test_small_index(tmp_path, index):
    out = str(tmp_path / "raw")
    summary = debian.build(out, packages_files=[os.path.join(DATA, index)])
    items = {i["item_id"]: i for i in read_jsonl(os.path.join(out, "items.jsonl"))}
    assert sorted(items) == ["editor", "editor-common", "libc6", "libtinfo6", "spell"]
    editor = items["editor"]
    assert editor["tags"] == [
        "interface::text-mode",
        "role::program",
        "use::editing",
        "works-with::text",
    ]
    assert editor["description"] == ["small", "text", "editor", "terminal"]
    assert editor["homepage"] == "editor.example.org"
    assert editor["installed_size"] == 2048.0
    assert editor["source"] == "editor"
    assert items["editor-common"]["source"] == "editor"  # version stripped
    assert "installed_size" not in items["libtinfo6"]
    assert "tags" not in items["libc6"]

    pairs = {
        (p["query_id"], p["candidate_id"]) for p in read_jsonl(os.path.join(out, "pairs.jsonl"))
    }
    assert pairs == {
        ("editor", "libc6"),
        ("editor", "libtinfo6"),  # :any stripped
        ("editor", "editor-common"),  # first alternative, version constraint stripped
        ("editor", "spell"),  # [arch] and <profile> stripped
        ("editor-common", "editor"),  # Suggests + Enhances merged
        ("libtinfo6", "libc6"),  # Pre-Depends + Depends merged
    }
    assert summary["items"] == 5 and summary["pairs"] == 6
    assert summary["duplicate_packages_skipped"] == 1
    assert summary["malformed_stanzas_skipped"] == 2
    assert summary["links_dropped_self"] == 2
    assert summary["links_dropped_outside_corpus"] == 2
    assert summary["links_merged_duplicates"] == 2
    reasons = {(e["line"], e["field"]) for e in summary["malformed_examples"]}
    assert (48, "this line is broken") in reasons
    assert any(field == "Package" for _, field in reasons)
    schema = schema_lib.load(os.path.join(out, "schema.json"))
    assert schema.id_feature.name == "item_id"
    assert set(schema.names) >= {"tags", "description", "installed_size", "maintainer"}
    readme = open(os.path.join(out, "README.md")).read()
    assert "malformed_stanzas_skipped: 2" in readme


@pytest.mark.parametrize("file_format", ["parquet", "csv"])
def test_parquet_and_csv_hold_the_same_records(tmp_path, read_raw, file_format):
    debian.build(str(tmp_path / "jsonl"), packages_files=[SMALL])
    debian.build(str(tmp_path / file_format), packages_files=[SMALL], file_format=file_format)
    assert f"items.{file_format}" in os.listdir(tmp_path / file_format)
    items, pairs = read_raw(str(tmp_path / file_format))
    assert (items, pairs) == read_raw(str(tmp_path / "jsonl"))
    assert len(items) == 5 and pairs


def test_strict_mode_names_file_line_and_field(tmp_path):
    with pytest.raises(
        debian.MalformedIndex, match=r"Packages.small:48: field 'this line is broken'"
    ):
        debian.build(str(tmp_path / "raw"), packages_files=[SMALL], strict=True)
    assert not os.path.exists(tmp_path / "raw")


def test_missing_index_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="nope_Packages: package index not found"):
        debian.build(str(tmp_path / "raw"), packages_files=[str(tmp_path / "nope_Packages")])


def test_no_index_on_machine(tmp_path, monkeypatch):
    monkeypatch.setattr(debian, "find_index_files", lambda pattern=None: [])
    with pytest.raises(ValueError, match="no Debian package index found.*apt-get update"):
        debian.build(str(tmp_path / "raw"))


def test_corrupt_compressed_index(tmp_path):
    bad = tmp_path / "x_Packages.gz"
    bad.write_bytes(b"this is not gzip")
    with pytest.raises(ValueError, match="x_Packages.gz: cannot read package index"):
        debian.build(str(tmp_path / "raw"), packages_files=[str(bad)])
    assert not os.path.exists(tmp_path / "raw")


def test_relation_parsing():
    assert debian.relation_targets("a (>= 1), b:any | c, d [amd64] <!nocheck>") == ["a", "b", "d"]
    assert debian.relation_targets("") == []
    assert debian.homepage_domain("example.org/x") == "example.org"
    assert debian.homepage_domain("") is None


@pytest.mark.slow
def test_real_index_counts(tmp_path):
    files = debian.find_index_files()
    if not any("bookworm_main_binary-amd64" in f for f in files):
        pytest.skip("no bookworm main amd64 index on this machine (run apt-get update)")
    summary = debian.build(str(tmp_path / "raw"), packages_files=files)
    assert abs(summary["items"] - 63436) <= 0.02 * 63436
    assert abs(summary["pairs"] - 294587) <= 0.02 * 294587
