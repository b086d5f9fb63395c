"""A model's data dir (issue 34.5): evaluate and export read the one the model was trained on
by default, take a moved or copied copy of it, and refuse other data in one line naming both."""

import json
import os
import shutil

import pytest

from ssl_retrieval import config as config_lib
from ssl_retrieval import testing


@pytest.fixture(scope="module")
def dirs(cfm_model, tmp_path_factory):
    """The trained model, its data dir, a copy of that data elsewhere and other data."""
    root = tmp_path_factory.mktemp("data_dirs")
    copy = str(root / "copy")
    shutil.copytree(cfm_model["data_dir"], copy)
    other = testing.make_data_dir(str(root / "other"), num_items=200)
    return {**cfm_model, "copy": copy, "other": other}


def test_the_models_own_data_dir_by_default_and_a_copy_of_it(dirs):
    assert config_lib.model_data_dir(dirs["model_dir"]) == dirs["data_dir"]
    assert config_lib.model_data_dir(dirs["model_dir"], dirs["copy"]) == dirs["copy"]
    assert config_lib.model_data_dir(dirs["model_dir"], dirs["data_dir"]) == dirs["data_dir"]


def test_other_data_is_refused_naming_both_data_dirs_and_what_differs(dirs):
    with pytest.raises(ValueError) as caught:
        config_lib.model_data_dir(dirs["model_dir"], dirs["other"])
    message = str(caught.value)
    assert f"--data_dir={dirs['other']} holds other data than {dirs['model_dir']}" in message
    assert f"was trained on, {dirs['data_dir']} (its config.json)" in message
    assert "item_id vocabulary 200 vs 240" in message and "\n" not in message


def test_a_moved_model_takes_a_given_data_dir_and_asks_for_one(dirs, tmp_path):
    moved = tmp_path / "model"
    os.makedirs(moved)
    config = json.load(open(os.path.join(dirs["model_dir"], "config.json")))
    config["data_dir"] = str(tmp_path / "gone")
    json.dump(config, open(moved / "config.json", "w"))
    assert (
        config_lib.model_data_dir(str(moved), dirs["other"]) == dirs["other"]
    )  # nothing to compare
    with pytest.raises(ValueError, match="gone \\(its config.json\\), which is not a directory"):
        config_lib.model_data_dir(str(moved))


def _one_line_error(proc) -> str:
    assert proc.returncode == 1, proc.stderr[-2000:]
    (line,) = proc.stderr.splitlines()  # one line: no traceback, no library noise
    assert line.startswith("error: ")
    return line


@pytest.mark.parametrize("command", ["ssl_retrieval.evaluate", "ssl_retrieval.export"])
def test_commands_given_other_data_stop_in_one_line_naming_both(dirs, tmp_path, command):
    proc = testing.run_command(
        command,
        f"--model_dir={dirs['model_dir']}",
        f"--data_dir={dirs['other']}",
        f"--export_dir={tmp_path / 'export'}" if command.endswith("export") else "--ks=10",
        timeout=120,
    )
    line = _one_line_error(proc)
    assert dirs["other"] in line and dirs["data_dir"] in line and "vocabulary" in line
    assert not os.path.exists(tmp_path / "export")


def test_evaluate_needs_a_data_dir_for_a_reference_recommender():
    proc = testing.run_command("ssl_retrieval.evaluate", "--recommender=top_popular", timeout=120)
    assert _one_line_error(proc) == "error: --data_dir is required for --recommender=top_popular"


@pytest.mark.slow
def test_evaluate_and_export_run_on_the_models_data_dir_or_a_copy(dirs, tmp_path):
    output = tmp_path / "metrics.json"
    proc = testing.run_command(
        "ssl_retrieval.evaluate", f"--model_dir={dirs['model_dir']}", f"--output={output}"
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.load(open(output))["data_dir"] == dirs["data_dir"]
    proc = testing.run_command(
        "ssl_retrieval.export",
        f"--model_dir={dirs['model_dir']}",
        f"--data_dir={dirs['copy']}",
        f"--export_dir={tmp_path / 'export'}",
        "--k=10",
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    (info,) = [
        json.load(open(os.path.join(root, "export_info.json")))
        for root, _, files in os.walk(tmp_path / "export")
        if "export_info.json" in files
    ]
    assert info["data_dir"] == os.path.abspath(dirs["copy"])
