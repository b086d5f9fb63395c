"""What every command (`python -m ssl_retrieval.<verb>`, `python -m pipelines.preprocess`) shares.

  option(default, help, ...)   a dataclass field that carries its flag's help text (and enum)
  define_flags(Config)         one absl flag per field: same name, default, help and enum
  from_flags(Config, holders)  the config built from the parsed flags
  main(body)                   the `main(argv)` of a command: no stray arguments, its own progress
                               at INFO and the libraries' warnings (`logs`; -v 1 shows all),
                               `error: <message>` on stderr and exit status 1 on a user error (or the
                               error's `exit_status`)

So an option is written once, in its config dataclass; the command only says which config it
builds and what it prints.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
import types
import typing
from collections.abc import Callable

from absl import app, flags

from ssl_retrieval import logs


def option(
    default=dataclasses.MISSING,
    help: str = "",
    *,
    enum=None,
    flag: bool = True,
    neutral=dataclasses.MISSING,
):
    """A dataclass field with the help text of its flag.

    Args:
      default: the default (of the field and of the flag).
      help: the flag's help text.
      enum: allowed values of a string option (an enum flag).
      flag: False for a field that has no flag.
      neutral: for an option added after runs were recorded, the value under which the code
        behaves as it did before the option existed. While the default is that value, adding
        the option leaves the recorded runs valid (experimentation/keys.py).
    """
    metadata = {"help": help, "enum": tuple(enum) if enum else None, "flag": flag}
    if neutral is not dataclasses.MISSING:
        metadata["neutral"] = neutral
    if isinstance(default, list | dict | set):
        raise TypeError("use a tuple default for a sequence option")
    return dataclasses.field(default=default, metadata=metadata)


def _base_type(annotation):
    """(type, optional): `int | None` -> (int, True); `tuple[int, ...]` -> (tuple[int, ...], False)."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        optional = len(args) < len(typing.get_args(annotation))
        # `str | float` options (e.g. a number or "auto") are string flags.
        return (args[0] if len(args) == 1 else str), optional
    return annotation, False


def flag_fields(cls) -> list[tuple[dataclasses.Field, object]]:
    """(field, resolved type) of each field of `cls` that has a flag."""
    hints = typing.get_type_hints(cls)
    return [
        (f, _base_type(hints[f.name])[0])
        for f in dataclasses.fields(cls)
        if f.metadata.get("flag", False)
    ]


def define_flags(cls, required: tuple[str, ...] = (), flag_values=flags.FLAGS) -> dict:
    """Defines one absl flag per `option` field of the dataclass `cls`; returns {name: holder}.

    Fields without a default get the flag default None; name them in `required`. The flags
    belong to the calling module (the command), so its `--help` lists them.
    """
    caller = sys._getframe(1).f_globals["__name__"]
    if caller == "__main__":  # absl names the main module by its path
        caller = sys.argv[0]
    holders = {}
    for field, kind in flag_fields(cls):
        default = None if field.default is dataclasses.MISSING else field.default
        help_text = field.metadata["help"] or field.name
        enum = field.metadata.get("enum")
        kwargs = {"flag_values": flag_values, "module_name": caller}
        if enum:
            holder = flags.DEFINE_enum(field.name, default, list(enum), help_text, **kwargs)
        elif kind is bool:
            holder = flags.DEFINE_bool(field.name, default, help_text, **kwargs)
        elif kind is int:
            holder = flags.DEFINE_integer(field.name, default, help_text, **kwargs)
        elif kind is float:
            holder = flags.DEFINE_float(field.name, default, help_text, **kwargs)
        elif typing.get_origin(kind) is tuple:
            listed = None if default is None else [_text(v) for v in default]
            holder = flags.DEFINE_list(field.name, listed, help_text, **kwargs)
        else:
            holder = flags.DEFINE_string(field.name, default, help_text, **kwargs)
        holders[field.name] = holder
    if required:
        flags.mark_flags_as_required(list(required), flag_values=flag_values)
    return holders


def _text(value) -> str:
    """How a list flag shows a default value: 1.0 as "1", 0.25 as "0.25"."""
    return f"{value:g}" if isinstance(value, float) else str(value)


def _convert(name: str, kind, value):
    if value is None or typing.get_origin(kind) is not tuple:
        return value
    (item, *_) = typing.get_args(kind)
    try:
        return tuple(item(v) for v in value)
    except ValueError:
        kinds = {int: "integers", float: "numbers"}.get(item, item.__name__)
        raise ValueError(f"--{name} must be {kinds}, got {value}") from None


def values_from_flags(cls, holders: dict) -> dict:
    """{field name: value} of the flags `define_flags(cls)` defined, lists as tuples."""
    kinds = dict((f.name, kind) for f, kind in flag_fields(cls))
    return {name: _convert(name, kinds[name], h.value) for name, h in holders.items()}


def from_flags(cls, holders: dict, **extra):
    """`cls(**flag values, **extra)`: the config of a command from its parsed flags."""
    return cls(**values_from_flags(cls, holders), **extra)


def main(
    body: Callable[..., str | None],
    errors: tuple[type[BaseException], ...] = (ValueError,),
    extra_args: bool = False,
    log_level: int | None = logging.INFO,
) -> Callable[[list[str]], None]:
    """The `main(argv)` of a command whose work is `body()`.

    Rejects positional arguments (or, with `extra_args`, passes them: `body(argv[1:])`), shows
    the command's own log records from `log_level` (None: INFO) and the libraries' from WARNING
    (absl's `--verbosity=1`: everything; `logs.command_logging`), prints what `body` returns,
    and turns `errors` into one line `error: <message>` on stderr and exit status 1 (or the
    error's `exit_status`).
    """

    def run(argv):
        if len(argv) > 1 and not extra_args:
            raise app.UsageError(f"unexpected arguments: {argv[1:]}")
        verbosity = flags.FLAGS["verbosity"].value if "verbosity" in flags.FLAGS else 0
        try:
            with logs.command_logging(verbosity, log_level or logging.INFO):
                message = body(list(argv[1:])) if extra_args else body()
        except errors as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(getattr(e, "exit_status", 1))  # 1, or the error's own (config.ChangedRunError)
        if message:
            print(message)

    return run
