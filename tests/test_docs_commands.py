"""Docs that run: every `lary ...` command line in the README, `docs/`, the model cards and the Space's README is
parsed by the real command line parser (nothing is run), every `--flag` the prose names exists, and install lines
say what works before a release (no `pip install lary` from an index that does not have it yet)."""

from __future__ import annotations

import contextlib
import io
import re
import shlex
from pathlib import Path

import pytest

from lary.cli import COMMANDS, _load
from lary.cli import parse as parse_command_line
from lary.configs import parser as config_parser

REPO_ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted(
    {REPO_ROOT / "README.md", REPO_ROOT / "model_card.md", REPO_ROOT / "space" / "README.md",
     *(REPO_ROOT / "docs").glob("*.md"), *(REPO_ROOT / "examples").glob("*/README.md")}
)
FENCE = re.compile(r"^ *```([^\n`]*)\n(.*?)^ *```", re.S | re.M)
SHELL_FENCES = {"", "bash", "sh", "shell", "console", "zsh"}
SEPARATORS = {"&&", "||", ";", "|", "&"}
# a documented shape rather than a literal command: `lary train ... --resume`, `[--laq-config laq.json]`, `A | B`
PARTIAL = re.compile(r"\.\.\.|\[|\]|^\|$")
# argparse's complaint about a placeholder value such as N or DIR
PLACEHOLDER_VALUE = re.compile(r"invalid (?:\w+ value|choice): '[A-Z][A-Z0-9_]*'")
# `pip install lary`, `"lary[app]"`, `lary[app]==0.1.0`: lary from a package index, which does not have it yet
FROM_AN_INDEX = re.compile(r"""pip install (?:-U |--upgrade )?["']?lary\b|^lary(\[\w+\])?==""", re.M)


def _relative(path: Path) -> str:
    return str(path.relative_to(REPO_ROOT))


def command_lines(text: str) -> list[tuple[str, bool]]:
    """`(arguments after "lary", complete)` for every lary command in the text: in shell code blocks (continuation
    lines joined, comments dropped; also `python -m lary` and `accelerate launch ... -m lary`) and in inline code
    spans of the prose (partial by nature)."""
    found = []
    for language, block in FENCE.findall(text):
        if language.strip().lower() not in SHELL_FENCES:
            continue
        for line in re.sub(r"\\\n", " ", block).splitlines():
            try:
                tokens = shlex.split(line, comments=True)
            except ValueError:  # not shell (an unbalanced quote in some output): no command to check
                continue
            segments, segment = [], []
            for token in tokens:
                if token in SEPARATORS:
                    segments.append(segment)
                    segment = []
                else:
                    segment.append(token)
            for words in [*segments, segment]:
                start = _lary_arguments(words)
                if start is not None:
                    arguments = words[start:]
                    found.append((arguments, not any(PARTIAL.search(word) for word in arguments)))
    for span in re.findall(r"`([^`\n]+)`", FENCE.sub("", text)):
        if re.match(r"lary [a-z]", span):
            found.append((shlex.split(span)[1:], False))
    return found


def _lary_arguments(words: list[str]) -> int | None:
    """Where lary's arguments start in a simple command (`lary ...`, `VAR=1 lary ...`, `... -m lary ...`)."""
    for index, word in enumerate(words):
        if word == "lary" and (index == 0 or words[index - 1] == "-m" or all("=" in w for w in words[:index])):
            return index + 1
    return None


def _parser(command: str):
    parser = config_parser.build_parser(_load(COMMANDS[command].config), f"lary {command}", "")
    parser.add_argument("-v", "--verbose", action="count")
    parser.add_argument("-q", "--quiet", action="store_true")
    return parser


def _options(command: str) -> set[str]:
    return {flag for action in _parser(command)._actions for flag in action.option_strings}


