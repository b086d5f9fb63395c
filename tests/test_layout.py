"""The layout's promises: the methods table, flags defined from the config dataclasses, the one
reader of a data dir, and which package may import which."""

import dataclasses
import json
import os
import subprocess
import sys

import pytest
from absl import flags

from ssl_retrieval import cli, methods, testing
from ssl_retrieval import config as config_lib
from ssl_retrieval import data_dir as data_dir_lib
from ssl_retrieval.data_dir import DataDir
from ssl_retrieval.serving.config import ExportConfig, Limits, ScannParams, ServeConfig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# What each method was, as the model decoded `--method` before the table (string comparisons
# and split("+")): masking pattern, value dropout, feature-dropout layer, fm heads.
_OLD_MASKING = {
    "cfm": ("cfm", True),
    "rfm": ("rfm", True),
    "rfm_no_compl": ("rfm_no_compl", True),
    "cfm_no_dropout": ("cfm", False),
    "no_masking": ("none", True),
}


def _old_parts(method):
    parts = method.split("+")
    pattern, dropout = _OLD_MASKING.get(method, (None, False))
    return {
        "pattern": pattern,
        "value_dropout": dropout,
        "feature_dropout_layer": "fd" in parts or "fd_ssl" in parts,
        "fm": "fm" in parts,
        "auxiliary": method not in ("baseline", "fd"),
        "supervised_dropout": method == "fd",
        "spread_out": method == "so",
        "needs_dropout_rate": method in ("fd", "fd_ssl", "fd_ssl+fm", "no_masking"),
    }


def test_methods_table_matches_the_old_string_decoding():
    assert config_lib.METHODS == methods.NAMES
    for name in methods.NAMES:
        m = methods.get(name)
        old = _old_parts(name)
        assert m.masking == old["pattern"], name
        assert m.value_dropout == old["value_dropout"], name
        assert m.uses_feature_dropout == old["feature_dropout_layer"], name
        assert m.fm == old["fm"], name
        assert m.has_auxiliary_loss == old["auxiliary"], name
        assert m.feature_dropout == old["supervised_dropout"], name
        assert m.spread_out == old["spread_out"], name
        assert m.needs_dropout_rate == old["needs_dropout_rate"], name
    with pytest.raises(ValueError, match="--method must be one of"):
        methods.get("cfm+fm")


@pytest.fixture(scope="module")
def small_data_dir(tmp_path_factory):
    return testing.make_data_dir(str(tmp_path_factory.mktemp("data")), num_items=60, num_pairs=300)


@pytest.mark.parametrize("name", methods.NAMES)
def test_every_method_builds_a_model_with_its_parts(small_data_dir, tmp_path, name):
    from ssl_retrieval.compat import tf
    from ssl_retrieval.model import two_tower as model_lib

    extra = {"fm_features": ("item_id", "brand")} if methods.get(name).fm else {}
    config = testing.tiny_train_config(small_data_dir, tmp_path, method=name, **extra).validate()
    model = model_lib.build_model(config)
    old = _old_parts(name)
    assert (model.masker.pattern if model.masker else None) == old["pattern"]
    assert (model.value_dropout is not None) == old["value_dropout"]
    assert (model.feature_dropout is not None) == old["feature_dropout_layer"]
    assert (model.fm_masker is not None) == old["fm"]
    items = next(iter(_items(small_data_dir)))
    auxiliary = model.auxiliary_loss(items, tf.constant(3, tf.int64))
    assert (float(auxiliary) != 0.0) == old["auxiliary"]


def _items(data_dir):
    from ssl_retrieval import data as data_lib

    return data_lib.items_dataset(data_dir, 16)


