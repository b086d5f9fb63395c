"""README.md and docs/*.md stay true: their links resolve and the commands they quote run.

What is checked, in README.md and every docs/*.md:

* **Links.** Every relative Markdown link or image, `[text](target)`, names a file or directory
  of the repository, relative to the page; a `#anchor` (on its own or after a page) is a heading
  of the target page, slugged as GitHub does. Links with a scheme (`https:`, `mailto:`) and links
  inside code are not checked.
* **Commands.** A command is a line of a `sh`/`bash`/`shell`/`console` (or unlabelled) fenced
  block, or an inline code span, that starts, after `VAR=value` assignments, with one of:
    - `python -m <module>` (any `python`, `python3`, `.venv/bin/python`): a module of
      `ssl_retrieval` or `pipelines` that exists (a package runs its `__main__`). Its flags are
      parsed by absl exactly as the command parses them (same flag objects, flagfiles read),
      except that no flag is required: a quoted command may leave flags out. So an unknown flag,
      a value its flag refuses (an enum, a number, a boolean) or a stray argument fails; a list
      flag's items are strings to absl, converted later by the command, so `--ks=ten` passes
      here. `pipelines.preprocess` passes the
      flags it does not define to Beam: those are parsed by Beam's own options parser (every
      `PipelineOptions` subclass, no abbreviations), so a flag that neither knows fails too.
      Modules outside the two packages (`pytest`, `pip`) are not checked.
    - `python scripts/<name>.py` / `python bench/<name>.py`, or the path alone: the file exists.
      A script with absl flags is parsed like a module; an argparse script runs until it parses
      its arguments, and that parser (types, choices) parses the command's; any other script
      must spell each flag of the command as a string literal (`"--slices"`).
    - `make <target>`: the Makefile defines each target (`NAME=value` arguments are variables).
    - `bash scripts/<name>.sh`: the script exists and mentions each flag of the command.
  Shell syntax is read with `shlex` (quotes, `\\` continuations); a `# comment` is not checked;
  `&&`, `||`, `|`, `;` and `&` separate commands; anything else (`curl`, `cp`, `git`, `pip`) is
  not a command.
* **Flags in prose.** Every `--flag` of an inline code span that starts with `--` (a span of
  flags, not a command) is a flag of some command (`python -m`, a script), of Beam, or of absl
  (`--help`, `--flagfile`); `--noflag` counts for a boolean `flag`.
* **Paths.** An inline code span that is a repository path (starting with `ssl_retrieval/`,
  `pipelines/`, `configs/`, `results/`, `scripts/`, `bench/`, `tests/` or `docs/`, with no
  `*`, `<` or `{`) exists.

Placeholders in commands: a `...` token, a `<placeholder>` token and `[optional]` usage
brackets are skipped; `--flag=VALUE` whose value holds `...` or a
`<...>` placeholder (`--flagfile=configs/<run>.cfg`) has its flag name checked, not its value; a
module or script name holding `<` (`python -m ssl_retrieval.<verb>`) is not a command.

Lines not to check (a command that shows a mistake, say): put `<!-- docs-test: skip -->` on the
line, or alone on the line before a fenced block to skip the whole block.

The flag parsing imports every command (TensorFlow, Beam) and every quoted script once, in one
subprocess: those tests are marked slow.
"""

from __future__ import annotations

import ast
import dataclasses
import glob
import json
import os
import re
import shlex
import subprocess
import sys
import textwrap
import urllib.parse

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SKIP_MARK = "<!-- docs-test: skip -->"
SHELL_LANGS = ("", "sh", "bash", "shell", "console")
PACKAGES = ("ssl_retrieval", "pipelines")
PATH_ROOTS = (
    "ssl_retrieval",
    "pipelines",
    "configs",
    "results",
    "scripts",
    "bench",
    "tests",
    "docs",
)
SEPARATORS = ("&&", "||", "|", ";", "&")
FENCE = re.compile(r"^(\s*)(```+|~~~+)\s*([\w+-]*)")
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
CODE_SPAN = re.compile(r"(`+)(.+?)\1", re.S)
FLAG = re.compile(r"(?<![\w-])--([A-Za-z][\w-]*)(?![\w*-])")  # not `--blend_*`


