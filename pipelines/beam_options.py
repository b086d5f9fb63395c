"""The Beam pipeline options of a preprocessing run, checked before the job starts.

`python -m pipelines.preprocess` passes every flag that is not its own to Beam. Beam itself only
logs `Unparseable argument` for a flag it does not know and runs on, so a typo of one of ours
(`--trian_fraction=0.1`) ran the job on all the data. Here every such flag must be an option
Beam's Python SDK declares (`PipelineOptions` and its subclasses: the DirectRunner's, Dataflow's,
Flink's, Spark's, Prism's, the portable runners', the file systems'); anything else stops the
run with one line naming it and the closest known flag.
"""

from __future__ import annotations

import argparse
import difflib
from collections.abc import Iterable

from apache_beam.options.pipeline_options import PipelineOptions


def _beam_parser() -> argparse.ArgumentParser:
    """The parser Beam builds from every declared option (`get_all_options` hands it over)."""
    captured = []
    PipelineOptions([]).get_all_options(add_extra_args_fn=captured.append)
    parser = captured[0]

    def error(message):
        # Beam's parser ignores an ambiguous prefix; argparse would print its usage and exit.
        if not message.startswith("ambiguous option: "):
            raise ValueError(f"Beam pipeline option {message}")

    parser.error = error
    return parser


def known_flags(parser: argparse.ArgumentParser) -> list[str]:
    """Every `--flag` the parser declares."""
    return [name for action in parser._actions for name in action.option_strings]


def pipeline_options(args: Iterable[str], own_flags: Iterable[str] = ()) -> PipelineOptions:
    """Beam's `PipelineOptions` of `args`, once each of them is known to be a Beam option.

    Args:
      args: the command line's flags that are not the command's own.
      own_flags: the command's own flags (`--name`), for the suggestion.

    Raises:
      ValueError: one line naming the first argument that is not a Beam option (with the
        closest of `own_flags` and Beam's options), or a Beam option with a bad value.
    """
    args = list(args)
    parser = _beam_parser()
    _, unknown = parser.parse_known_args(args)
    for arg in unknown:
        if not arg.startswith("-"):
            continue  # a value: its flag comes first in `unknown`, or it is reported below
        name = arg.split("=", 1)[0]
        candidates = [*own_flags, *known_flags(parser)]
        close = difflib.get_close_matches(name, candidates, n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        raise ValueError(
            f"unknown flag {name}: neither a flag of this command nor a Beam pipeline option{hint}"
        )
    if unknown:
        raise ValueError(f"unexpected argument {unknown[0]!r} (flags are --name=value)")
    return PipelineOptions(args)
