"""The layout's promises: the methods table, flags defined from the config dataclasses, the one
reader of a data dir, which package may import which, no import circle and no long function in
`ssl_retrieval/` and `pipelines/`."""

import ast
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
from ssl_retrieval.evaluation.config import BlendChoiceConfig, EvaluateConfig
from ssl_retrieval.serving.config import (
    ExportConfig,
    Limits,
    ScannParams,
    ServeConfig,
    SimilarConfig,
)
from ssl_retrieval.sources.builtin import SourceConfig

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


@pytest.mark.parametrize(
    "cls",
    [
        config_lib.TrainConfig,
        ExportConfig,
        ScannParams,
        Limits,
        SourceConfig,
        EvaluateConfig,
        SimilarConfig,
        BlendChoiceConfig,
    ],
)
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


# --- the whole tree: flags, import circles, function length ------------------------------------

PACKAGES = ("ssl_retrieval", "pipelines")


def _sources() -> dict[str, str]:
    """{module name: path} of every module of the two packages (a package by its own name)."""
    found = {}
    for package in PACKAGES:
        for folder, _, names in os.walk(os.path.join(ROOT, package)):
            for name in sorted(n for n in names if n.endswith(".py")):
                path = os.path.join(folder, name)
                module = os.path.relpath(path, ROOT)[: -len(".py")].replace(os.sep, ".")
                found[module.removesuffix(".__init__")] = path
    return found


def _tree(path: str) -> ast.Module:
    with open(path, encoding="utf-8") as f:
        return ast.parse(f.read())


def imported_modules(tree: ast.Module, modules: set[str]) -> set[str]:
    """The modules of `modules` that `tree` imports, at any depth of its code.

    `from p import m` imports the module p.m when there is one, else a name of p: `from
    ssl_retrieval import atomic` depends on atomic.py, not on the package's __init__.py, which
    Python runs first for every module below it anyway (counting that would make a circle of
    every package whose __init__.py imports one of its modules); `from ssl_retrieval import load`
    and `import ssl_retrieval` depend on __init__.py.
    """
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                found.add(submodule if submodule in modules else node.module)
    return found & modules


def import_graph() -> dict[str, set[str]]:
    sources = _sources()
    return {
        module: imported_modules(_tree(path), set(sources)) - {module}
        for module, path in sources.items()
    }


def circles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The import circles of `graph`: its strongly connected parts of two or more modules."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(node: str) -> None:  # Tarjan's algorithm
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            part = set()
            while not part or node not in part:
                part.add(stack.pop())
            if len(part) > 1:
                found.append(part)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_circle_finder_sees_function_level_imports_and_the_package_init():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [{"a", "b", "c"}]
    assert circles({"a": {"b"}, "b": set()}) == []
    modules = {"p", "p.m", "p.n"}
    body = "def f():\n    from p import m, helper\n    import p.n\n"
    assert imported_modules(ast.parse(body), modules) == {"p.m", "p", "p.n"}
    assert imported_modules(ast.parse("from p import m"), modules) == {"p.m"}


def test_no_import_circle_in_ssl_retrieval_or_pipelines():
    graph = import_graph()
    assert "ssl_retrieval.training.trainer" in graph and "pipelines.pipeline" in graph
    assert [sorted(c) for c in circles(graph)] == []


def _functions(node: ast.AST, prefix: str = ""):
    """(qualified name, node) of every function below `node`, methods as Class.method."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            if not isinstance(child, ast.ClassDef):
                yield f"{prefix}{child.name}", child
            yield from _functions(child, f"{prefix}{child.name}.")
        else:
            yield from _functions(child, prefix)


def test_no_function_over_100_lines():
    long = {
        f"{module}.{name}": node.end_lineno - node.lineno + 1
        for module, path in _sources().items()
        for name, node in _functions(_tree(path))
        if node.end_lineno - node.lineno + 1 > 100
    }
    assert long == {}


def test_every_command_defines_its_flags_from_a_dataclass():
    """`cli.define_flags` only: no module of the two packages defines an absl flag by hand."""
    by_hand = [
        f"{module}:{node.lineno}"
        for module, path in _sources().items()
        if module != "ssl_retrieval.cli"
        for node in ast.walk(_tree(path))
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and (node.func.attr.startswith("DEFINE_") or node.func.attr.startswith("mark_flag"))
    ]
    assert by_hand == []


def test_the_evaluate_commands_recommenders_are_the_references():
    from ssl_retrieval.evaluation import config as evaluation_config
    from ssl_retrieval.evaluation import peers

    assert evaluation_config.RECOMMENDERS == ("model", *peers.RECOMMENDERS)
