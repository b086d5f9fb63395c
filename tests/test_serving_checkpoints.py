"""Issue 13, item 8: corrupt checkpoints and moved model dirs (what an export is built from)."""

import logging
import shutil

import pytest

from ssl_retrieval import config as config_lib
from ssl_retrieval.training import trainer

pytestmark = pytest.mark.slow  # each test trains (a few seconds to a minute on a shared CPU)

TINY = dict(batch_size=32, hidden_layers=(32, 16), embedding_dim=8)


def tiny(data_dir, model_dir, **kwargs):
    return config_lib.TrainConfig(
        data_dir=str(data_dir), model_dir=str(model_dir), **{**TINY, **kwargs}
    )


@pytest.fixture(scope="module")
def trained(data_dir, tmp_path_factory):
    """A model dir with checkpoints at steps 2 and 4."""
    model_dir = tmp_path_factory.mktemp("trained") / "m"
    trainer.run(tiny(data_dir, model_dir, train_steps=4, checkpoint_every=2))
    return model_dir


def unfinished_copy(trained, model_dir):
    """A copy of the run as a crash while saving step 4 leaves it: no train_metrics.json."""
    shutil.copytree(trained, model_dir)
    (model_dir / "train_metrics.json").unlink()


def damage(path, how):
    if how == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:
        path.write_bytes(b"")


@pytest.mark.parametrize(
    "file, how",
    [
        ("data-00000-of-00001", "truncated"),
        ("index", "emptied"),
        ("data-00000-of-00001", "emptied"),
    ],
)
def test_a_corrupt_newest_checkpoint_falls_back_to_the_older_one(
    data_dir, trained, tmp_path, caplog, file, how
):
    model_dir = tmp_path / "m"
    unfinished_copy(trained, model_dir)
    damage(model_dir / "checkpoints" / f"ckpt-4.{file}", how)
    with caplog.at_level(logging.WARNING):
        summary = trainer.run(tiny(data_dir, model_dir, train_steps=4, checkpoint_every=2))
    assert summary["resumed_from_step"] == 2 and summary["steps"] == 4
    warnings = [r.getMessage() for r in caplog.records if "unreadable" in r.getMessage()]
    assert len(warnings) == 1 and f"{model_dir}/checkpoints/ckpt-4 is unreadable" in warnings[0]


def test_no_readable_checkpoint_stops_with_one_line_naming_the_file(data_dir, trained, tmp_path):
    model_dir = tmp_path / "m"
    shutil.copytree(trained, model_dir)
    for index in (model_dir / "checkpoints").glob("ckpt-*.index"):
        damage(index, "emptied")
    with pytest.raises(ValueError) as error:
        trainer.run(tiny(data_dir, model_dir, train_steps=4, checkpoint_every=2))
    text = str(error.value)
    assert text.startswith(f"{model_dir}/checkpoints/ckpt-4 is unreadable") and "\n" not in text


def test_a_moved_model_and_data_dir_resume_but_another_hyperparameter_is_refused(
    data_dir, trained, tmp_path
):
    moved_data = tmp_path / "data"
    shutil.copytree(data_dir, moved_data)
    model_dir = tmp_path / "elsewhere" / "m"
    unfinished_copy(trained, model_dir)
    trained_rate = tiny(data_dir, model_dir).learning_rate
    with pytest.raises(
        ValueError, match=rf"different config \(--learning_rate: {trained_rate} -> 0.5\)"
    ):
        trainer.run(tiny(moved_data, model_dir, train_steps=4, learning_rate=0.5))
    for newest in (model_dir / "checkpoints").glob("ckpt-4.*"):
        newest.unlink()  # so that the run has steps left to resume
    summary = trainer.run(tiny(moved_data, model_dir, train_steps=4, checkpoint_every=2))
    assert summary["resumed_from_step"] == 2 and summary["steps"] == 4
    saved = config_lib.load(str(model_dir))
    assert saved.model_dir == str(model_dir) and saved.data_dir == str(moved_data)
    assert "learning_rate" not in config_lib.RESUMABLE_FIELDS + config_lib.PATH_FIELDS