def doc_files(root: str = REPO) -> list[str]:
    """README.md and docs/*.md under `root`."""
    return [os.path.join(root, "README.md")] + sorted(glob.glob(os.path.join(root, "docs", "*.md")))


@dataclasses.dataclass
class Page:
    """A Markdown page split into prose lines and shell code lines (1-based line numbers).

    prose: (line, text) of each line outside fenced blocks, skipped lines left out.
    code: (line, text, lang) of each line inside a fenced block not skipped.
    """

    path: str
    prose: list[tuple[int, str]]
    code: list[tuple[int, str, str]]


def read_page(path: str) -> Page:
    """Splits a page into prose and code lines, dropping the lines marked to skip."""
    prose, code = [], []
    fence, lang, skip_block, previous = None, "", False, ""
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    for number, line in enumerate(lines, 1):
        match = FENCE.match(line)
        if fence is None and match:
            fence, lang = match.group(2), match.group(3).lower()
            skip_block = previous.strip() == SKIP_MARK
        elif fence is not None and line.strip().startswith(fence):
            fence = None
        elif fence is not None:
            if not skip_block and SKIP_MARK not in line:
                code.append((number, line, lang))
        elif SKIP_MARK not in line:
            prose.append((number, line))
        previous = line
    return Page(path, prose, code)


# --- links -------------------------------------------------------------------------------------


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: link text kept, lower case, punctuation dropped, spaces to -."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Page) -> set[str]:
    """Every heading anchor of a page (a repeated heading gets -1, -2, ... as on GitHub)."""
    seen: dict[str, int] = {}
    out = set()
    for _, line in page.prose:
        match = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not match:
            continue
        base = slug(match.group(1))
        count = seen.get(base, 0)
        seen[base] = count + 1
        out.add(base if count == 0 else f"{base}-{count}")
    return out


def _links(page: Page) -> list[tuple[int, str]]:
    """(line, target) of every link of the prose; inline code is blanked out first (a link in
    code is not a link), and a link's text may cross a line break."""
    text = "\n".join(line for _, line in page.prose)
    text = CODE_SPAN.sub(lambda m: re.sub(r"[^\n]", " ", m.group(0)), text)
    numbers = [n for n, _ in page.prose]
    return [(numbers[text.count("\n", 0, m.start())], m.group(1)) for m in LINK.finditer(text)]


def link_errors(path: str, root: str = REPO) -> list[str]:
    """One message per relative link of `path` that does not resolve (file or anchor)."""
    page = read_page(path)
    errors = []
    for number, target in _links(page):
        if re.match(r"^[a-zA-Z][\w+.-]*:", target):
            continue  # https:, mailto:
        file_part, _, anchor = urllib.parse.unquote(target).partition("#")
        resolved = os.path.normpath(os.path.join(os.path.dirname(path), file_part or path))
        where = f"{os.path.relpath(path, root)}:{number}: link {target!r}"
        if not os.path.exists(resolved):
            errors.append(f"{where}: no file {os.path.relpath(resolved, root)}")
        elif anchor and (not resolved.endswith(".md") or os.path.isdir(resolved)):
            errors.append(f"{where}: an anchor needs a Markdown page")
        elif anchor and anchor not in anchors(read_page(resolved)):
            errors.append(f"{where}: no heading #{anchor} in {os.path.relpath(resolved, root)}")
    return errors


# --- commands ----------------------------------------------------------------------------------


@dataclasses.dataclass
class Command:
    """A quoted command: what it runs and its arguments, with where it was quoted.

    kind: "module" (python -m), "script" (a .py file), "make" or "bash".
    target: the module, the script's repository path, or "make".
    args: the arguments to parse fully; names: flags whose value is a placeholder (name only).
    """

    where: str
    kind: str
    target: str
    args: list[str]
    names: list[str]


