"""Item ids outside ASCII (product names, wiki titles, most catalogues not in English) go
through every stage: training, evaluation, export, the Python API and the HTTP API."""

import urllib.parse

import numpy as np
from fastapi.testclient import TestClient

from ssl_retrieval import data as data_lib
from ssl_retrieval import testing
from ssl_retrieval.evaluation import evaluator
from ssl_retrieval.serving import api, exporter, http_app
from ssl_retrieval.training import trainer

PREFIX = "café-日本語-"


def test_non_ascii_ids_train_evaluate_export_and_serve(tmp_path):
    data_dir = testing.make_data_dir(
        str(tmp_path / "data"), validation_fraction=0.1, id_prefix=PREFIX
    )
    ids = data_lib.corpus_ids(data_dir)
    assert ids[0] == f"{PREFIX}00000" and all(i.startswith(PREFIX) for i in ids)

    model_dir = str(tmp_path / "model")
    summary = trainer.run(
        testing.tiny_train_config(data_dir, model_dir, train_steps=20, validate_every=10)
    )
    assert summary["steps"] == 20
    metrics = evaluator.run(data_dir, model_dir=model_dir)["metrics"]
    assert metrics["all"]["num_queries"] > 0
    assert 0 <= metrics["all"]["recall@50"] <= 1

    export_dir = str(tmp_path / "export")
    exporter.run(
        exporter.ExportConfig(data_dir=None, model_dir=model_dir, export_dir=export_dir, k=10)
    )
    model = api.load(export_dir)
    query = f"{PREFIX}00007"
    (neighbours,) = model.similar([query], k=5)
    assert len(neighbours) == 5
    assert all(n.id in ids and n.id != query for n in neighbours)
    assert np.all(np.isfinite([n.source_score for n in neighbours]))

    client = TestClient(http_app.create_app(export_dir, poll_seconds=0))
    response = client.get(f"/v1/similar/{urllib.parse.quote(query)}?k=5")
    assert response.status_code == 200, response.text
    assert [n["id"] for n in response.json()["neighbors"]] == [n.id for n in neighbours]
