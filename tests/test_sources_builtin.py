"""`sources.builtin`: one config for every built-in source, passed to the source's own `build`."""

import dataclasses
import filecmp
import inspect
import os

import pytest

from ssl_retrieval.sources import builtin, debian, linked, movielens, synthetic

MODULES = {"debian": debian, "movielens": movielens, "synthetic": synthetic, "linked": linked}


def test_every_option_of_a_source_is_an_argument_of_its_build():
    assert tuple(builtin.OPTIONS) == builtin.SOURCES == tuple(MODULES)
    fields = {f.name for f in dataclasses.fields(builtin.SourceConfig)}
    for name, module in MODULES.items():
        arguments = set(inspect.signature(module.build).parameters)
        for option in (*builtin.OPTIONS[name], "num_shards", "format", "overwrite"):
            assert option in fields, option
            assert builtin._ARGUMENTS.get(option, option) in arguments, (name, option)


@pytest.mark.parametrize("source", ["synthetic", "linked"])
def test_build_by_name_writes_what_the_source_writes(tmp_path, source):
    options = dict(num_items=200, num_pairs=600, seed=4, num_shards=2)
    config = builtin.SourceConfig(source=source, output_dir=str(tmp_path / "by_name"), **options)
    summary = builtin.build(config)
    assert (summary["items"], summary["pairs"]) == (200, 600)
    MODULES[source].build(str(tmp_path / "direct"), **options)
    names = sorted(os.listdir(tmp_path / "direct"))
    assert names == sorted(os.listdir(tmp_path / "by_name"))
    _, different, errors = filecmp.cmpfiles(
        tmp_path / "direct", tmp_path / "by_name", names, shallow=False
    )
    assert different == errors == []


def test_an_unknown_source_names_the_flag(tmp_path):
    with pytest.raises(ValueError, match="--source must be one of debian, movielens"):
        builtin.build(builtin.SourceConfig(source="nope", output_dir=str(tmp_path)))