def _spans(page: Page) -> list[tuple[int, str]]:
    """(line, text) of every inline code span of the prose (a span may cross a line break)."""
    text = "\n".join(line for _, line in page.prose)
    numbers = [n for n, _ in page.prose]
    return [
        (numbers[text.count("\n", 0, m.start())], " ".join(m.group(2).split()))
        for m in CODE_SPAN.finditer(text)
    ]


def _shell_lines(page: Page) -> list[tuple[int, str]]:
    """(first line, text) of each shell command line of the fenced blocks, continuations joined."""
    out, pending, start = [], "", 0
    for number, line, lang in page.code:
        if lang not in SHELL_LANGS:
            continue
        if not pending:
            start = number
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        out.append((start, pending + line))
        pending = ""
    if pending:
        out.append((start, pending))
    return out


def _strip_comment(text: str) -> str:
    """The line without its shell comment: a `#` outside quotes that starts a word."""
    quote = None
    for i, char in enumerate(text):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or text[i - 1].isspace()):
            return text[:i]
    return text


def _segments(text: str) -> list[list[str]]:
    """Shell words of each command of a line, split at the shell's separators."""
    try:
        lexer = shlex.shlex(_strip_comment(text), posix=True, punctuation_chars="&|;")
        lexer.whitespace_split = True
        lexer.commenters = ""
        words = list(lexer)
    except ValueError:  # unbalanced quotes: prose, not a command
        return []
    segments, current = [], []
    for word in words:
        if word in SEPARATORS:
            segments.append(current)
            current = []
        else:
            current.append(word)
    segments.append(current)
    return [s for s in segments if s]


def _split_args(words: list[str]) -> tuple[list[str], list[str]]:
    """(arguments to parse, flag names to check by name only) under the placeholder rule."""
    args, names = [], []
    for word in words:
        if word == "..." or word.startswith("[") or word.endswith("]"):
            continue  # `...` and `[optional]` usage brackets are placeholders
        if word.startswith("--") and "=" in word:
            name, value = word[2:].split("=", 1)
            if "..." in value or re.search(r"<[^>]*>", value):
                names.append(name)
                continue
        if re.fullmatch(r"<[^>]*>", word):
            continue
        args.append(word)
    return args, names


def _is_python(word: str) -> bool:
    return bool(re.fullmatch(r"(?:\S*/)?python(?:3(?:\.\d+)?)?|\$\{?PY\}?", word))


def parse_command(words: list[str], where: str) -> Command | None:
    """The Command a shell word list runs, or None when it is not one of ours."""
    while words and re.fullmatch(r"[A-Za-z_]\w*=\S*", words[0]):
        words = words[1:]  # VAR=value before the command
    if not words:
        return None
    head, rest = words[0], words[1:]
    if _is_python(head) and rest[:1] == ["-m"] and len(rest) > 1:
        module = rest[1]
        if "<" in module or module.split(".")[0] not in PACKAGES:
            return None
        return Command(where, "module", module, *_split_args(rest[2:]))
    if _is_python(head) and rest and rest[0].endswith(".py"):
        head, rest = rest[0], rest[1:]
    if re.fullmatch(r"(?:\./)?(?:scripts|bench)/[\w.-]+\.py", head):
        return Command(where, "script", os.path.normpath(head), *_split_args(rest))
    if head == "make":
        return Command(where, "make", "make", *_split_args(rest))
    if head == "bash" and rest and "<" not in rest[0]:
        return Command(where, "bash", os.path.normpath(rest[0]), *_split_args(rest[1:]))
    return None


def commands(path: str, root: str = REPO) -> tuple[list[Command], list[tuple[str, str]]]:
    """(the commands quoted in a page, (where, span) of the other inline code spans)."""
    page = read_page(path)
    name = os.path.relpath(path, root)
    found, others = [], []
    for number, text in _shell_lines(page):
        for words in _segments(text):
            command = parse_command(words, f"{name}:{number}")
            if command:
                found.append(command)
    for number, text in _spans(page):
        parsed = [parse_command(words, f"{name}:{number}") for words in _segments(text)]
        found.extend(c for c in parsed if c)
        if not any(parsed):
            others.append((f"{name}:{number}", text))
    return found, others


