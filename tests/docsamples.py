"""
The code blocks of README.md and docs/, and the tools tests/test_docs.py runs them with.

Every fenced block carries, on the line above its fence, an HTML comment
saying how it is checked (GitHub does not show it):

- C{<!-- doc-test: NAME -->}: tests/test_docs.py has a check called NAME that
  runs the block (commands, programs) or validates it (configs, quoted
  files), and compares any output it shows with the real output;
- C{<!-- doc-test: skip (REASON) -->}: not run, and why (installing system
  units, say).

A block with neither fails the suite, so a new sample cannot go untested
unnoticed.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tomllib
from dataclasses import dataclass
from pathlib import Path

from pbd_daemon import BIN
from terminal import on_a_terminal

REPO = Path(__file__).resolve().parents[1]
MARK = re.compile(r"^<!--\s*doc-test:\s*(.*?)\s*-->$")
SKIP = re.compile(r"^skip \((.+)\)$")
FENCE = re.compile(r"^(\s{0,3})(`{3,}|~{3,})(.*)$")


@dataclass(frozen=True)
class Block:
    """One fenced code block of a Markdown file."""

    path: Path  # relative to the repository
    line: int  # the opening fence's, counted from 1
    language: str
    text: str
    mark: str | None  # what its doc-test comment says, or None

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"

    @property
    def skip_reason(self) -> str | None:
        match = SKIP.match(self.mark or "")
        return match.group(1).strip() if match else None

    @property
    def name(self) -> str | None:
        """The check that runs it: None for a block without a mark, or skipped."""
        if self.mark is None or self.mark == "skip" or self.mark.startswith("skip "):
            return None
        return self.mark


def doc_files() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]


def read_blocks(path: Path) -> list[Block]:
    """The fenced blocks of one Markdown file, each with the doc-test mark above it."""
    lines = path.read_text().splitlines()
    blocks = []
    index = 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        if not opening:
            index += 1
            continue
        indent, fence, info = opening.groups()
        end = index + 1
        while end < len(lines) and not re.match(
            rf"^\s{{0,3}}{fence[0]}{{{len(fence)},}}\s*$", lines[end]
        ):
            end += 1
        body = [line.removeprefix(indent) for line in lines[index + 1 : end]]
        blocks.append(
            Block(
                path=path.relative_to(REPO),
                line=index + 1,
                language=info.strip().split(" ")[0],
                text="\n".join(body) + "\n",
                mark=_mark_above(lines, index),
            )
        )
        index = end + 1
    return blocks


def _mark_above(lines: list[str], fence_index: int) -> str | None:
    """The doc-test mark among the HTML comment lines right above a fence."""
    index = fence_index - 1
    while index >= 0 and lines[index].strip().startswith("<!--"):
        match = MARK.match(lines[index].strip())
        if match:
            return match.group(1)
        index -= 1
    return None


def all_blocks() -> list[Block]:
    return [block for path in doc_files() for block in read_blocks(path)]


def shell_environment(**extra: str) -> dict[str, str]:
    """The environment a reader's shell has: this venv activated."""
    environment = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    for name in ("LISTEN_FDS", "LISTEN_FDNAMES", "LISTEN_PID", "PBD_PASSWORD"):
        environment.pop(name, None)
    return {**environment, **extra}


def run_shell(
    command: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 30
) -> subprocess.CompletedProcess:
    """One shell command line, its output and errors interleaved as on a terminal."""
    return subprocess.run(
        ["bash", "-c", command],
        cwd=cwd,
        env=env or shell_environment(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
    )


def session(text: str) -> list[tuple[str, list[str]]]:
    """A terminal session sample (C{$ command} lines): each command and the output shown."""
    steps: list[tuple[str, list[str]]] = []
    for line in text.splitlines():
        if line.startswith("$ "):
            steps.append((line[2:], []))
        elif steps:
            steps[-1][1].append(line)
        elif line.strip():
            raise AssertionError(f"output before the first command: {line!r}")
    return steps


def command_lines(text: str) -> list[str]:
    """The commands of a C{sh} block, continuation lines joined."""
    return [line for line in text.replace("\\\n", " ").splitlines() if line.strip()]


def on_a_terminal_shell(
    command: str, answers: list[str], cwd: Path, env: dict[str, str]
) -> tuple[int, str]:
    """Run a shell command line on a pseudo-terminal, answering each prompt with a line."""
    return on_a_terminal(
        ["/bin/bash", "-c", command], [a.encode() + b"\n" for a in answers], cwd=cwd, env=env
    )


def install_without_pip(project: Path, site: Path) -> None:
    """
    Put a project on C{site} as C{pip install PROJECT} would, without pip.

    The tests never run pip: this copies the packages its pyproject.toml
    names and writes the C{.dist-info} (name, version, entry points) through
    which importlib.metadata, and so pbd, finds its plugins.
    """
    pyproject = tomllib.loads((project / "pyproject.toml").read_text())
    metadata = pyproject["project"]
    for package in pyproject["tool"]["setuptools"]["packages"]:
        shutil.copytree(project / package, site / package)
    info = site / f"{metadata['name'].replace('-', '_')}-{metadata['version']}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {metadata['name']}\nVersion: {metadata['version']}\n"
    )
    (info / "entry_points.txt").write_text(
        "".join(
            f"[{group}]\n" + "".join(f"{name} = {value}\n" for name, value in points.items())
            for group, points in metadata.get("entry-points", {}).items()
        )
    )
