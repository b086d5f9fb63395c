"""Fixtures shared by test files: two tiny exports of the same data (the page's compare view)."""

import pytest

from ssl_retrieval import config as config_lib
from ssl_retrieval import exporting, testing, training


@pytest.fixture(scope="session")
def two_exports(tmp_path_factory):
    """{"data_dir", "served", "compare"}: export dirs of a cfm and a baseline model, 30 steps each."""
    root = tmp_path_factory.mktemp("two_exports")
    data_dir = testing.make_data_dir(str(root / "data"))
    out = {"data_dir": data_dir}
    for name, method in (("served", "cfm"), ("compare", "baseline")):
        model_dir = str(root / f"model_{name}")
        training.run(
            config_lib.TrainConfig(
                data_dir=data_dir,
                model_dir=model_dir,
                method=method,
                batch_size=32,
                hidden_layers=(32, 16),
                embedding_dim=8,
                train_steps=30,
            )
        )
        export_dir = str(root / f"export_{name}")
        exporting.run(
            exporting.ExportConfig(data_dir=None, model_dir=model_dir, export_dir=export_dir, k=20)
        )
        out[name] = export_dir
    return out