def _makefile_targets(root: str) -> set[str]:
    with open(os.path.join(root, "Makefile"), encoding="utf-8") as f:
        text = f.read()
    targets = set()
    for match in re.finditer(r"^([\w./$() -]+?)\s*:(?!=)", text, re.M):
        targets.update(match.group(1).split())
    return targets


def _flag_name(word: str) -> str | None:
    return word[2:].split("=", 1)[0] if word.startswith("--") else None


def script_parser(path: str) -> str | None:
    """`absl` or `argparse` when a script's flags are parsed in the subprocess, else None."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    if "flags.DEFINE_" in text:
        return "absl"
    return "argparse" if "argparse.ArgumentParser(" in text else None


def command_modules(root: str = REPO) -> list[str]:
    """Every `python -m` command of the repository: the modules that call `app.run(`."""
    out = []
    for package in PACKAGES:
        for path in glob.glob(os.path.join(root, package, "**", "*.py"), recursive=True):
            with open(path, encoding="utf-8") as f:
                if "app.run(" not in f.read():
                    continue
            module = os.path.relpath(path, root)[: -len(".py")].replace(os.sep, ".")
            out.append(module.removesuffix(".__main__"))
    return sorted(out)


def static_flags(path: str) -> set[str]:
    """Flag names a script spells as string literals (`"--name"`, `"--name="`)."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read())
    return {
        node.value[2:].split("=", 1)[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and re.fullmatch(r"--[A-Za-z][\w-]*=?", node.value)
    }


def static_errors(command: Command, root: str = REPO) -> list[str]:
    """Errors of a make, bash or non-absl script command (no flag parsing needed)."""
    where = f"{command.where}: {command.kind} {command.target}"
    if command.kind == "make":
        targets = _makefile_targets(root)
        return [
            f"{where}: no Makefile target {t!r}"
            for t in command.args
            if "=" not in t and not t.startswith("-") and t not in targets
        ]
    path = os.path.join(root, command.target)
    if not os.path.isfile(path):
        return [f"{where}: no such file"]
    if command.kind == "script" and script_parser(path):
        return []  # parsed in the subprocess
    if command.kind == "bash":
        with open(path, encoding="utf-8") as f:
            known = set(FLAG.findall(f.read()))
    else:
        known = static_flags(path)
    words = [_flag_name(w) for w in command.args] + command.names
    return [f"{where}: unknown flag --{n}" for n in words if n and n not in known]


# The subprocess that parses absl flags: every command module is imported once; its flags are
# taken out of absl's global FlagValues (two commands may both define --data_dir) into its own.
CHECKER = textwrap.dedent(
    r"""
    import argparse, importlib, importlib.util, json, os, re, runpy, sys
    from absl import app, flags

    request = json.load(sys.stdin)
    FLAGS = flags.FLAGS
    app.define_help_flags()
    common = {id(FLAGS[n]): FLAGS[n] for n in FLAGS}  # absl's own: --flagfile, --verbosity, ...
    out = {"errors": [], "flags": {}, "beam": []}

    def load(target):
        if target.endswith(".py"):
            name = "_docs_" + re.sub(r"\W", "_", target)
            spec = importlib.util.spec_from_file_location(name, target)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            return
        spec = importlib.util.find_spec(target)
        if spec is None:
            raise ImportError(f"no module {target}")
        importlib.import_module(target + ".__main__" if spec.submodule_search_locations else target)

    class Captured(Exception):
        pass

    def argparse_parser(path):
        # The script runs as __main__ until it parses its arguments: the parser is taken there.
        def capture(self, args=None, namespace=None):
            raise Captured(self)

        original, sys.argv = argparse.ArgumentParser.parse_known_args, [path]
        argparse.ArgumentParser.parse_known_args = capture
        try:
            runpy.run_path(path, run_name="__main__")
        except Captured as e:
            parser = e.args[0]
        else:
            raise ValueError("it parses no arguments with argparse")
        finally:
            argparse.ArgumentParser.parse_known_args = original

        def error(message):
            raise ValueError(message)

        parser.error = error
        return parser

    owned, parsers = {}, {}
    for target, kind in request["targets"].items():
        before = set(FLAGS)
        try:
            if kind == "argparse":
                parsers[target] = argparse_parser(target)
                out["flags"][target] = sorted(
                    s[2:] for a in parsers[target]._actions for s in a.option_strings
                    if s.startswith("--"))
                continue
            load(target)
        except Exception as e:  # reported for every command of the target
            owned[target] = f"{type(e).__name__}: {e}"
            continue
        new = {id(FLAGS[n]): FLAGS[n] for n in FLAGS if n not in before}
        for name in [n for n in FLAGS if n not in before]:
            delattr(FLAGS, name)
        owned[target] = new
        names = set()
        for flag in new.values():
            names.add(flag.name)
            if flag.boolean:
                names.add("no" + flag.name)
        out["flags"][target] = sorted(names)

    class BeamParser(argparse.ArgumentParser):
        def error(self, message):
            raise ValueError(message)

    def beam_parser():
        from apache_beam.options import pipeline_options as po
        base = getattr(po, "_BeamArgumentParser", argparse.ArgumentParser)
        parser = type("Parser", (BeamParser, base), {})(allow_abbrev=False)
        for cls in {str(c): c for c in po.PipelineOptions.__subclasses__()}.values():
            cls._add_argparse_args(parser)
        return parser

    beam = None
    if any(c["target"] == "pipelines.preprocess" for c in request["commands"]):
        beam = beam_parser()
        out["beam"] = sorted(s[2:] for a in beam._actions for s in a.option_strings if s.startswith("--"))

    for c in request["commands"]:
        where = f'{c["where"]}: {c["target"]}'
        own = owned.get(c["target"])
        if isinstance(own, str):
            out["errors"].append(f"{where}: cannot import: {own}")
            continue
        if c["target"] in parsers:
            parser = parsers[c["target"]]
            try:
                parser.parse_args(c["args"])
            except ValueError as e:
                out["errors"].append(f"{where}: {e}")
            known = set(out["flags"][c["target"]])
            for name in c["names"]:
                if name not in known:
                    out["errors"].append(f"{where}: unknown flag --{name}")
            continue
        fv = flags.FlagValues()
        for flag in {**common, **own}.values():
            flag.validators = []  # no flag is required of a quoted command
            flag.unparse()
            fv[flag.name] = flag
        known_only = c["target"] == "pipelines.preprocess"
        try:
            rest = fv(["prog"] + c["args"], known_only=known_only)[1:]
            if beam is not None and known_only:
                _, unknown = beam.parse_known_args(rest)
                if unknown:
                    raise ValueError(f"neither its flag nor Beam's: {' '.join(unknown)}")
            elif rest and c["kind"] == "module":  # cli.main refuses stray arguments
                raise ValueError(f"stray arguments: {' '.join(rest)}")
        except (flags.Error, ValueError) as e:
            out["errors"].append(f"{where}: {e}")
        booleans = {f.name for f in own.values() if f.boolean}
        for name in c["names"]:
            if not (name in fv or name in ("flagfile", "undefok")
                    or (name.startswith("no") and name[2:] in booleans)
                    or (known_only and name in out["beam"])):
                out["errors"].append(f"{where}: unknown flag --{name}")
    json.dump(out, sys.stdout)
    """
)


def parse_flags(commands_: list[Command], root: str = REPO) -> dict:
    """Runs CHECKER on the absl commands; returns {"errors", "flags" per target, "beam"}."""
    parsed = [
        c
        for c in commands_
        if c.kind == "module"
        or (
            c.kind == "script"
            and os.path.isfile(os.path.join(root, c.target))
            and script_parser(os.path.join(root, c.target))
        )
    ]
    targets = sorted({c.target for c in parsed} | set(command_modules(root)))
    kinds = {
        t: script_parser(os.path.join(root, t)) if t.endswith(".py") else "absl" for t in targets
    }
    request = {"targets": kinds, "commands": [dataclasses.asdict(c) for c in parsed]}
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "TF_USE_LEGACY_KERAS": "1"}
    result = subprocess.run(
        [sys.executable, "-c", CHECKER],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        cwd=root,
        env=env,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout)


