"""The README's "Commands" table is true: every command in it exists and accepts the flags shown.

Each command of the table's first column (several per row where a row lists more than one) is
checked without being run for long: ``make -n TARGET`` for a make target (prints, runs nothing);
``--help`` of the program or subcommand for everything else, where every flag the row shows must
be documented; a repository path the row names must exist. The cheap ones run for real:
``nautilus version`` / ``--version``, ``nautilus config`` (text and ``--json``, with an effective
value from the environment) and ``nautilus db migrate`` / ``db status`` against a fresh schema of
the test database. A row naming a command that does not exist fails.

Also here: every place in the tree that cites a section of ``docs/architecture.md`` by its quoted
name cites a section that exists, so the page and the code cannot drift apart silently.
"""

from __future__ import annotations

import functools
import os
import re
import secrets
import shlex
import subprocess
import sys
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import orjson
import pytest

from engines.shell.registry import ENGINES
from realtime import __version__
from tests.support import TEST_DSN

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
ARCHITECTURE = ROOT / "docs" / "architecture.md"
BIN = Path(sys.executable).parent
#: Placeholders the table uses for a required positional argument, and a real value for each.
POSITIONAL_SAMPLES = {"NAME": sorted(ENGINES)[0]}
_FLAG = re.compile(r"-{1,2}[A-Za-z][A-Za-z0-9-]*")
_WORD = re.compile(r"[a-z][a-z0-9-]*")


def table_rows(markdown: str, heading: str) -> list[list[str]]:
    """The cells of the first table under ``## <heading>`` (header and separator dropped),
    with Markdown's escaped pipes (``\\|``) kept inside their cell."""
    match = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## |\Z)", markdown, re.M | re.S)
    assert match, f"README has no '## {heading}' section"
    lines = [line for line in match.group(1).splitlines() if line.startswith("|")]
    assert len(lines) > 2, f"no table under '## {heading}'"
    return [
        [cell.strip().replace("\\|", "|") for cell in re.split(r"(?<!\\)\|", line)[1:-1]]
        for line in lines[2:]
    ]


@dataclass(frozen=True)
class Command:
    """One command of the table: ``program`` words, the literal subcommand ``words`` after it,
    the flags it shows (options in ``[...]`` included) and the repository paths it names."""

    text: str
    program: tuple[str, ...]
    words: tuple[str, ...]
    flags: tuple[str, ...]
    paths: tuple[str, ...]

    @property
    def name(self) -> str:
        return " ".join((*self.program, *self.words))

    @property
    def kind(self) -> str:
        return self.program[0]

    def help_argv(self) -> list[str]:
        argv = [*self.program, *self.words, *self._positionals(), "--help"]
        if argv[0] == "python":
            return [sys.executable, *argv[1:]]
        return [str(BIN / argv[0]), *argv[1:]]

    def _positionals(self) -> list[str]:
        """A real value for a required positional right after the words (``engine NAME``):
        its own parser documents the flags that follow it."""
        tokens = self.text.split()[len(self.program) + len(self.words) :]
        if tokens and tokens[0] in POSITIONAL_SAMPLES:
            return [POSITIONAL_SAMPLES[tokens[0]]]
        return []


def parse_command(text: str) -> Command:
    tokens = shlex.split(text.replace("[", " ").replace("]", " "))
    program_length = 3 if tokens[:2] == ["python", "-m"] else 1
    program = tuple(tokens[:program_length])
    words: list[str] = []
    for token in tokens[program_length:]:
        if program[0] == "make" or not _WORD.fullmatch(token):
            if program[0] == "make" and not words:
                words.append(token)
            break
        words.append(token)
    rest = tokens[program_length:]
    flags = tuple(dict.fromkeys(t.split("=")[0] for t in rest if _FLAG.fullmatch(t)))
    paths = tuple(t for t in rest if "/" in t and not t.startswith(("http", "ws")))
    return Command(text, program, tuple(words), flags, paths)


@functools.cache
def readme_commands() -> tuple[Command, ...]:
    rows = table_rows(README.read_text(encoding="utf-8"), "Commands")
    found = [parse_command(c) for row in rows for c in re.findall(r"`([^`]+)`", row[0])]
    assert found, "the Commands table lists no command"
    return tuple(found)


