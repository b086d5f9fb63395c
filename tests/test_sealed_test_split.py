"""The test split is sealed: training, early stopping, the blend's choice (fused ranking and
references included), tuning and the peers' tuning never read it; only `evaluate` does.

The eval files of a data dir are replaced by bytes that are not TFRecords, so that any read of
them fails; everything that chooses must still run, and `evaluate` must fail (which shows the
files are really unreadable)."""

import glob
import json
import os

import pytest

from ssl_retrieval import testing
from ssl_retrieval.evaluation import evaluator
from ssl_retrieval.ranking.config import BlendConfig
from ssl_retrieval.training import trainer


@pytest.fixture(scope="module")
def sealed(tmp_path_factory):
    """A tiny data dir with validation pairs and garbage where its eval files were."""
    data_dir = testing.make_data_dir(
        str(tmp_path_factory.mktemp("sealed") / "data"), validation_fraction=0.2
    )
    eval_files = glob.glob(os.path.join(data_dir, "eval-*"))
    assert eval_files
    for path in eval_files:
        with open(path, "wb") as f:
            f.write(b"not a TFRecord: the test split is sealed" * 10)
    return data_dir


@pytest.mark.slow
def test_training_validation_and_every_blend_choice_leave_the_test_split_unread(sealed, tmp_path):
    model_dir = str(tmp_path / "model")
    config = testing.tiny_train_config(sealed, model_dir, train_steps=30, validate_every=10)
    blend = BlendConfig(blend_ks=(10, 50), blend_fusion=True, blend_links_shares=(0.0, 0.2))
    summary = trainer.run(config, blend)  # the references objective: they read validation too
    assert summary["steps"] <= 30 and set(summary["blends"]) == {"10", "50"}
    with pytest.raises(Exception, match="(?i)corrupt|data ?loss|record"):
        evaluator.run(sealed, model_dir=model_dir)


@pytest.mark.slow
def test_tuning_and_the_peers_tuning_leave_the_test_split_unread(sealed, tmp_path):
    flagfile = tmp_path / "tiny.cfg"
    flagfile.write_text("--batch_size=32\n--hidden_layers=32,16\n--embedding_dim=8\n")
    tuning = {
        "name": "sealed",
        "output_dir": str(tmp_path / "tuning"),
        "runs_dir": str(tmp_path / "runs"),
        "flagfile_dir": str(tmp_path / "tuned"),
        "data_dirs": {"1.0": sealed},
        "common_flags": ["--train_steps=20", "--validate_every=10", "--nochoose_popularity_prior"],
        "methods": {"baseline": {"flagfile": str(flagfile), "grid": {"temperature": [0.1, 0.2]}}},
        "trials": 2,
    }
    path = tmp_path / "tuning.json"
    path.write_text(json.dumps(tuning))
    tuned = testing.run_command("ssl_retrieval.tune", f"--config={path}", timeout=600)
    assert tuned.returncode == 0, tuned.stderr[-2000:]
    assert os.listdir(tmp_path / "tuned")
    peer = testing.run_command(
        "ssl_retrieval.evaluate",
        f"--data_dir={sealed}",
        "--recommender=links",
        "--split=validation",
        f"--output={tmp_path / 'links.json'}",
    )
    assert peer.returncode == 0, peer.stderr[-2000:]
    on_test = testing.run_command(
        "ssl_retrieval.evaluate",
        f"--data_dir={sealed}",
        "--recommender=top_popular",
        f"--output={tmp_path / 'top.json'}",
    )
    assert on_test.returncode != 0
