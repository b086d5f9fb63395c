"""--weight_averaging: the moving average against numpy, and what training keeps of it."""

import numpy as np
import pytest

from ssl_retrieval import config as config_lib
from ssl_retrieval import testing
from ssl_retrieval.compat import tf
from ssl_retrieval.ranking.config import BlendConfig
from ssl_retrieval.training import averaging, trainer

TINY = dict(batch_size=32, hidden_layers=(32, 16), embedding_dim=8)


def _numpy_average(history, decay, every):
    """The average after updates at the weights in `history` (one entry per update)."""
    average = history[0]  # the variable's value when the average was made
    for update, weights in enumerate(history[1:], start=1):
        d = min(decay**every, (1 + update) / (10 + update))
        average = d * average + (1 - d) * weights
    return average


def test_the_average_matches_numpy_and_swapping_restores_the_weights():
    rng = np.random.default_rng(0)
    start = rng.normal(size=(3, 4)).astype(np.float32)
    variable = tf.Variable(start)
    average = averaging.WeightAverage([variable], decay=0.9, every=2)
    history = [start]
    for _ in range(30):  # past the first updates' smaller decay, (1 + u) / (10 + u)
        weights = rng.normal(size=(3, 4)).astype(np.float32)
        variable.assign(weights)
        average.update()
        history.append(weights)
    expected = _numpy_average(history, 0.9, 2)
    np.testing.assert_allclose(average.averages[0].numpy(), expected, rtol=1e-5)
    assert int(average.updates.numpy()) == 30
    with average.swapped():
        np.testing.assert_allclose(variable.numpy(), expected, rtol=1e-5)
    np.testing.assert_array_equal(variable.numpy(), history[-1])


def test_the_first_updates_forget_the_initial_weights_faster():
    variable = tf.Variable([0.0])
    average = averaging.WeightAverage([variable], decay=0.999, every=1)
    variable.assign([1.0])
    average.update()  # decay min(0.999, 2 / 11): the average moves most of the way at once
    np.testing.assert_allclose(average.averages[0].numpy(), [9 / 11], rtol=1e-6)


def _config(data_dir, model_dir, **kwargs):
    return config_lib.TrainConfig(
        data_dir=data_dir, model_dir=str(model_dir), **{**TINY, "seed": 3, **kwargs}
    )


def _checkpoint_values(directory):
    """{key: array} of the newest checkpoint in `directory`."""
    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(str(directory)))
    return {key: reader.get_tensor(key) for key in reader.get_variable_to_shape_map()}


def _is_weight(key):
    """A model weight's checkpoint key (the optimizer's state is checkpointed under the model)."""
    return key.startswith("model/") and not key.startswith("model/optimizer/")


def test_validation_and_the_best_checkpoint_use_the_average(tmp_path):
    data_dir = testing.make_data_dir(str(tmp_path / "data"), validation_fraction=0.1)
    run = _config(
        data_dir,
        tmp_path / "run",
        train_steps=12,
        validate_every=12,
        patience=0,
        weight_averaging=0.9,
        weight_averaging_every=1,
    )
    trainer.run(run, BlendConfig(choose_popularity_prior=False))
    best = _checkpoint_values(tmp_path / "run" / trainer.BEST_DIR)
    last = _checkpoint_values(tmp_path / "run" / "checkpoints")
    averages = [value for key, value in last.items() if key.startswith("weight_average/averages")]
    assert averages, "the averages are not in the training checkpoint"
    weights = [k for k in best if _is_weight(k)]
    assert weights
    changed = 0
    for key in weights:
        # The best checkpoint (step 12, the only validation) holds the average, not the weights
        # the training checkpoint of step 12 holds.
        same_shape = [a for a in averages if a.shape == best[key].shape]
        assert any(np.allclose(a, best[key], rtol=1e-6) for a in same_shape), key
        changed += not np.allclose(best[key], last[key])
    assert changed >= len(weights) // 2


def test_a_resumed_run_averages_as_an_uninterrupted_one(data_dir, tmp_path):
    common = dict(
        checkpoint_every=4,
        validate_every=0,
        patience=0,
        weight_averaging=0.8,
        weight_averaging_every=3,
    )
    trainer.run(_config(data_dir, tmp_path / "a", train_steps=8, **common))
    resumed = trainer.run(_config(data_dir, tmp_path / "a", train_steps=14, **common))
    assert resumed["resumed_from_step"] == 8
    trainer.run(_config(data_dir, tmp_path / "b", train_steps=14, **common))
    # Without validation the best checkpoint is the average of the last steps.
    a = _checkpoint_values(tmp_path / "a" / trainer.BEST_DIR)
    b = _checkpoint_values(tmp_path / "b" / trainer.BEST_DIR)
    weights = [k for k in a if _is_weight(k)]
    assert weights and set(a) == set(b)
    for key in weights:
        np.testing.assert_allclose(a[key], b[key], rtol=1e-5, atol=1e-7, err_msg=key)


def test_without_averaging_nothing_is_averaged(data_dir, tmp_path):
    trainer.run(_config(data_dir, tmp_path, train_steps=4, validate_every=0, patience=0))
    assert not any(
        k.startswith("weight_average") for k in _checkpoint_values(tmp_path / "checkpoints")
    )
    assert not (tmp_path / trainer.BEST_DIR).exists()


@pytest.mark.parametrize(
    "flags, message",
    [
        (dict(weight_averaging=1.0), r"--weight_averaging must be in \[0, 1\)"),
        (dict(weight_averaging=-0.1), r"--weight_averaging must be in \[0, 1\)"),
        (dict(weight_averaging_every=0), "--weight_averaging_every must be >= 1"),
    ],
)
def test_invalid_averaging_flags_name_the_flag(flags, message):
    with pytest.raises(ValueError, match=message):
        config_lib.TrainConfig(data_dir="d", model_dir="m", **flags).validate()
