"""The experiment and tuning configs as typed dataclasses: every committed one loads, and a
value that cannot work is an error naming the file and the field."""

import glob
import json
import os

import pytest

from ssl_retrieval.experimentation import configs, typed_json

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def in_repo(monkeypatch):
    monkeypatch.chdir(ROOT)  # the configs name flagfiles relative to the checkout


def committed(kind: str) -> list[str]:
    """The committed configs in configs/<kind>/."""
    return sorted(glob.glob(os.path.join(ROOT, "configs", kind, "*.json")))


@pytest.mark.parametrize("path", committed("experiments"))
def test_every_experiment_config_loads(in_repo, path):
    config, raw = configs.load_experiment(path), json.load(open(path))
    assert list(config.data_dirs) == list(raw["data_dirs"])
    assert config.output_dir == raw["output_dir"] and config.tables


@pytest.mark.parametrize("path", committed("tuning"))
def test_every_tuning_config_loads(in_repo, path):
    config, raw = configs.load_tuning(path), json.load(open(path))
    assert list(config.methods) == list(raw["methods"])
    for name, method in config.methods.items():  # grid values as the JSON wrote them
        assert {k: list(v) for k, v in method.grid.items()} == raw["methods"][name].get("grid", {})


def test_a_loaded_config_has_its_defaults_and_typed_parts(in_repo):
    config = configs.load_tuning("configs/tuning/debian.json")
    assert config.promote["1.0"] == configs.Promotion(source="0.1", top=2)
    assert config.backbone.params == ("learning_rate", "temperature")
    assert config.variants["fm"].like == "cfm" and config.variants["fm"].fractions == ("0.1",)
    experiment = configs.load_experiment("configs/experiments/debian_recipe.json")
    assert experiment.tsne is None and experiment.claims is None
    assert experiment.flagfile("recipe", "0.1") == "configs/recipe.cfg"
    debian = configs.load_experiment("configs/experiments/debian.json")
    assert debian.flagfile("cfm", "0.01") == "configs/tuned/debian_cfm_0.01.cfg"
    assert debian.tsne.sample == 3000 and debian.ks == (10, 50)


def _experiment(**change) -> dict:
    config = {
        "output_dir": "out",
        "runs_dir": "runs",
        "data_dirs": {"1.0": "d", "0.1": "d01"},
        "methods": {"baseline": "b.cfg", "cfm": {"1.0": "c1.cfg", "0.1": "c01.cfg"}},
        "tables": {"main": {"methods": ["baseline", "cfm"], "fractions": ["1.0", "0.1"]}},
        "_comment": "keys starting with _ are comments",
    }
    return {**config, **change}


@pytest.mark.parametrize(
    "change, message",
    [
        ({"seed": [1, 2]}, r"x.json: seed: unknown field; the file may have \[.*'seeds'"),
        ({"seeds": "1,2"}, r"x.json: seeds: expected a list, got \"1,2\""),
        ({"seeds": [1, "2"]}, r"x.json: seeds\[1\]: expected an integer, got \"2\""),
        ({"seeds": [True]}, r"seeds\[0\]: expected an integer, got true"),
        ({"ks": [10, 5.5]}, r"ks\[1\]: expected an integer, got 5.5"),
        ({"tables": {"main": {"method": ["cfm"]}}}, r"tables.main.method: unknown field"),
        ({"methods": {"cfm": {"1.0": 3}}}, r"methods.cfm.1.0: expected a string, got 3"),
        ({"methods": {"cfm": 3}}, r"methods.cfm: expected a string or an object, got 3"),
        ({"tsne": {"methods": ["cfm"]}}, r"tsne.fraction: missing \(it has no default\)"),
        ({"tables": {"main": {"methods": ["cfn"]}}}, r"tables.main.methods: 'cfn' is not one of"),
        ({"fraction_flags": {"0.5": []}}, r"fraction_flags: '0.5' is not one of data_dirs"),
        (
            {"methods": {"baseline": "b.cfg", "cfm": {"1.0": "c1.cfg"}}},
            r"methods.cfm: no flagfile for fraction '0.1', which tables.main trains it at",
        ),
        (
            {"sweeps": {"alpha": {"methods": ["cfm"], "values": [1], "fraction": "0.5"}}},
            r"sweeps.alpha.fraction: '0.5' is not one of data_dirs",
        ),
    ],
)
def test_a_bad_experiment_config_names_the_file_and_field(change, message):
    with pytest.raises(typed_json.ConfigError, match=message):
        configs.experiment(_experiment(**change), "x.json")


def test_a_missing_field_and_a_file_that_is_not_json_are_named(tmp_path):
    values = _experiment()
    del values["runs_dir"]
    with pytest.raises(ValueError, match=r"^x.json: runs_dir: missing"):
        configs.experiment(values, "x.json")
    path = tmp_path / "bad.json"
    path.write_text('{"output_dir": ')
    with pytest.raises(ValueError, match=f"^{path}: not JSON"):
        configs.load_experiment(str(path))


def test_tsne_as_an_empty_object_draws_no_figure():
    assert configs.experiment(_experiment(tsne={})).tsne is None


def _tuning(tmp_path, **change) -> dict:
    (tmp_path / "c.cfg").write_text("")
    config = {
        "name": "toy",
        "output_dir": "out",
        "runs_dir": "runs",
        "flagfile_dir": "flags",
        "data_dirs": {"0.1": "d01", "1.0": "d"},
        "methods": {"cfm": {"flagfile": str(tmp_path / "c.cfg"), "grid": {"alpha": [0.3, 1]}}},
    }
    return {**config, **change}


def test_grid_values_keep_their_json_type(tmp_path):
    config = configs.tuning(_tuning(tmp_path))
    assert config.methods["cfm"].grid["alpha"] == (0.3, 1)
    assert isinstance(config.methods["cfm"].grid["alpha"][1], int)  # a trial of alpha=1, not 1.0


@pytest.mark.parametrize(
    "change, message",
    [
        ({"trials": "5"}, r"t.json: trials: expected an integer"),
        ({"trials": 0}, r"t.json: trials: must be at least 1"),
        ({"promote": {"1.0": {"source": "0.1", "top": 2}}}, r"promote.1.0.source: unknown field"),
        ({"promote": {"1.0": {"from": "0.1"}}}, r"promote.1.0.top: missing"),
        ({"methods": {"cfm": {"flagfile": "nowhere.cfg"}}}, r"methods.cfm.flagfile: no file"),
        (
            {"variants": {"fm": {"flagfile": "v.cfg", "like": "cfn", "params": []}}},
            r"variants.fm.like: 'cfn' is not one of methods",
        ),
        ({"backbone": {"method": "baseline", "params": ["x"]}}, r"must be the first of methods"),
    ],
)
def test_a_bad_tuning_config_names_the_file_and_field(tmp_path, change, message):
    with pytest.raises(typed_json.ConfigError, match=message):
        configs.tuning(_tuning(tmp_path, **change), "t.json")
