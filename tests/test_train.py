"""Training end to end: every method, flag validation, resuming after kill -9, two replicas."""

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from ssl_retrieval import cli, testing
from ssl_retrieval import config as config_lib
from ssl_retrieval.compat import tf
from ssl_retrieval.model import two_tower as model_lib
from ssl_retrieval.ranking.config import BlendConfig
from ssl_retrieval.training import trainer

TINY = dict(batch_size=32, hidden_layers=(32, 16), embedding_dim=8, fm_hidden_layers=(16,))


def tiny(data_dir, model_dir, **kwargs):
    return config_lib.TrainConfig(data_dir=data_dir, model_dir=str(model_dir), **{**TINY, **kwargs})


@pytest.mark.slow
@pytest.mark.parametrize("method", config_lib.METHODS)
def test_every_method_trains(data_dir, tmp_path, method):
    fm = ("item_id", "brand") if "fm" in method.split("+") else ()
    summary = trainer.run(tiny(data_dir, tmp_path, method=method, train_steps=4, fm_features=fm))
    assert summary["steps"] == 4 and np.isfinite(summary["final_loss"])
    if method in ("baseline", "fd"):
        assert summary["final_auxiliary_loss"] == 0.0
    else:
        assert summary["final_auxiliary_loss"] > 0.0
    assert os.path.exists(tmp_path / "config.json")
    assert os.path.exists(tmp_path / "train_metrics.json")


def test_loss_decreases_and_model_reloads(data_dir, tmp_path):
    short = trainer.run(tiny(data_dir, tmp_path / "a", method="cfm", train_steps=5))
    longer = trainer.run(tiny(data_dir, tmp_path / "b", method="cfm", train_steps=80))
    assert longer["final_main_loss"] < short["final_main_loss"] - 0.3
    again = trainer.run(tiny(data_dir, tmp_path / "b", method="cfm", train_steps=80))
    assert again["already_finished"]
    restored = model_lib.load_from_model_dir(str(tmp_path / "b"))
    from ssl_retrieval import data

    batch = next(iter(data.items_dataset(data_dir, 8)))
    z = restored.item_tower(batch).numpy()
    assert z.shape == (8, 16)
    np.testing.assert_allclose(np.linalg.norm(z, axis=1), 1.0, rtol=1e-5)


def test_changed_config_in_same_model_dir_is_refused(data_dir, tmp_path):
    trainer.run(tiny(data_dir, tmp_path, train_steps=2))
    with pytest.raises(config_lib.ChangedRunError, match=r"different config \(--alpha: 0.3 -> 1.0"):
        trainer.run(tiny(data_dir, tmp_path, train_steps=2, alpha=1.0))
    assert trainer.run(tiny(data_dir, tmp_path, train_steps=2, alpha=1.0, overwrite=True))


def test_a_changed_run_exits_with_its_own_status(capsys):
    """The status the experiment runners tell it by (experimentation/launch.py)."""

    def refuse():
        raise config_lib.ChangedRunError("m holds a run with a different config")

    with pytest.raises(SystemExit) as exited:
        cli.main(refuse)(["train"])
    assert exited.value.code == config_lib.ChangedRunError.exit_status == 3
    assert "error: m holds a run" in capsys.readouterr().err


def test_patience_out_at_the_budgets_last_step_is_not_an_early_stop(tmp_path):
    """Validation at 2, 4 and 5 (the budget's end, an extra one) with no gain after the first:
    patience 2 runs out at step 5, where a larger budget would have gone on to validate at 6."""
    data_dir = testing.make_data_dir(str(tmp_path / "data"), validation_fraction=0.1)
    flat = dict(  # a learning rate too small to move the validation value
        validate_every=2, max_validations_per_epoch=0, patience=2, learning_rate=1e-12
    )
    no_blend = BlendConfig(choose_popularity_prior=False)  # the steps are what is checked

    def run(config):
        return trainer.run(config, no_blend)

    summary = run(tiny(data_dir, tmp_path / "m", train_steps=5, **flat))
    assert summary["steps"] == 5 and not summary["stopped_early"]
    # So a larger budget reopens it, and it stops at its next validation, before that budget.
    summary = run(tiny(data_dir, tmp_path / "m", train_steps=9, **flat))
    assert summary["steps"] == 6 and summary["stopped_early"]
    # A summary written before this rule said stopped_early at the budget's end, and a call
    # under that rule saved the larger budget without reopening it: it is reopened all the same.
    run(tiny(data_dir, tmp_path / "old", train_steps=5, **flat))
    summary_path = tmp_path / "old" / "train_metrics.json"
    summary = json.loads(summary_path.read_text())
    summary_path.write_text(json.dumps({**summary, "stopped_early": True}))
    config_lib.save(tiny(data_dir, tmp_path / "old", train_steps=9, **flat), str(tmp_path / "old"))
    summary = run(tiny(data_dir, tmp_path / "old", train_steps=9, **flat))
    assert summary["steps"] == 6 and summary["stopped_early"]