def check(arguments: list[str], complete: bool) -> str | None:
    """Why the command line would fail, or None. A complete line is parsed and validated as `lary` does; a partial one
    must name a command and only options of that command (exactly, not abbreviated)."""
    if not arguments or arguments[0] not in COMMANDS:
        return f"no command {arguments[:1]} (commands: {', '.join(COMMANDS)})"
    if complete:
        stderr = io.StringIO()
        try:
            with contextlib.redirect_stderr(stderr):
                _, config, _ = parse_command_line(arguments)
            config_parser.validate(config)
        except SystemExit:
            message = stderr.getvalue().strip().splitlines()[-1]
            if not PLACEHOLDER_VALUE.search(message):
                return message
            # a placeholder where a number or a choice goes (`--steps N`): the line is a shape, checked as one
        except Exception as error:  # LaryError from validate()
            return str(error)
        else:
            return None
    options = _options(arguments[0])
    unknown = [word.split("=")[0] for word in arguments if word.startswith("--") and word.split("=")[0] not in options]
    return f"unknown options {unknown}" if unknown else None


def _all_commands() -> list[tuple[str, list[str], bool]]:
    return [(_relative(path), arguments, complete) for path in DOCS for arguments, complete in command_lines(path.read_text())]


def test_every_documented_lary_command_parses():
    commands = _all_commands()
    assert len(commands) > 50 and sum(complete for _, _, complete in commands) > 20  # the scan found the docs' commands
    failures = [f"{path}: lary {shlex.join(arguments)}: {why}"
                for path, arguments, complete in commands if (why := check(arguments, complete))]
    assert not failures, "\n".join(failures)


def test_every_flag_the_prose_names_exists():
    """An inline `--flag` is an option of some `lary` command or of a script in the repository (`--write` of
    `examples/tiny_lapa_dinov3_numbers.py`, `--port` of `scripts/serve_endpoint.py`)."""
    known = set().union(*(_options(command) for command in COMMANDS))
    for script in [*REPO_ROOT.glob("scripts/*.py"), *REPO_ROOT.glob("benchmarks/*.py"), *REPO_ROOT.glob("examples/*.py")]:
        known |= set(re.findall(r"""add_argument\(\s*(?:["']-\w["'],\s*)?["'](--[\w-]+)""", script.read_text()))
    failures = []
    for path in DOCS:
        for span in re.findall(r"`(--[^`\n]+)`", FENCE.sub("", path.read_text())):
            flag = span.split()[0].split("=")[0]
            names = {flag.replace("[no-]", ""), flag.replace("[no-]", "no-")} if "[no-]" in flag else {flag}
            if not names <= known:
                failures.append(f"{_relative(path)}: `{span}`")
    assert not failures, "no such option:\n" + "\n".join(failures)


def test_install_lines_say_what_works_before_a_release():
    sources = [*DOCS, *REPO_ROOT.glob("space/*.txt"), *REPO_ROOT.glob("space/*.py"), *REPO_ROOT.glob("lary/**/*.py")]
    failures = [f"{_relative(path)}: {match.group(0)!r}" for path in sources
                for match in FROM_AN_INDEX.finditer(path.read_text())]
    assert not failures, "lary is not on a package index yet; install from a checkout (pip install -e \".[app]\"):\n" + "\n".join(failures)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("```bash\nlary train --config laq.json --backbone b.json --data synthetic:4 --out o\n```", "unrecognized arguments"),
        ("```bash\nOMP_NUM_THREADS=1 lary demo --frames two\n```", "invalid int value"),
        ("```\naccelerate launch --multi_gpu -m lary extract --videos a.mp4 --out o \\\n    --cpu   # comment\n```",
         "one of the arguments --model --encoder is required"),
        ("```bash\npip install -e . && lary demoo\n```", "no command ['demoo']"),
        ("Run `lary extract --compile --fast` on a GPU.", "unknown options ['--fast']"),
        ("```bash\nlary train ... --out runs/laq --resume --turbo\n```", "unknown options ['--turbo']"),
        ("```python\nprint('lary demo --nonsense')\n```", None),
        ("```bash\nlary demo --frames N --model DIR\n```", None),  # placeholders
        ("```bash\nlary demo --frames N --fast\n```", "unknown options ['--fast']"),
    ],
)
def test_the_scan_finds_bad_command_lines(text, expected):
    """The checker itself: wrong flags, values, commands and missing required options are found, in code blocks
    (continuations, comments, `-m lary`, environment assignments) and in prose; Python blocks are not shell."""
    whys = [check(arguments, complete) for arguments, complete in command_lines(text)]
    if expected is None:
        assert all(why is None for why in whys), whys
    else:
        assert len(whys) == 1 and whys[0] is not None and expected in whys[0], whys