def all_commands(files: list[str]) -> tuple[list[Command], list[tuple[str, str]]]:
    found, others = [], []
    for path in files:
        c, o = commands(path)
        found += c
        others += o
    return found, others


# --- tests -------------------------------------------------------------------------------------


def test_readme_is_a_front_door():
    """STYLE 17: the README stays short; the rest lives in docs/."""
    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
        lines = len(f.read().splitlines())
    assert lines <= 300, f"README.md has {lines} lines: move the detail into a docs/ page"


def test_every_relative_link_resolves():
    errors = [e for path in doc_files() for e in link_errors(path)]
    assert not errors, "\n".join(errors)


def test_a_broken_link_or_anchor_is_reported(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("# A page\n\n## Its `--join` part\n")
    page = tmp_path / "README.md"
    page.write_text(
        "[ok](docs/a.md) [ok](docs/a.md#its---join-part) [ok](#top) [web](https://x.org/y)\n"
        "# Top\n"
        "[gone](docs/b.md) and [bad anchor](docs/a.md#its-join-part) `[code](nowhere.md)`\n"
        "```sh\n# [not a link](nowhere.md)\n```\n"
        f"[skipped](nowhere.md) {SKIP_MARK}\n"
    )
    errors = link_errors(str(page), root=str(tmp_path))
    assert len(errors) == 2, errors
    assert "README.md:3: link 'docs/b.md': no file docs/b.md" in errors[0]
    assert "no heading #its-join-part in docs/a.md" in errors[1]


def test_slug_matches_github():
    assert slug("Export and serving: `python -m ssl_retrieval.export`") == (
        "export-and-serving-python--m-ssl_retrievalexport"
    )
    assert slug("The [recipe](recipe.md), on test") == "the-recipe-on-test"
    assert slug("What each choice bought") == "what-each-choice-bought"


def test_commands_are_found_with_their_placeholders(tmp_path):
    page = tmp_path / "p.md"
    page.write_text(
        "Run `python -m ssl_retrieval.<verb>` or `make demo` (`--strategy=mirrored`).\n"
        "```sh\n"
        "PY=x .venv/bin/python -m pipelines.preprocess --items='a*.jsonl' \\\n"
        "    --pairs=... ... --runner=DataflowRunner  # a comment --not_a_flag\n"
        "cp -r a b && python3 bench/train.py --levers &\n"
        "bash scripts/demo.sh --parallel; curl -d '{\"k\": 5}' http://x\n"
        "```\n"
        f"{SKIP_MARK}\n"
        "```sh\npython -m ssl_retrieval.train --wrong\n```\n"
        "```python\nimport ssl_retrieval\n```\n"
    )
    found, others = commands(str(page), root=str(tmp_path))
    got = [(c.kind, c.target, c.args, c.names) for c in found]
    assert got == [
        (
            "module",
            "pipelines.preprocess",
            ["--items=a*.jsonl", "--runner=DataflowRunner"],
            ["pairs"],
        ),
        ("script", "bench/train.py", ["--levers"], []),
        ("bash", "scripts/demo.sh", ["--parallel"], []),
        ("make", "make", ["demo"], []),
    ]
    assert [text for _, text in others] == ["python -m ssl_retrieval.<verb>", "--strategy=mirrored"]


def test_quoted_paths_exist():
    errors = []
    for path in doc_files():
        page = read_page(path)
        for number, text in _spans(page):
            if re.fullmatch(rf"(?:{'|'.join(PATH_ROOTS)})/[^\s*<>{{}}]*", text):
                if not os.path.exists(os.path.join(REPO, text)):
                    errors.append(f"{os.path.relpath(path, REPO)}:{number}: no path {text}")
    assert not errors, "\n".join(errors)


def test_make_bash_and_plain_scripts_accept_their_flags():
    found, _ = all_commands(doc_files())
    assert any(c.kind == "make" for c in found)
    errors = [e for c in found if c.kind != "module" for e in static_errors(c)]
    assert not errors, "\n".join(errors)


def test_a_wrong_target_or_script_flag_is_reported():
    bad = [
        Command("x.md:1", "make", "make", ["demo", "DEMO_DIR=runs/x", "nosuchtarget"], []),
        Command("x.md:2", "bash", "scripts/debian_experiments.sh", ["--paralel"], []),
        Command("x.md:4", "script", "scripts/popularity_sweep.py", [], ["slicez"]),
        Command("x.md:5", "bash", "scripts/nosuch.sh", [], []),
    ]
    errors = [e for c in bad for e in static_errors(c)]
    assert errors == [
        "x.md:1: make make: no Makefile target 'nosuchtarget'",
        "x.md:2: bash scripts/debian_experiments.sh: unknown flag --paralel",
        "x.md:4: script scripts/popularity_sweep.py: unknown flag --slicez",
        "x.md:5: bash scripts/nosuch.sh: no such file",
    ]


# Commands each of which the flag check must refuse, run in the same subprocess as the docs'.
MISTAKES = {
    "python -m ssl_retrieval.similar --export_dir=x --item_idz=vim": "item_idz",
    "python -m ssl_retrieval.export --index=brute_forc": "brute_forc",
    "python -m ssl_retrieval.train --epochs=ten": "ten",
    "python -m ssl_retrieval.train --flagfile=configs/no_such.cfg": "no_such.cfg",
    "python -m pipelines.preprocess --items=a --trian_fraction=0.1": "trian_fraction",
    "python -m pipelines.preprocess --direct_running_mode=multi_prcessing": "multi_prcessing",
    "python -m pipelines.preprocess --items=... --runer=...": "runer",
    "python -m ssl_retrieval.no_such_verb --k=1": "no_such_verb",
    "python scripts/page_screenshot.py --export_dir=x --itme=vim": "itme",
    "python bench/preprocess.py --read_onyl": "read_onyl",
    "bench/serve.py --num_items=many": "many",
}


@pytest.fixture(scope="module")
def parsed():
    """The docs' commands and MISTAKES, parsed in one subprocess: (docs commands, result)."""
    found, _ = all_commands(doc_files())
    mistakes = [parse_command(shlex.split(text), f"mistake:{text}") for text in MISTAKES]
    return found, parse_flags(found + mistakes)


@pytest.mark.slow
def test_every_quoted_command_accepts_its_flags(parsed):
    found, result = parsed
    targets = {c.target for c in found if c.kind == "module"}
    # The stages' commands are all quoted somewhere.
    assert {"pipelines.preprocess", "ssl_retrieval.train", "ssl_retrieval.serve"} <= targets
    errors = [e for e in result["errors"] if not e.startswith("mistake:")]
    assert not errors, "\n".join(errors)


@pytest.mark.slow
def test_a_wrong_flag_or_value_is_reported(parsed):
    _, result = parsed
    for text, culprit in MISTAKES.items():
        errors = [e for e in result["errors"] if e.startswith(f"mistake:{text}:")]
        assert len(errors) == 1 and culprit in errors[0], (text, errors)


@pytest.mark.slow
def test_every_flag_named_in_prose_exists(parsed):
    _, result = parsed
    # absl's own flags, which every command has.
    known = set(result["beam"]) | {"help", "helpfull", "helpshort", "flagfile", "verbosity", "v"}
    for names in result["flags"].values():
        known |= set(names)
    for path in glob.glob(os.path.join(REPO, "scripts", "*.py")) + glob.glob(
        os.path.join(REPO, "bench", "*.py")
    ):
        known |= static_flags(path)
    for path in glob.glob(os.path.join(REPO, "scripts", "*.sh")):
        with open(path, encoding="utf-8") as f:
            known |= set(FLAG.findall(f.read()))
    _, others = all_commands(doc_files())
    errors = [
        f"{where}: --{name} is no command's flag (in `{text}`)"
        for where, text in others
        if text.startswith("--")  # a span of flags; `git worktree add --detach` is not ours
        for name in FLAG.findall(text)
        if name not in known
    ]
    assert not errors, "\n".join(errors)