def run(
    argv: Sequence[str], env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(argv),
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


@functools.cache
def help_of(argv: tuple[str, ...]) -> subprocess.CompletedProcess[str]:
    """``--help`` output, once per command line for the whole module."""
    return run(argv)


def documented(flag: str, help_text: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", help_text) is not None


def check(command: Command) -> list[str]:
    """What is wrong with one command of the table (nothing: an empty list)."""
    problems = [f"{command.text!r}: no file {p}" for p in command.paths if not (ROOT / p).exists()]
    if command.kind == "make":
        done = run(["make", "-n", *command.words])
        if done.returncode != 0:
            problems.append(f"{command.text!r}: make -n failed: {done.stderr.strip()}")
        return problems
    if command.kind not in ("nautilus", "python", "locust"):
        return [*problems, f"{command.text!r}: no check for the program {command.kind!r}"]
    done = help_of(tuple(command.help_argv()))
    if done.returncode != 0:
        return [*problems, f"{command.text!r}: {' '.join(command.help_argv())} failed: "
                           f"{(done.stderr or done.stdout).strip()[-300:]}"]  # fmt: skip
    problems += [
        f"{command.text!r}: {flag} is not in `{command.name} --help`"
        for flag in command.flags
        if not documented(flag, done.stdout)
    ]
    return problems


def test_the_table_is_parsed_into_commands() -> None:
    names = {c.name for c in readme_commands()}
    assert {"make up", "make test", "nautilus up", "nautilus config"} <= names
    assert all(c.kind in ("make", "nautilus", "python", "locust") for c in readme_commands())
    sample = parse_command("nautilus up [--feed spy|sim] [--speed X] --distributed")
    assert (sample.words, sample.flags) == (("up",), ("--feed", "--speed", "--distributed"))
    module = parse_command("python -m loadtest.generator --url ws://H:1/ --channels a,b")
    assert (module.program, module.flags, module.paths) == (
        ("python", "-m", "loadtest.generator"),
        ("--url", "--channels"),
        (),
    )


def test_every_command_of_the_table_exists_with_the_flags_it_shows() -> None:
    commands = readme_commands()
    with ThreadPoolExecutor(max_workers=4) as pool:
        problems = [p for found in pool.map(check, commands) for p in found]
    assert problems == []


def test_a_command_that_does_not_exist_is_caught() -> None:
    assert check(parse_command("nautilus frobnicate [--fast]"))
    assert check(parse_command("make no-such-target"))
    assert check(parse_command("nautilus up [--no-such-flag]"))
    assert check(parse_command("python -m loadtest.no_such_module --url U"))
    assert check(parse_command("locust -f loadtest/no_such_file.py"))


def rows_with(*words: str) -> bool:
    return any(c.kind == "nautilus" and c.words[: len(words)] == words for c in readme_commands())


def test_version_commands_print_the_version() -> None:
    commands = [c for c in readme_commands() if c.kind == "nautilus" and "version" in c.text]
    assert commands, "the table lists no version command"
    for command in commands:
        done = run([str(BIN / "nautilus"), *shlex.split(command.text)[1:]])
        assert (done.returncode, done.stdout.strip()) == (0, f"nautilus-realtime {__version__}")


def test_config_prints_every_variable_with_its_effective_value_and_source() -> None:
    assert rows_with("config")
    environment = {"NAUTILUS_HUB_PORT": "8765"}
    with ThreadPoolExecutor(max_workers=2) as pool:
        text, as_json = pool.map(
            lambda extra: run([str(BIN / "nautilus"), "config", *extra], environment),
            ([], ["--json"]),
        )
    assert text.returncode == 0, text.stderr
    hub_port = next(
        line for line in text.stdout.splitlines() if line.startswith("NAUTILUS_HUB_PORT")
    )
    assert "8765" in hub_port and "env" in hub_port.split()
    assert as_json.returncode == 0, as_json.stderr
    rows = {r["variable"]: r for r in orjson.loads(as_json.stdout)}
    assert rows["NAUTILUS_HUB_PORT"] | {"help": ""} == {
        "variable": "NAUTILUS_HUB_PORT",
        "type": "int",
        "default": "8600",
        "value": "8765",
        "source": "env",
        "help": "",
    }
    assert {f"NAUTILUS_{name.upper()}_PORT" for name in ENGINES} <= set(rows)


@pytest.fixture
def fresh_schema() -> str:
    return f"readme_{secrets.token_hex(4)}"


async def test_db_commands_run_against_a_fresh_schema(fresh_schema: str) -> None:
    assert rows_with("db", "migrate")
    nautilus = str(BIN / "nautilus")
    try:
        migrated = run([nautilus, "db", "migrate", "--dsn", TEST_DSN, "--schema", fresh_schema])
        assert migrated.returncode == 0, migrated.stderr
        connection = await asyncpg.connect(TEST_DSN)
        try:
            tables = await connection.fetchval(
                "SELECT count(*) FROM information_schema.tables WHERE table_schema = $1",
                fresh_schema,
            )
        finally:
            await connection.close()
        assert tables >= 5  # instruments, trades, quotes, bars, signals, write_batches, ...
        if rows_with("db", "status"):
            status = run([nautilus, "db", "status", "--dsn", TEST_DSN, "--schema", fresh_schema])
            assert status.returncode == 0, status.stdout + status.stderr
    finally:
        connection = await asyncpg.connect(TEST_DSN)
        try:
            await connection.execute(f'DROP SCHEMA IF EXISTS "{fresh_schema}" CASCADE')
        finally:
            await connection.close()


def test_architecture_references_name_existing_sections() -> None:
    headings = set(re.findall(r"^#{2,3} (.+)$", ARCHITECTURE.read_text(encoding="utf-8"), re.M))
    cited: dict[str, set[str]] = {}
    for top in ("protocol", "realtime", "engines", "loadtest", "tests", "infra", "docs"):
        for path in (ROOT / top).rglob("*"):
            if path.suffix not in (".py", ".md", ".yml", ".yaml") or not path.is_file():
                continue
            text = " ".join(path.read_text(encoding="utf-8").split())  # references wrap lines
            for section in re.findall(r"docs/architecture\.md`{0,2}, \"([^\"]+)\"", text):
                cited.setdefault(section, set()).add(str(path.relative_to(ROOT)))
    assert cited, "nothing cites docs/architecture.md"
    assert {s: sorted(p) for s, p in cited.items() if s not in headings} == {}
