"""The page's endpoints and the item catalogue an export carries (no browser: test_page_browser)."""

import contextlib
import gzip
import json
import os
import pathlib
import shutil
import tempfile

import pytest
from fastapi.testclient import TestClient

from ssl_retrieval import testing
from ssl_retrieval.serving import api, http_app, item_catalog, page

RECORD = {"brand": "brand3", "category": "cat1", "tags": ["tag3_1", "tag3_2"], "price": 9.5}


def version_dir(export_dir):
    return api.resolve(export_dir)


def test_catalog_holds_every_item_with_its_features_and_training_popularity(two_exports):
    path = version_dir(two_exports["served"])
    info = json.load(open(os.path.join(path, "export_info.json")))
    assert info["item_catalog"]["num_items"] == 240
    assert info["item_catalog"]["bytes"] == os.path.getsize(os.path.join(path, item_catalog.PATH))
    catalog = item_catalog.Catalog.load(path)
    assert catalog.num_items == 240

    data_dir = two_exports["data_dir"]
    counts = dict(
        line.rstrip("\n").split("\t") for line in open(f"{data_dir}/stats/candidate_counts.tsv")
    )
    head = {line.strip() for line in open(f"{data_dir}/stats/head_items.txt")}
    seen = {"head": 0, "tail": 0, "cold": 0}
    for i in range(240):
        item_id = f"item{i:05d}"
        entry = catalog.get(item_id)
        # testing.make_data_dir: item i is in cluster i % 12, its category cat<cluster // 2>.
        assert entry["features"]["category"] == f"cat{(i % 12) // 2}"
        assert "item_id" not in entry["features"]
        for tag in entry["features"].get("tags", []):
            assert tag.startswith(f"tag{i % 12}_")
        assert entry["train_pairs"] == int(counts.get(item_id, 0))
        expected = "head" if item_id in head else ("tail" if item_id in counts else "cold")
        assert entry["popularity"] == expected
        seen[expected] += 1
    assert all(seen.values()), seen
    prices = [catalog.get(f"item{i:05d}")["features"].get("price") for i in range(240)]
    assert any(p is None for p in prices) and all(p is None or p > 0 for p in prices)
    assert catalog.get("item99999") is None


def test_catalog_prefix_search_is_bounded_and_handles_any_id():
    ids = ["vim", "vim-gtk3", "vim-tiny", "vimb", "vi", "écrit", 'quo"te', "tab\tid", "zsh"]
    lines = [
        json.dumps(i, ensure_ascii=False) + "\t" + json.dumps({"train_pairs": n}) + "\n"
        for n, i in enumerate(ids)
    ]
    catalog = item_catalog.Catalog("".join(lines).encode())
    assert catalog.prefix("vim", 10) == ["vim", "vim-gtk3", "vim-tiny", "vimb"]
    assert catalog.prefix("vim", 2) == ["vim", "vim-gtk3"]
    assert catalog.prefix("vi", 10)[0] == "vi"
    assert catalog.prefix("x", 10) == []
    assert catalog.prefix("é", 10) == ["écrit"]
    for n, i in enumerate(ids):
        assert catalog.get(i) == {"train_pairs": n}
    assert catalog.get("vim-") is None and catalog.get("") is None
    assert item_catalog.Catalog(b"").prefix("", 5) == []


@pytest.fixture(scope="module")
def client(two_exports):
    app = http_app.create_app(
        two_exports["served"], poll_seconds=0, compare_export_dir=two_exports["compare"]
    )
    with TestClient(app) as c:
        yield c


