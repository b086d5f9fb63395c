"""Export, the Python API and the HTTP server, on a model trained for a few steps."""

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
from fastapi.testclient import TestClient

from ssl_retrieval import config as config_lib
from ssl_retrieval import testing
from ssl_retrieval.compat import tf
from ssl_retrieval.serving import api, exporter, http_app
from ssl_retrieval.serving import index as index_lib
from ssl_retrieval.training import trainer

RECORD = {"brand": "brand3", "category": "cat1", "tags": ["tag3_1", "tag3_2"], "price": 9.5}
IDS = ["item00000", "item00007", "item00100"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    data_dir = testing.make_data_dir(str(root / "data"))
    model_dir = str(root / "model")
    trainer.run(
        config_lib.TrainConfig(
            data_dir=data_dir,
            model_dir=model_dir,
            method="cfm",
            batch_size=32,
            hidden_layers=(32, 16),
            embedding_dim=8,
            train_steps=30,
        )
    )
    config = exporter.ExportConfig(
        data_dir=None, model_dir=model_dir, export_dir=str(root / "export"), k=20
    )
    module, info = exporter.build(config)
    path = exporter.write(module, info, config)
    return {"module": module, "info": info, "path": path, "config": config, "root": root}


# Two items' features, as the signatures take them (in memory here, in FRESH's process too).
SIGNATURE_INPUTS = {
    "item_id": [[""], ["item00005"]],
    "brand": [["brand3"], [""]],
    "category": [["cat1"], ["cat2"]],
    "tags": [["tag3_1", "tag3_2"], ["", ""]],
    "price": [9.5, float("nan")],
}


def signature_inputs():
    return {name: tf.constant(value) for name, value in SIGNATURE_INPUTS.items()}


FRESH = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import scann
    import ssl_retrieval.compat as c
    tf = c.tf
    m = tf.saved_model.load(sys.argv[1])
    features = {name: tf.constant(value) for name, value in json.loads(sys.argv[2]).items()}
    a = m.signatures["similar_items"](item_id=tf.constant(%r), k=tf.constant(5))
    b = m.signatures["similar_items_by_features"](k=tf.constant(5), **features)
    e = m.signatures["item_embedding"](**features)
    print(json.dumps({
        "ids": a["ids"].numpy().astype(str).tolist(), "scores": a["scores"].numpy().tolist(),
        "found": a["found"].numpy().tolist(),
        "f_ids": b["ids"].numpy().astype(str).tolist(), "f_scores": b["scores"].numpy().tolist(),
        "embedding": e["embedding"].numpy().tolist()}))
    """
)


def test_fresh_process_returns_what_the_in_memory_model_returned(exported):
    module = exported["module"]
    ids = IDS + ["unknown-item"]
    a = module.similar_items(tf.constant(ids), tf.constant(5))
    b = module.similar_items_by_features(signature_inputs(), tf.constant(5))
    e = module.item_embedding(signature_inputs())
    out = subprocess.run(
        [sys.executable, "-c", FRESH % ids, exported["path"], json.dumps(SIGNATURE_INPUTS)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    fresh = json.loads(out.stdout.strip().splitlines()[-1])
    assert fresh["ids"] == a["ids"].numpy().astype(str).tolist()
    assert fresh["found"] == [True, True, True, False]
    np.testing.assert_array_equal(np.array(fresh["scores"], np.float32), a["scores"].numpy())
    assert fresh["f_ids"] == b["ids"].numpy().astype(str).tolist()
    np.testing.assert_array_equal(np.array(fresh["f_scores"], np.float32), b["scores"].numpy())
    np.testing.assert_array_equal(np.array(fresh["embedding"], np.float32), e["embedding"].numpy())
    # The query item itself is never among its neighbours; rows are sorted best first.
    for item, row in zip(IDS, fresh["ids"], strict=False):
        assert item not in row and len(row) == 5
    assert fresh["ids"][3] == [""] * 5


def test_export_info_and_refusing_to_overwrite(exported):
    info = json.load(open(f"{exported['path']}/export_info.json"))
    assert info["index"] == "scann" and info["num_items"] == 240
    assert info["recall_at_10_vs_brute_force"] >= 0.95
    assert info["index_params"]["anisotropic_quantization_threshold"] == 0.2
    assert set(info["signatures"]) == {
        "similar_items",
        "similar_items_by_features",
        "item_embedding",
    }
    with pytest.raises(ValueError, match="exists; pass --overwrite"):
        exporter.run(exported["config"])


def test_python_api(exported):
    model = api.load(str(exported["root"] / "export"))
    rows = model.similar(IDS, k=4)
    assert [len(r) for r in rows] == [4, 4, 4]
    assert all(a[1] >= b[1] for r in rows for a, b in zip(r, r[1:], strict=False))
    assert model.similar_by_features([RECORD], k=3)[0][0].id.startswith("item")
    assert model.embed([RECORD, {}]).shape == (2, 16)
    with pytest.raises(api.UnknownItemError, match="'nope'"):
        model.similar(["item00001", "nope"], k=3)
    with pytest.raises(ValueError, match="k must be between 1 and 20"):
        model.similar(IDS, k=21)
    with pytest.raises(ValueError, match="record 0: feature 'tags': expected a list of strings"):
        model.similar_by_features([{"tags": "tag3_1"}])
    with pytest.raises(ValueError, match=r"record 0: unknown feature\(s\) \['colour'\]"):
        model.similar_by_features([{"colour": "red"}])


def test_brute_force_top_k_memory_is_one_chunk_not_all_of_them():
    """The recall check's exact top k keeps k indices a query, not each chunk's whole [chunk, N]
    index array (a slice of it did: 8 GB at 1M items and 1,000 queries)."""
    import tracemalloc

    rng = np.random.default_rng(0)
    embeddings = rng.standard_normal((50_000, 8)).astype(np.float32)
    queries = rng.standard_normal((640, 8)).astype(np.float32)
    one_chunk = 64 * len(embeddings) * (4 + 4 + 8)  # scores, -scores, argpartition's indices
    tracemalloc.start()
    top = index_lib.exact_top_k(embeddings, queries, 10)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 2 * one_chunk, (peak, one_chunk)
    expected = np.argsort(-(queries[:5] @ embeddings.T), axis=1)[:, :10]
    np.testing.assert_array_equal(np.sort(top[:5], axis=1), np.sort(expected, axis=1))


def test_scann_recall_on_a_clustered_corpus():
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(200, 32))
    x = centers[rng.integers(200, size=20000)] + 0.3 * rng.normal(size=(20000, 32))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    scann = index_lib.build("scann", x, 11)
    assert scann.params["num_leaves"] == 141
    recall = index_lib.recall_against_brute_force(scann, x, x[:500], 10)
    assert recall >= 0.95
    # The chunked exact top k is the brute-force index's top k.
    _, brute = index_lib.build("brute_force", x, 10).search(x[:130], 10)
    exact = index_lib.exact_top_k(x, x[:130], 10, chunk=64)
    assert [set(r) for r in exact] == [set(r) for r in brute.numpy()]
    with pytest.raises(ValueError, match="--index must be scann or brute_force"):
        index_lib.build("annoy", x, 10)


def test_export_searches_more_leaves_until_min_recall():
    # Unclustered vectors: one leaf of 64 holds few of a query's true neighbours.
    rng = np.random.default_rng(1)
    x = rng.normal(size=(4000, 32)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    queries = x[:300]
    scann = index_lib.ScannParams(num_leaves=64, num_leaves_to_search=1)

    def config(tune):
        return exporter.ExportConfig(
            data_dir="unused",
            model_dir="unused",
            export_dir="unused",
            min_recall=0.9,
            scann=scann,
            tune=tune,
        )

    _, recall, trail = exporter.build_index(config(False), x, queries, 11)
    assert len(trail) == 1 and recall < 0.9
    index, recall, trail = exporter.build_index(config(True), x, queries, 11)
    searched = [t["num_leaves_to_search"] for t in trail]
    assert searched == [2**i for i in range(len(searched))] and len(searched) > 1
    assert [t["reorder"] for t in trail] == [min(200 * 2**i, 4000) for i in range(len(searched))]
    assert recall >= 0.9 and trail[-1]["recall_at_10"] == recall
    assert all(t["recall_at_10"] < 0.9 for t in trail[:-1])
    assert index.params["num_leaves_to_search"] == searched[-1]


@pytest.fixture(scope="module")
def client(exported):
    app = http_app.create_app(
        str(exported["root"] / "export"), poll_seconds=0, max_request_bytes=100_000
    )
    with TestClient(app) as c:
        yield c


MALFORMED = [
    ({"content": b"{not json"}, 400, "not valid JSON"),
    ({"json": ["item00000"]}, 400, "must be a JSON object"),
    ({"json": {"k": 3}}, 400, "'instances' must be a non-empty list"),
    ({"json": {"instances": "item00000"}}, 400, "'instances' must be a non-empty list"),
    ({"json": {"instances": [5]}}, 400, r"instances\[0\]: expected an item id"),
    ({"json": {"instances": ["item00000"], "k": 0}}, 400, "k must be between 1 and 20"),
    ({"json": {"instances": ["item00000"], "k": 10**9}}, 400, "k must be between 1 and 20"),
    ({"json": {"instances": ["item00000"], "k": "ten"}}, 400, "k must be an integer"),
    ({"json": {"signature_name": "nope", "instances": ["a"]}}, 400, "unknown signature_name"),
    ({"json": {"instances": ["item00000", "ghost"]}}, 404, "unknown item id"),
    (
        {"json": {"signature_name": "similar_items_by_features", "instances": [{"tags": 3}]}},
        400,
        "expected a list of strings",
    ),
    ({"json": {"instances": ["item00000"] * 1001}}, 413, "at most 1000 instances"),
    ({"content": b"x" * (10 << 20)}, 413, "exceeds the limit"),
]


@pytest.mark.parametrize("request_kwargs, status, message", MALFORMED)
def test_malformed_requests_get_clear_errors_and_the_server_keeps_serving(
    client, request_kwargs, status, message
):
    response = client.post("/v1/models/ssl_retrieval:predict", **request_kwargs)
    assert response.status_code == status
    import re

    assert re.search(message, response.json()["error"]), response.json()
    ok = client.post("/v1/models/ssl_retrieval:predict", json={"instances": ["item00000"], "k": 2})
    assert ok.status_code == 200 and len(ok.json()["predictions"][0]["ids"]) == 2


def test_friendly_endpoints(client):
    assert client.get("/healthz").json()["status"] == "ok"
    status = client.get("/v1/models/ssl_retrieval").json()["model_version_status"][0]
    assert status["state"] == "AVAILABLE"
    assert client.get("/v1/models/other").status_code == 404
    body = client.get("/v1/similar/item00000?k=3").json()
    assert len(body["neighbors"]) == 3 and body["item_id"] == "item00000"
    assert client.get("/v1/similar/ghost").status_code == 404
    assert client.get("/v1/similar/item00000?k=-1").status_code == 400
    by_features = client.post(
        "/v1/models/ssl_retrieval:predict",
        json={"signature_name": "similar_items_by_features", "instances": [RECORD], "k": 4},
    )
    assert len(by_features.json()["predictions"][0]["ids"]) == 4
    embedding = client.post(
        "/v1/models/ssl_retrieval:predict",
        json={"signature_name": "item_embedding", "instances": [RECORD]},
    )
    assert len(embedding.json()["predictions"][0]) == 16


def test_newer_version_is_picked_up_without_restart(exported, tmp_path):
    export_dir = tmp_path / "export"
    shutil.copytree(exported["root"] / "export", export_dir)
    holder = http_app.ModelHolder(str(export_dir), poll_seconds=0)
    old = holder.model.version
    assert not holder.poll_once()
    (export_dir / f"{old + 5}").mkdir()  # an incomplete version (no saved_model.pb) is ignored
    assert not holder.poll_once()
    shutil.rmtree(export_dir / f"{old + 5}")
    newer = export_dir / str(old + 7)
    shutil.copytree(export_dir / str(old), newer)
    info = json.load(open(newer / "export_info.json"))
    info["version"] = old + 7
    json.dump(info, open(newer / "export_info.json", "w"))
    assert holder.poll_once()
    assert holder.model.version == old + 7


@pytest.mark.slow
def test_real_server_serves_concurrent_clients(exported):
    with testing.running_server(exported["root"] / "export", timeout=120) as base:
        errors, done = [], []

        def client(n):
            for i in range(10):
                item = f"item{(n * 10 + i) % 240:05d}"
                try:
                    with urllib.request.urlopen(f"{base}/v1/similar/{item}?k=5", timeout=30) as r:
                        assert len(json.load(r)["neighbors"]) == 5
                        done.append(1)
                except Exception as e:  # noqa: BLE001
                    errors.append(repr(e))

        threads = [threading.Thread(target=client, args=(n,)) for n in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert errors == [] and len(done) == 160


# --- Issue 13: versions, rollback, broken exports, odd bytes, limits, batching ---------------


def copy_export(exported, tmp_path) -> tuple:
    """A private copy of the export dir (one version), its path and that version's number."""
    export_dir = tmp_path / "export"
    shutil.copytree(exported["root"] / "export", export_dir)
    (version,) = api.versions(str(export_dir))
    return export_dir, version


def test_version_is_the_directory_name_and_a_copy_is_loaded_once(exported, tmp_path):
    export_dir, old = copy_export(exported, tmp_path)
    holder = http_app.ModelHolder(str(export_dir), poll_seconds=0)
    pushed = old + 570
    shutil.copytree(export_dir / str(old), export_dir / str(pushed))  # `cp -r 30 600`
    assert holder.poll_once()
    assert holder.model.version == pushed and holder.model.path.endswith(f"/{pushed}")
    assert holder.model.info["version"] == old  # export_info.json still says the old step
    assert [holder.poll_once() for _ in range(3)] == [False] * 3


def test_a_swap_frees_the_previous_version(exported, tmp_path):
    import gc
    import weakref

    export_dir, old = copy_export(exported, tmp_path)
    holder = http_app.ModelHolder(str(export_dir), poll_seconds=0)
    previous = weakref.ref(holder.model)
    session = weakref.ref(holder.model._session)
    shutil.copytree(export_dir / str(old), export_dir / str(old + 1))
    assert holder.poll_once()
    gc.collect()
    assert previous() is None and session() is None


def test_start_on_the_newest_version_that_loads(exported, tmp_path, caplog):
    export_dir, old = copy_export(exported, tmp_path)
    incomplete = export_dir / str(old + 10)  # everything but the marker written last
    shutil.copytree(export_dir / str(old), incomplete)
    (incomplete / "export_info.json").unlink()
    half = export_dir / str(old + 20)  # a SavedModel being written: saved_model.pb only
    half.mkdir()
    shutil.copy(export_dir / str(old) / "saved_model.pb", half)
    with caplog.at_level("WARNING"):
        model = api.load(str(export_dir))
    assert model.version == old
    lines = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert len(lines) == 1 and "\n" not in lines[0]
    assert f"{half}: incomplete" in lines[0] and f"{incomplete}: incomplete" in lines[0]
    app = http_app.create_app(str(export_dir), poll_seconds=0)
    with TestClient(app) as c:
        assert c.get("/healthz").json()["version"] == old


def test_rollback_when_the_served_version_is_deleted(exported, tmp_path):
    export_dir, old = copy_export(exported, tmp_path)
    newer = export_dir / str(old + 5)
    shutil.copytree(export_dir / str(old), newer)
    app = http_app.create_app(str(export_dir), poll_seconds=0)
    holder = app.state.holder
    with TestClient(app) as c:
        assert c.get("/healthz").json()["version"] == old + 5
        shutil.rmtree(newer)
        assert holder.poll_once()
        health = c.get("/healthz").json()
        assert health["version"] == old and health["directory"] == str(old)
        assert c.get("/v1/similar/item00000?k=2").json()["version"] == old
        # The last one gone too: keep serving from memory, say so once, and do not flap.
        shutil.rmtree(export_dir / str(old))
        assert not holder.poll_once() and not holder.poll_once()
        assert c.get("/v1/similar/item00000?k=2").status_code == 200


def break_version(version_dir, how):
    if how == "truncated variables":
        data = next((version_dir / "variables").glob("variables.data-*"))
        data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
    elif how == "bad export_info.json":
        (version_dir / "export_info.json").write_text('{"max_k": 20, "features": [')
    elif how == "export_info.json without max_k":
        (version_dir / "export_info.json").write_text('{"features": []}')
    elif how == "missing variables":
        shutil.rmtree(version_dir / "variables")
    elif how == "emptied saved_model.pb":
        (version_dir / "saved_model.pb").write_bytes(b"")


BROKEN = [
    ("truncated variables", "variables are truncated or corrupt"),
    ("bad export_info.json", "export_info.json is not valid JSON"),
    ("export_info.json without max_k", "'max_k' must be a positive integer"),
    ("missing variables", "variables/variables.index is missing"),
    ("emptied saved_model.pb", "the SavedModel does not load"),
]


@pytest.mark.parametrize("how, message", BROKEN)
def test_a_broken_version_is_named_in_one_line_and_skipped(exported, tmp_path, how, message):
    export_dir, old = copy_export(exported, tmp_path)
    broken = export_dir / str(old + 1)
    shutil.copytree(export_dir / str(old), broken)
    break_version(broken, how)
    with pytest.raises(api.BrokenVersionError) as error:
        api.load(str(broken))
    text = str(error.value)
    assert text.startswith(f"{broken}: ") and message in text and "\n" not in text, text
    assert api.load(str(export_dir)).version == old
    holder = http_app.ModelHolder(str(export_dir), poll_seconds=0)
    assert holder.model.version == old and not holder.poll_once()


def test_a_failed_version_is_retried_only_when_its_files_change(exported, tmp_path):
    export_dir, old = copy_export(exported, tmp_path)
    holder = http_app.ModelHolder(str(export_dir), poll_seconds=0)
    pushed = export_dir / str(old + 1)
    pushed.mkdir()  # a `cp -r` under way: the directory exists, its files do not yet
    assert not holder.poll_once() and not holder.poll_once()
    shutil.rmtree(pushed)
    shutil.copytree(export_dir / str(old), pushed)
    assert holder.poll_once() and holder.model.version == old + 1


def within(seconds: float, work):
    """`work()`'s result, or a test failure if it has not returned after `seconds` (a blocked
    call fails the test instead of hanging the suite; its thread is left behind)."""
    result = {}
    thread = threading.Thread(target=lambda: result.update(value=work()), daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        pytest.fail(f"blocked for over {seconds} s")
    return result.get("value")


def test_a_fifo_in_a_version_blocks_neither_start_up_nor_the_poller(exported, tmp_path, caplog):
    """Issue 35, item 6: `mkfifo <export>/33/export_info.json` (or a FIFO among the variables)
    is skipped with one line naming it, and a good version pushed later is loaded."""
    export_dir, old = copy_export(exported, tmp_path)
    marker = export_dir / str(old + 3)
    shutil.copytree(export_dir / str(old), marker)
    (marker / "export_info.json").unlink()
    os.mkfifo(marker / "export_info.json")
    with caplog.at_level("WARNING"):
        holder = within(60, lambda: http_app.ModelHolder(str(export_dir), poll_seconds=0))
    assert holder.model.version == old
    lines = [r.getMessage() for r in caplog.records if "FIFO" in r.getMessage()]
    assert len(lines) == 1 and f"{marker}: export_info.json is a FIFO" in lines[0], lines
    variables = export_dir / str(old + 4)
    shutil.copytree(export_dir / str(old), variables)
    shard = next((variables / "variables").glob("variables.data-*"))
    shard.unlink()
    os.mkfifo(shard)
    caplog.clear()
    with caplog.at_level("WARNING"):
        assert not within(60, holder.poll_once) and not within(60, holder.poll_once)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and f"variables/{shard.name} is a FIFO, not a regular file" in lines[0]
    shutil.copytree(export_dir / str(old), export_dir / str(old + 5))
    assert within(60, holder.poll_once) and holder.model.version == old + 5


def test_an_unreadable_served_version_keeps_serving_from_memory(exported, caplog):
    """Issue 35, item 8: `chmod 000` on the served newest version is not its deletion: no
    rollback to the older one, and the log names the cause (not "incomplete")."""
    root = tempfile.mkdtemp(prefix="chmod-")  # not under tmp_path: root-only (mode 700)
    os.chmod(root, 0o755)  # readable by the unprivileged user of `testing.unprivileged`
    export_dir = os.path.join(root, "export")
    shutil.copytree(exported["root"] / "export", export_dir)
    (old,) = api.versions(export_dir)
    newest = os.path.join(export_dir, str(old + 1))
    try:
        shutil.copytree(os.path.join(export_dir, str(old)), newest)
        holder = http_app.ModelHolder(export_dir, poll_seconds=0)
        assert holder.model.version == old + 1
        os.chmod(newest, 0)
        with caplog.at_level("WARNING"), testing.unprivileged():
            swapped = [holder.poll_once(), holder.poll_once()]
            with pytest.raises(api.BrokenVersionError) as error:
                api.read_info(newest)
        assert swapped == [False, False] and holder.model.version == old + 1
        lines = [r.getMessage() for r in caplog.records]
        assert len(lines) == 1 and "Permission denied" in lines[0] and "incomplete" not in lines[0]
        assert f"{newest} cannot be read" in lines[0] and "from memory" in lines[0]
        assert "export_info.json cannot be read (Permission denied)" in str(error.value)
        os.chmod(newest, 0o755)
        assert not holder.poll_once() and holder.model.version == old + 1
    finally:
        os.chmod(newest, 0o755)
        shutil.rmtree(root)


@pytest.fixture(scope="module")
def full_client(exported):
    app = http_app.create_app(str(exported["root"] / "export"), poll_seconds=0)
    with TestClient(app) as c:
        yield c


PREDICT = "/v1/models/ssl_retrieval:predict"
HUGE = "9" * 5000


ODD = [
    ({"content": '{"instances": ["item00000"], "k": "\u00b2"}'.encode()}, "k must be an integer"),
    ({"content": b'{"instances": ["item00000"], "k": ' + HUGE.encode() + b"}"}, "not valid JSON"),
    ({"content": b'{"instances": [' + HUGE.encode() + b'], "k": 2}'}, "not valid JSON"),
    ({"content": b'{"instances": ["item00000"], "k": "' + HUGE.encode() + b'"}'}, "k must be an"),
    ({"content": b'{"instances": ' + b"[" * 100_000}, "nested too deeply"),
    ({"content": b'{"instances": ["\\ud800"]}'}, r"instances\[0\]: not valid Unicode"),
    ({"content": b"\xff\xfe"}, "not valid JSON"),
    (
        {
            "json": {
                "signature_name": "similar_items_by_features",
                "instances": [{"price": 10**400}],
            }
        },
        "expected a finite number",
    ),
    ({"json": {"instances": [["a" * 10_000]]}}, r"instances\[0\]: expected an item id"),
]


@pytest.mark.parametrize("request_kwargs, message", ODD)
def test_odd_bytes_get_400_not_500(full_client, request_kwargs, message):
    import re

    response = full_client.post(PREDICT, **request_kwargs)
    assert response.status_code == 400, response.text[:500]
    assert re.search(message, response.json()["error"]), response.json()
    assert len(response.json()["error"]) < 1000


def test_odd_query_strings_and_methods(full_client):
    for k in ("%C2%B2", "%EF%BC%93", HUGE, "-" + HUGE, "1e3", ""):
        response = full_client.get(f"/v1/similar/item00000?k={k}")
        assert response.status_code == 400, (k[:20], response.text[:200])
        assert "k must be" in response.json()["error"]
    assert full_client.get("/v1/similar/item00000?k=%2B3").status_code == 200  # "+3"
    response = full_client.get(PREDICT)
    assert response.status_code == 405 and response.headers["allow"] == "POST"
    assert "use POST" in response.json()["error"]
    # Framework errors have the app's shape too.
    for method, path, status in [("PUT", "/healthz", 405), ("GET", "/nowhere", 404)]:
        response = full_client.request(method, path)
        assert response.status_code == status and set(response.json()) == {"error"}


LIMITS = [
    ({"instances": ["item00000"] * 1000, "k": 20}, "--max_results=10000"),
    (
        {"signature_name": "similar_items_by_features", "instances": [RECORD] * 101, "k": 2},
        "--max_feature_instances",
    ),
    (
        {"signature_name": "item_embedding", "instances": [{"tags": ["x"] * 300}]},
        r"instances\[0\]: 300 feature values exceed the limit of --max_feature_values=256",
    ),
]


@pytest.mark.parametrize("body, message", LIMITS)
def test_work_per_request_is_bounded_with_413_naming_the_limit(full_client, body, message):
    import re

    response = full_client.post(PREDICT, json=body)
    assert response.status_code == 413
    assert re.search(message, response.json()["error"]), response.json()


def test_limit_flags_are_in_help():
    out = subprocess.run(
        [sys.executable, "-m", "ssl_retrieval.serve", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    for flag in (
        "--body_timeout_seconds",
        "--max_request_bytes",
        "--max_instances",
        "--max_results",
        "--max_feature_instances",
        "--max_feature_values",
        "--batch_window_ms",
    ):
        assert flag in out.stdout, flag


def test_concurrent_queries_share_one_index_call_and_get_the_direct_answers(exported):
    import asyncio

    holder = http_app.ModelHolder(str(exported["root"] / "export"), poll_seconds=0)
    model = holder.model
    calls = []
    original = model.similar_rows

    def counting(ids, k):
        calls.append(len(ids))
        return original(ids, k)

    model.similar_rows = counting
    batcher = http_app.Batcher(holder, window_seconds=0.05, max_batch=64)
    queries = [(f"item{i:05d}", 1 + i % 7) for i in range(0, 240, 8)]

    async def run():
        try:
            return await asyncio.gather(*(batcher.similar([q], k) for q, k in queries))
        finally:
            batcher.stop()

    answers = asyncio.run(run())
    assert len(calls) < len(queries) // 4 and sum(calls) == len(queries)
    for (item, k), (served, (row,)) in zip(queries, answers, strict=True):
        assert served is model and len(row) == k
        # The same neighbours; scores to float32 precision (a batch's matrix product may round
        # its last bits differently from a single query's).
        direct = original([item], k)[0][0]
        assert [n.id for n in row] == [n.id for n in direct]
        np.testing.assert_allclose(
            [n.source_score for n in row], [n.source_score for n in direct], rtol=1e-5
        )


@contextlib.contextmanager
def running(app):
    """`app` served by uvicorn in a thread on 127.0.0.1 and a free port."""
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        for _ in range(600):
            if server.started:
                break
            time.sleep(0.05)
        assert server.started
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


def test_keep_alive_survives_a_400_and_slow_bodies_get_408(exported):
    import http.client

    limits = http_app.Limits(body_timeout_seconds=1.0)
    app = http_app.create_app(str(exported["root"] / "export"), poll_seconds=0, limits=limits)
    with running(app) as port:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        bad = [
            ("GET", "/v1/similar/item00000?k=%C2%B2", None),
            ("POST", PREDICT, b'{"instances": ["item00000"], "k": ' + HUGE.encode() + b"}"),
            ("POST", PREDICT, b'{"instances": ' + b"[" * 100_000),
            ("GET", PREDICT, None),
        ]
        for method, path, body in bad:
            conn.request(method, path, body=body)
            response = conn.getresponse()
            assert response.status in (400, 405) and "error" in json.loads(response.read())
            first = conn.sock
            assert first is not None and not response.will_close
            conn.request("GET", "/v1/similar/item00000?k=2")
            response = conn.getresponse()
            assert response.status == 200 and len(json.loads(response.read())["neighbors"]) == 2
            assert conn.sock is first  # the same connection answered
        conn.close()

        # A client dribbling its body: 408 after --body_timeout_seconds, connection closed.
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            raw.sendall(
                f"POST {PREDICT} HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{{".encode()
            )
            started = time.time()
            received = b""
            for _ in range(20):  # bounded: a byte a tenth of a second, for at most 2 s
                try:
                    raw.sendall(b" ")
                except OSError:
                    break
                raw.settimeout(0.1)
                try:
                    chunk = raw.recv(65536)
                except TimeoutError:
                    continue
                received += chunk
                if not chunk or b"\r\n\r\n" in received:
                    break
            raw.settimeout(10)
            while chunk:
                chunk = raw.recv(65536)
                received += chunk
            assert received.startswith(b"HTTP/1.1 408"), received[:200]
            assert b"--body_timeout_seconds" in received
            assert time.time() - started < 5