def test_a_larger_budget_goes_on_from_a_run_that_used_its_own(data_dir, tmp_path):
    # The budget bound the first run: given more steps, it goes on from its last checkpoint
    # and ends where a run given the larger budget from the start ends.
    trainer.run(tiny(data_dir, tmp_path / "a", train_steps=6, checkpoint_every=3))
    extended = trainer.run(tiny(data_dir, tmp_path / "a", train_steps=10, checkpoint_every=3))
    assert extended["steps"] == 10 and extended["resumed_from_step"] == 6
    fresh = trainer.run(tiny(data_dir, tmp_path / "b", train_steps=10, checkpoint_every=3))
    np.testing.assert_allclose(extended["final_loss"], fresh["final_loss"], rtol=1e-5)
    # A smaller budget than what was trained would be another run.
    with pytest.raises(ValueError, match="has trained 10 steps, more than the 8"):
        trainer.run(tiny(data_dir, tmp_path / "a", train_steps=8, checkpoint_every=3))
    # A run that early stopping ended (at step 10, before a budget of 12) is the same run under
    # any larger budget.
    summary_path = tmp_path / "a" / "train_metrics.json"
    summary = json.loads(summary_path.read_text())
    summary_path.write_text(json.dumps({**summary, "stopped_early": True, "max_steps": 12}))
    again = trainer.run(tiny(data_dir, tmp_path / "a", train_steps=20, checkpoint_every=3))
    assert again["already_finished"] and again["steps"] == 10


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--method=fm"], "--fm_features is required for --method=fm"),
        (["--method=cfm", "--fm_features=brand"], "--fm_features applies to --method=fm"),
        (["--method=fm", "--fm_features=colour"], "--fm_features names unknown features"),
        (["--alpha=-1"], "--alpha must be >= 0"),
        (["--dropout_rate=1.5"], r"--dropout_rate must be in \[0, 1\)"),
        (["--hidden_layers=64,x"], "--hidden_layers must be integers"),
        (["--batch_size=100000"], "--batch_size=100000 exceeds the"),
    ],
)
def test_invalid_flags_fail_at_start_with_the_flag_name(data_dir, tmp_path, flags, message):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "ssl_retrieval.train",
            f"--data_dir={data_dir}",
            f"--model_dir={tmp_path}/m",
            *flags,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 1
    assert "Traceback" not in out.stderr
    import re

    assert re.search(message, out.stderr), out.stderr[-2000:]


@pytest.mark.slow
def test_kill_9_then_rerun_resumes_and_finishes(data_dir, tmp_path):
    model_dir = tmp_path / "m"
    command = [
        sys.executable,
        "-m",
        "ssl_retrieval.train",
        f"--data_dir={data_dir}",
        f"--model_dir={model_dir}",
        "--method=cfm",
        "--batch_size=32",
        "--hidden_layers=256,16",
        "--embedding_dim=8",
        "--train_steps=3000",
        "--checkpoint_every=50",
        "--log_every=50",
    ]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + 240
    checkpoint_dir = model_dir / "checkpoints"
    while time.time() < deadline:
        # The index is written last: a checkpoint of step 100 or later is complete.
        if checkpoint_dir.exists() and any(
            p.name.endswith(".index") and int(p.name[5:-6]) >= 100 for p in checkpoint_dir.iterdir()
        ):
            break
        assert proc.poll() is None, proc.stdout.read().decode()[-2000:]
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    # The kill may come before the state file names the newest checkpoint: train resumes from
    # the newest readable one on disk, and so does this.
    trainer.use_newest_readable_checkpoint(str(checkpoint_dir))
    saved = int(tf.train.latest_checkpoint(str(checkpoint_dir)).rsplit("-", 1)[1])
    assert 100 <= saved < 3000
    resumed = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming from step {saved}" in resumed.stderr
    metrics = json.load(open(model_dir / "train_metrics.json"))
    assert metrics["steps"] == 3000 and metrics["resumed_from_step"] == saved