@pytest.mark.parametrize("cls", [config_lib.TrainConfig, ExportConfig, ScannParams, Limits])
def test_flags_defined_from_a_dataclass_have_its_names_defaults_and_help(cls):
    values = flags.FlagValues()
    holders = cli.define_flags(cls, flag_values=values)
    values(["prog"])
    fields = {f.name: f for f in dataclasses.fields(cls) if f.metadata.get("flag", False)}
    assert set(holders) == set(fields)
    built = cli.values_from_flags(cls, holders)
    for name, field in fields.items():
        default = None if field.default is dataclasses.MISSING else field.default
        assert built[name] == default, name
        assert values[name].help.endswith(field.metadata["help"]), name
        if field.metadata["enum"]:
            assert list(values[name].parser.enum_values) == list(field.metadata["enum"]), name


def test_preprocess_and_serve_flags_come_from_their_dataclasses():
    from pipelines import pipeline

    for cls in (pipeline.PreprocessConfig, ServeConfig):
        values = flags.FlagValues()
        holders = cli.define_flags(cls, flag_values=values)
        assert set(holders) == {f.name for f in dataclasses.fields(cls)}


def test_list_flags_become_tuples_and_bad_integers_name_the_flag():
    values = flags.FlagValues()
    holders = cli.define_flags(config_lib.TrainConfig, flag_values=values)
    values(["prog", "--data_dir=d", "--model_dir=m", "--hidden_layers=8,4", "--fm_features=a"])
    config = cli.from_flags(config_lib.TrainConfig, holders)
    assert config.hidden_layers == (8, 4) and config.fm_features == ("a",)
    values(["prog", "--hidden_layers=8,x"])
    with pytest.raises(ValueError, match="--hidden_layers must be integers"):
        cli.from_flags(config_lib.TrainConfig, holders)


def test_data_dir_reads_each_file_once_and_names_a_missing_one(small_data_dir, tmp_path):
    source = DataDir(small_data_dir)
    assert DataDir.of(source) is source
    assert source.schema is source.schema
    assert source.mutual_info["features"] == source.schema.names
    ids, counts = source.candidate_counts
    assert len(ids) == len(counts) > 0
    assert set(source.slice_ids("head_items")) <= set(ids)
    name = source.schema.sparse_features[0].name
    assert source.vocabulary(name) is source.vocabulary(name)
    assert source.files("items")
    for relative in (data_dir_lib.SCHEMA, data_dir_lib.STATS, data_dir_lib.MUTUAL_INFO):
        assert os.path.exists(source.join(relative))
    assert json.load(open(source.join(data_dir_lib.STATS)))["files"] == data_dir_lib.STATS_FILES

    empty = DataDir(str(tmp_path))
    for read in (lambda d: d.schema, lambda d: d.stats, lambda d: d.candidate_counts):
        with pytest.raises(ValueError, match=r"no (schema|stats)\.json; is this a data dir"):
            read(empty)
    broken = tmp_path / "broken"
    os.makedirs(broken)
    for relative in (data_dir_lib.SCHEMA, data_dir_lib.STATS):
        (broken / relative).write_text(open(source.join(relative)).read())
    with pytest.raises(ValueError, match="no mutual_info.json"):
        _ = DataDir(str(broken)).mutual_info
    with pytest.raises(ValueError, match="no stats/candidate_counts.tsv"):
        _ = DataDir(str(broken)).candidate_counts


def test_serving_does_not_import_evaluation_or_training():
    code = (
        "import sys\n"
        "from ssl_retrieval.serving import exporter, http_app, page\n"
        "bad = sorted(m for m in sys.modules if m.startswith(('ssl_retrieval.evaluation', "
        "'ssl_retrieval.training', 'ssl_retrieval.experimentation')))\n"
        "print(bad)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_no_module_is_named_both_as_a_verb_and_its_noun():
    twins = {"train": "training", "evaluate": "evaluation", "export": "exporting"}
    twins |= {"serve": "serving", "tune": "tuning", "preprocess": "preprocessing"}
    for package in ("ssl_retrieval", "pipelines"):
        modules = {n[:-3] for n in os.listdir(os.path.join(ROOT, package)) if n.endswith(".py")}
        for verb, noun in twins.items():
            assert not {verb, noun} <= modules, (package, verb, noun)
