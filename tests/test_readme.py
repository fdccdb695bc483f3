"""Every Python block in the README is checked: each is type-checked with mypy (strict,
the project's configuration), and each marked ``<!-- readme: run -->`` runs as written
and exits cleanly. A block needs a marker (``run`` or ``typecheck``), so a new example
cannot slip in unchecked."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"


@dataclass(frozen=True)
class Block:
    line: int
    mode: str
    code: str

    @property
    def name(self) -> str:
        return f"readme_line_{self.line}"


def blocks() -> list[Block]:
    text = README.read_text()
    found = []
    start = 0
    for match in re.finditer(r"```python\n(.*?)```", text, re.DOTALL):
        before = text[start : match.start()]
        markers = re.findall(r"<!-- readme: (run|typecheck) -->", before)
        line = text.count("\n", 0, match.start()) + 1
        found.append(Block(line, markers[-1] if markers else "", match.group(1)))
        start = match.end()
    return found


def test_every_python_block_says_how_it_is_checked() -> None:
    unmarked = [block.line for block in blocks() if not block.mode]
    assert blocks() and not unmarked, f"README python blocks without a marker: {unmarked}"


def test_every_python_block_type_checks(tmp_path: Path) -> None:
    paths = []
    for block in blocks():
        path = tmp_path / f"{block.name}.py"
        path.write_text(block.code)
        paths.append(str(path))
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"), *paths],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    "block", [b for b in blocks() if b.mode == "run"], ids=lambda block: block.name
)
def test_the_block_runs(block: Block) -> None:
    result = subprocess.run(
        [sys.executable, "-W", "error", "-c", block.code],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr


def test_the_try_it_example_prints_what_it_promises() -> None:
    section = README.read_text().split("## Try it", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert code is not None
    result = subprocess.run(
        [sys.executable, "-c", code.group(1)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    for stream in range(4):
        assert f"{stream} b'hello on stream {stream}'" in result.stdout


def shell_commands() -> list[list[str]]:
    text = README.read_text()
    commands = []
    for block in re.findall(r"```sh\n(.*?)```", text, re.DOTALL):
        for line in block.splitlines():
            line = line.split(" #", 1)[0].strip()
            if line and not line.startswith("#"):
                commands.append(shlex.split(line))
    return commands


@pytest.mark.parametrize("command", shell_commands(), ids=" ".join)
def test_every_shell_command_names_something_that_exists(command: list[str]) -> None:
    """Shell lines are not run (some take minutes), but what they call must exist and
    accept its arguments' shape: a script of ours, or a program whose ``--help`` works."""
    program = command[0]
    if program.startswith("scripts/"):
        assert os.access(ROOT / program, os.X_OK), f"{program} is not an executable script"
        return
    if program == ".venv/bin/python":
        help_command = [sys.executable, command[1], "--help"]
    elif program == "trio-sctls":
        help_command = [sys.executable, "-m", "trio_sctls", command[1], "--help"]
    elif program == "pip":
        assert command[1] == "install", command
        return
    else:
        pytest.fail(f"the README runs {program!r}: teach this test how to check it")
    result = subprocess.run(help_command, capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert result.returncode == 0, result.stderr