TWO_REPLICAS = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import ssl_retrieval.compat as c
    tf = c.tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from ssl_retrieval import config as config_lib, data, schema as s
    from ssl_retrieval.model import two_tower as model_lib
    data_dir, method = sys.argv[1], sys.argv[2]
    # No id dropout: it draws its own mask on each replica, like any dropout.
    cfg = config_lib.TrainConfig(data_dir=data_dir, model_dir="unused", method=method,
        batch_size=32, hidden_layers=(16, 8), embedding_dim=4, id_dropout=0.0)
    schema = s.load_from_data_dir(data_dir)
    batch = next(iter(data.training_dataset(data_dir, schema, 32, 32, seed=0)))
    single = model_lib.build_model(cfg)
    single.optimizer = tf.keras.optimizers.Adagrad(0.1)
    one = [float(x) for x in single.compute_losses(batch, training=True)]
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        mirrored = model_lib.build_model(cfg)
        mirrored.optimizer = tf.keras.optimizers.Adagrad(0.1)
    # Replica i gets rows [16 i, 16 i + 16) of the same global batch.
    halves = strategy.experimental_distribute_values_from_function(
        lambda ctx: tf.nest.map_structure(
            lambda t: t[ctx.replica_id_in_sync_group * 16:(ctx.replica_id_in_sync_group + 1) * 16],
            batch))
    run = lambda: strategy.run(lambda x: mirrored.compute_losses(x, training=True), args=(halves,))
    run()  # builds the mirrored variables
    mirrored.set_weights(single.get_weights())
    per_replica = run()
    two = [float(strategy.reduce("SUM", x, axis=None)) for x in per_replica]
    print(json.dumps({"one": one, "two": two}))
    """
)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["baseline", "cfm_no_dropout"])
def test_two_replicas_equal_one_replica_on_the_global_batch(data_dir, method):
    out = subprocess.run(
        [sys.executable, "-c", TWO_REPLICAS, data_dir, method],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    np.testing.assert_allclose(result["two"], result["one"], rtol=1e-4)
    assert result["one"][1] > 0


TWO_WORKERS = textwrap.dedent(
    """
    import json, os, sys
    import ssl_retrieval.compat as c
    tf = c.tf
    # The strategy must exist before any other TensorFlow op of the process.
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    from ssl_retrieval import config as config_lib, data, schema as s
    from ssl_retrieval.model import two_tower as model_lib
    data_dir, method = sys.argv[1], sys.argv[2]
    # No id dropout: it draws its own mask on each replica, like any dropout.
    cfg = config_lib.TrainConfig(data_dir=data_dir, model_dir="unused", method=method,
        batch_size=32, hidden_layers=(16, 8), embedding_dim=4, id_dropout=0.0)
    schema = s.load_from_data_dir(data_dir)
    batch = next(iter(data.training_dataset(data_dir, schema, 32, 32, seed=0)))
    tf.keras.utils.set_random_seed(0)
    single = model_lib.build_model(cfg)
    one = [float(x) for x in single.compute_losses(batch, training=True)]
    with strategy.scope():
        distributed = model_lib.build_model(cfg)
    # Worker i (one replica each) gets rows [16 i, 16 i + 16) of the same global batch.
    halves = strategy.experimental_distribute_values_from_function(
        lambda ctx: tf.nest.map_structure(
            lambda t: t[ctx.replica_id_in_sync_group * 16:(ctx.replica_id_in_sync_group + 1) * 16],
            batch))
    run = lambda: strategy.run(lambda x: distributed.compute_losses(x, training=True), args=(halves,))
    run()  # builds the variables
    distributed.set_weights(single.get_weights())
    two = [float(strategy.reduce("SUM", x, axis=None)) for x in run()]
    print(json.dumps({"one": one, "two": two}))
    """
)


def _free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


@pytest.mark.slow
def test_two_worker_processes_equal_one_replica_on_the_global_batch(data_dir):
    """multi_worker over loopback (TF_CONFIG): the in-batch negatives span both workers."""
    cluster = {"worker": [f"127.0.0.1:{port}" for port in _free_ports(2)]}
    workers = []
    for index in range(2):
        tf_config = {"cluster": cluster, "task": {"type": "worker", "index": index}}
        env = {**os.environ, "TF_CONFIG": json.dumps(tf_config)}
        workers.append(
            subprocess.Popen(
                [sys.executable, "-c", TWO_WORKERS, data_dir, "cfm_no_dropout"],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    outputs = []
    try:
        for worker in workers:
            stdout, stderr = worker.communicate(timeout=300)
            assert worker.returncode == 0, stderr[-3000:]
            outputs.append(json.loads(stdout.strip().splitlines()[-1]))
    finally:
        for worker in workers:
            worker.kill()
    for result in outputs:
        np.testing.assert_allclose(result["two"], result["one"], rtol=1e-4)
        assert result["one"][2] > 0  # the SSL loss is part of what was compared


CHECK_CONFIGS = textwrap.dedent(
    """
    import glob, json, sys
    from absl import flags
    from ssl_retrieval import train
    from ssl_retrieval.sources import debian
    names = [f["name"] for f in debian.FEATURES]
    checked = []
    for path in sorted(glob.glob("configs/debian_*.cfg")):
        if path.endswith("common.cfg"):
            continue
        flags.FLAGS.unparse_flags()
        flags.FLAGS(["train", f"--flagfile={path}"])
        config = train.config_from_flags().validate(names)
        checked.append((path, config.method, config.model_dir))
    print(json.dumps(checked))
    """
)


def test_debian_flagfiles_parse_and_validate():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run(
        [sys.executable, "-c", CHECK_CONFIGS], capture_output=True, text=True, cwd=root, timeout=120
    )
    assert out.returncode == 0, out.stderr[-3000:]
    checked = json.loads(out.stdout.strip().splitlines()[-1])
    assert sorted(m for _, m, _ in checked) == sorted(config_lib.METHODS)
    for path, method, model_dir in checked:
        assert path == f"configs/debian_{method}.cfg"
        assert model_dir == f"runs/debian/models/{method}"


def test_sampling_correction_uses_training_candidate_frequencies(data_dir, tmp_path):
    from ssl_retrieval import data

    counts: dict[str, int] = {}
    for batch in data.pairs_dataset(data_dir, "train", 256):
        for item_id in batch["candidate"]["item_id"].flat_values.numpy():
            counts[item_id.decode()] = counts.get(item_id.decode(), 0) + 1
    total = sum(counts.values())
    ids, probabilities = model_lib.candidate_probabilities(data_dir)
    assert dict(zip(ids, probabilities, strict=True)) == pytest.approx(
        {i: c / total for i, c in counts.items()}
    )

    config = tiny(data_dir, tmp_path, sampling_correction=True, train_steps=3)
    summary = trainer.run(config)
    assert summary["steps"] == 3 and np.isfinite(summary["final_loss"])
    model = model_lib.build_model(config)
    frequent = max(counts, key=counts.get)
    looked_up = model._probability_table.lookup(tf.constant([frequent, "never-a-candidate"]))
    np.testing.assert_allclose(
        looked_up.numpy(), [counts[frequent] / total, min(probabilities)], rtol=1e-6
    )


def test_validation_interval_is_capped_per_epoch_on_large_data(tmp_path):
    import types

    def interval(train_pairs, **flags):
        config = tiny(str(tmp_path), tmp_path, **{"batch_size": 1024, **flags})
        schema = types.SimpleNamespace(counts={"train_pairs": train_pairs})
        return trainer.validation_interval(config, schema)

    # Debian (251,835 pairs: 245 steps an epoch): every 100 steps, the cap does not bind.
    assert interval(251_835, validate_every=100) == 100
    # 1M items x 10M pairs (8,349 steps an epoch): 5 validations an epoch, not 83.
    assert interval(8_549_376, validate_every=100) == 1670
    assert interval(8_549_376, validate_every=100, max_validations_per_epoch=0) == 100
    assert interval(8_549_376, validate_every=0, patience=0) == 0