def test_page_and_its_assets_are_served(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "/page/static/page.js" in page.text and "http" not in page.text.replace("http_", "")
    for name, kind in (("page.js", "javascript"), ("page.css", "css")):
        asset = client.get(f"/page/static/{name}")
        assert asset.status_code == 200 and kind in asset.headers["content-type"]
    assert client.get("/page/static/../http_app.py").status_code == 404
    assert client.get("/page/static/index.py").status_code == 404


def test_info_says_what_is_served(client, two_exports):
    info = client.get("/page/info").json()
    for name in ("served", "compare"):
        summary = info[name]
        assert summary["num_items"] == 240 and summary["version"] == 30
        assert summary["index"] == "scann" and summary["index_params"]["num_leaves"] > 0
        assert 0.95 <= summary["recall_at_10_vs_brute_force"] <= 1
        assert summary["catalog"]["num_items"] == 240
        assert summary["created"].endswith("Z")
    assert info["served"]["method"] == "cfm" and info["compare"]["method"] == "baseline"
    assert [f["name"] for f in info["served"]["features"]][:2] == ["item_id", "brand"]


def test_prefix_completion(client):
    body = client.get("/page/items?prefix=item0001").json()
    assert body["items"] == [f"item0001{i}" for i in range(10)]
    assert len(client.get("/page/items?prefix=item&limit=50").json()["items"]) == 50
    assert client.get("/page/items?prefix=nothing").json()["items"] == []
    for bad in ("limit=0", "limit=51", "limit=ten", "prefix=" + "x" * 201):
        response = client.get(f"/page/items?{bad}")
        assert response.status_code == 400 and response.json()["error"], bad


def test_neighbours_are_the_python_apis_with_features_and_popularity(client, two_exports):
    for name in ("served", "compare"):
        expected = api.load(two_exports[name]).similar(["item00003"], k=7)[0]
        body = client.get(f"/page/similar/item00003?k=7&model={name}").json()
        assert body["model"] == name and body["item_id"] == "item00003"
        assert body["item"]["features"]["category"] == "cat1"
        got = [(n["id"], n["score"], n["source"], n["source_score"]) for n in body["neighbors"]]
        assert [g[0] for g in got] == [n.id for n in expected]
        assert [g[1] for g in got] == pytest.approx([n.score for n in expected], abs=1e-6)
        assert [g[2] for g in got] == [n.source for n in expected]
        assert [g[3] for g in got] == pytest.approx([n.source_score for n in expected], abs=1e-6)
        assert [n["rank"] for n in body["neighbors"]] == list(range(1, 8))
        assert all(n["popularity"] in ("head", "tail", "cold") for n in body["neighbors"])
        assert all("category" in n["features"] for n in body["neighbors"])


def test_bad_input_gets_the_apis_answers(client):
    for page_url, api_url in (
        ("/page/similar/nope", "/v1/similar/nope"),
        ("/page/similar/item00000?k=0", "/v1/similar/item00000?k=0"),
        ("/page/similar/item00000?k=ten", "/v1/similar/item00000?k=ten"),
        ("/page/similar/item00000?k=21", "/v1/similar/item00000?k=21"),
    ):
        page, api = client.get(page_url), client.get(api_url)
        assert (page.status_code, page.json()) == (api.status_code, api.json()), page_url
    assert client.get("/page/similar/nope").json() == {"error": "unknown item id(s): 'nope'"}
    assert client.get("/page/similar/item00000?model=other").status_code == 400
    bad = {"tags": "tag3_1"}
    page = client.post("/page/similar_by_features", json={"features": bad, "k": 3})
    api = client.post(
        "/v1/models/ssl_retrieval:predict",
        json={"signature_name": "similar_items_by_features", "instances": [bad], "k": 3},
    )
    assert page.status_code == api.status_code == 400 and page.json() == api.json()
    assert client.post("/page/similar_by_features", content=b"{").status_code == 400
    for odd in (b'{"features": ' + b"[" * 5_000, b'{"k": ' + b"9" * 5000 + b"}"):
        answer = client.post("/page/similar_by_features", content=odd)
        assert answer.status_code == 400 and "not valid JSON" in answer.json()["error"]
    assert client.post("/page/similar_by_features", json={"k": 3}).status_code == 400


def test_new_item_calls_similar_items_by_features(client, two_exports):
    expected = api.load(two_exports["served"]).similar_by_features([RECORD], k=5)[0]
    body = client.post("/page/similar_by_features", json={"features": RECORD, "k": 5}).json()
    assert [n["id"] for n in body["neighbors"]] == [n.id for n in expected]
    assert body["item"] == {"features": RECORD} and body["item_id"] is None
    compare = client.post(
        "/page/similar_by_features", json={"features": RECORD, "k": 5, "model": "compare"}
    ).json()
    assert len(compare["neighbors"]) == 5 and compare["model"] == "compare"


def test_without_compare_export_or_catalogue(two_exports, tmp_path):
    # An export written before the catalogue existed: neighbours without features, no completion.
    export_dir = tmp_path / "old_export"
    shutil.copytree(two_exports["served"], export_dir)
    os.remove(os.path.join(version_dir(str(export_dir)), item_catalog.PATH))
    app = http_app.create_app(str(export_dir), poll_seconds=0)
    with TestClient(app) as c:
        info = c.get("/page/info").json()
        assert info["compare"] is None and info["served"]["catalog"] is None
        assert c.get("/page/items?prefix=item").json() == {
            "prefix": "item",
            "items": [],
            "catalog": False,
        }
        body = c.get("/page/similar/item00003?k=3").json()
        assert (
            body["item"] is None
            and [set(n) for n in body["neighbors"]]
            == [{"rank", "id", "score", "source", "source_score"}] * 3
        )
        missing = c.get("/page/similar/item00003?model=compare")
        assert missing.status_code == 404 and "--compare_export_dir" in missing.json()["error"]


def test_catalogue_file_is_gzip_json_lines_keyed_by_id(two_exports):
    path = os.path.join(version_dir(two_exports["served"]), item_catalog.PATH)
    with gzip.open(path, "rt", encoding="utf-8") as f:
        first = f.readline()
    key, _, body = first.rstrip("\n").partition("\t")
    assert json.loads(key) == "item00000"
    assert set(json.loads(body)) == {"features", "train_pairs", "popularity"}


# --- Issue 35: corrupt catalogues, odd ids, parameters, limits ------------------------------------


def corrupt_catalogue(path, how):
    """Damages the catalogue file at `path` as an operator or a disk might."""
    if how == "garbled":
        path.write_bytes(b"\x1f\x8b" + bytes(range(256)) * 4)
    elif how == "not gzip":
        path.write_bytes(b"item00000\t{}\n")
    elif how == "a line without TAB":
        with gzip.open(path, "rt", encoding="utf-8") as f:
            lines = f.readlines()
        lines[7] = lines[7].replace("\t", " ")
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.writelines(lines)
    elif how == "a bomb":  # 64 MB of newlines in 64 kB: over the recorded size
        with gzip.open(path, "wb", compresslevel=9) as f:
            for _ in range(64):
                f.write(b"\n" * (1 << 20))
    elif how == "a FIFO":
        path.unlink()
        os.mkfifo(path)
    elif how == "mode 000":
        os.chmod(path, 0)


CORRUPT = [
    ("garbled", "is not a valid gzip file"),
    ("not gzip", "is not a valid gzip file"),
    ("a line without TAB", "line 8 has no TAB"),
    ("a bomb", "decompresses to more than"),
    ("a FIFO", "is a FIFO, not a regular file"),
    ("mode 000", "cannot be read (Permission denied)"),
]


@pytest.mark.parametrize("how, cause", CORRUPT)
def test_a_corrupt_catalogue_leaves_the_page_answering(two_exports, tmp_path, caplog, how, cause):
    """Issue 35, item 7: ids and scores without features, the cause said once (on /page/info
    and in one log line), the failure remembered rather than re-read on each request."""
    export_dir = tmp_path / "export"
    shutil.copytree(two_exports["served"], export_dir)
    corrupt_catalogue(export_dir / "30" / item_catalog.PATH, how)
    app = http_app.create_app(str(export_dir), poll_seconds=0)
    expected = api.load(two_exports["served"]).similar(["item00003"], k=4)[0]
    if how == "mode 000":  # as a server not run by root; pytest's tmp_path is root's alone
        shared = pathlib.Path(tempfile.mkdtemp(prefix="catalogue-"))
        os.chmod(shared, 0o755)
        export_dir = shared / "export"
        shutil.copytree(tmp_path / "export", export_dir, copy_function=shutil.copy)
        app = http_app.create_app(str(export_dir), poll_seconds=0)
    unprivileged = testing.unprivileged() if how == "mode 000" else contextlib.nullcontext()
    with caplog.at_level("WARNING"), unprivileged, TestClient(app) as c:
        for _ in range(3):
            info = c.get("/page/info")
            assert info.status_code == 200 and info.json()["served"]["catalog"] is None
            body = c.get("/page/similar/item00003?k=4").json()
            assert [n["id"] for n in body["neighbors"]] == [n.id for n in expected]
            assert body["item"] is None and "features" not in body["neighbors"][0]
            assert c.get("/page/items?prefix=item").json()["catalog"] is False
    error = info.json()["served"]["catalog_error"]
    assert cause in error and error.startswith(item_catalog.PATH) and str(tmp_path) not in error
    lines = [r.getMessage() for r in caplog.records if "item catalogue" in r.getMessage()]
    assert len(lines) == 1 and cause in lines[0] and str(export_dir / "30") in lines[0]
    if how == "mode 000":
        shutil.rmtree(export_dir.parent)


def test_a_catalogue_is_checked_against_export_info(two_exports):
    path = version_dir(two_exports["served"])
    info = json.load(open(os.path.join(path, "export_info.json")))
    assert item_catalog.Catalog.load(path, info).num_items == 240
    with pytest.raises(item_catalog.CatalogError, match="holds 240 lines for 241 corpus items"):
        item_catalog.Catalog.load(path, {**info, "num_items": 241})
    with pytest.raises(item_catalog.CatalogError, match="decompresses to more than 1000 bytes"):
        item_catalog.Catalog.load(path, info, max_bytes=1000)
    for raw, message in [
        (b'"a"\t{}\n"b"\t{}', "the last line has no newline"),
        (b'"a"\t{}\nb\t{}\n', "line 2 does not start with an item id in JSON quotes"),
        (b'"\\ud800"\t{}\n', "line 1: the item id is not valid Unicode"),
    ]:
        with pytest.raises(item_catalog.CatalogError, match=message):
            item_catalog.Catalog(raw)
    catalog = item_catalog.Catalog(b'"a"\t{"train_pairs": 1}\n"b"\t{not json\n')
    assert catalog.get("a") == {"train_pairs": 1} and catalog.get("b") is None
    assert catalog.bad_line == 2


def test_any_id_reaches_the_page_by_query_or_body(client):
    """Issue 35, item 9: `.`, `..` and ids too long for a URL are sent as ?id= or in a body,
    where no browser rewrites them and no URL limit applies."""
    via_path = client.get("/page/similar/item00003?k=4").json()
    assert client.get("/page/similar?id=item00003&k=4").json() == via_path
    posted = client.post("/page/similar", json={"item_id": "item00003", "k": 4})
    assert posted.status_code == 200 and posted.json() == via_path
    for item_id in (".", "..", "a/../b", "x" * 20_000):
        for response in (
            client.get("/page/similar", params={"id": item_id}),
            client.post("/page/similar", json={"item_id": item_id}),
        ):
            assert response.status_code == 404, (item_id[:20], response.text[:200])
            assert response.json()["error"] == f"unknown item id(s): {api.short_repr(item_id)}"
    for bad in ({"k": 3}, {"item_id": 5}, {"item_id": "item00003", "model": ["x"]}):
        response = client.post("/page/similar", json=bad)
        assert response.status_code == 400 and response.json()["error"], bad
    assert client.get("/page/similar").status_code == 400
    script = client.get("/page/static/page.js").text
    assert '"/page/similar"' in script and "/page/similar/${" not in script


def test_every_page_parameter_gets_the_apis_400(client):
    """Issue 35, item 10: `limit=²` and 5,000 digits gave 500; they get the rules of `k`."""
    for limit in ("%C2%B2", "9" * 5000, "-1", "1e3", "", "%EF%BC%93"):
        response = client.get(f"/page/items?prefix=item&limit={limit}")
        assert response.status_code == 400, (limit[:20], response.text[:200])
        assert response.json()["error"].startswith("limit must be")
    assert client.get("/page/items?prefix=item&limit=%2B3").json()["items"] == [
        "item00000",
        "item00001",
        "item00002",
    ]
    for query in ("k=%C2%B2", "k=" + "9" * 5000, "model=" + "m" * 5000):
        response = client.get(f"/page/similar/item00003?{query}")
        assert response.status_code == 400 and len(response.json()["error"]) < 300, query[:20]
    response = client.post("/page/similar_by_features", json={"features": {}, "model": 3})
    assert response.status_code == 400 and "model must be a string" in response.json()["error"]


def test_the_page_413_names_the_limit_that_applies(client):
    """Issue 35, item 11: the page's bodies have a fixed limit, not --max_request_bytes."""
    response = client.post(
        "/page/similar_by_features", content=b'{"features": {"tags": ["' + b"x" * 70_000 + b'"]}}'
    )
    assert response.status_code == 413
    message = response.json()["error"]
    assert f"limit of {page.MAX_BODY_BYTES}" in message and page.BODY_LIMIT_NAME in message
    assert "--max_request_bytes" not in message
