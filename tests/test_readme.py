"""The README a newcomer reads: at most 300 lines, links that resolve, and a Commands block of real commands.

Fast: the commands are looked up in the typer app's click tree, never run."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import typer

from workbench.cli import app

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
MAX_LINES = 300
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _docs() -> list[Path]:
    return [README, *sorted((ROOT / "docs").glob("*.md"))]


def _anchors(path: Path) -> set[str]:
    """GitHub's heading anchors of a markdown file: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    heads = re.findall(r"^#{1,6} +(.+?) *$", text, re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in heads}


def _is_group(command) -> bool:
    """A click group (typer's TyperGroup included): it has subcommands."""
    return isinstance(getattr(command, "commands", None), dict)


def _commands_block() -> list[str]:
    """The `workbench ...` lines of the first code block under the README's `## Commands`."""
    section = README.read_text().split("\n## Commands\n", 1)[1]
    block = re.search(r"```[a-z]*\n(.*?)```", section, re.S).group(1)
    return [re.split(r"\s+# ", line)[0].strip() for line in block.splitlines() if line.startswith("workbench ")]


def test_the_readme_is_at_most_300_lines():
    lines = README.read_text().count("\n")
    assert lines <= MAX_LINES, f"README.md has {lines} lines; move detail into docs/ (at most {MAX_LINES})"


def test_every_relative_link_in_the_readme_and_docs_resolves():
    broken = []
    for doc in _docs():
        text = re.sub(r"```.*?```", "", doc.read_text(), flags=re.S)
        for target in LINK.findall(text):
            if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
                continue
            path, _, anchor = target.partition("#")
            file = (doc.parent / path).resolve() if path else doc
            if not file.exists() or ROOT not in file.parents:
                broken.append(f"{doc.relative_to(ROOT)}: {target} (no such file in the repo)")
            elif anchor and file.suffix == ".md" and anchor not in _anchors(file):
                broken.append(f"{doc.relative_to(ROOT)}: {target} (no heading #{anchor})")
    assert not broken, "\n".join(broken)


def test_every_command_in_the_readme_commands_block_is_a_real_command_with_real_options():
    root = typer.main.get_command(app)
    lines = _commands_block()
    assert len(lines) >= 15, lines
    problems = []
    for line in lines:
        words = shlex.split(line)[1:]
        command, path = root, ["workbench"]
        while _is_group(command) and words and words[0] in command.commands:
            command = command.commands[words[0]]
            path.append(words.pop(0))
        if _is_group(command) and command is not root:
            problems.append(f"{line}: `{' '.join(path)}` needs a subcommand")
            continue
        if command is root and not (words and words[0].startswith("--")):
            problems.append(f"{line}: `{words[0] if words else ''}` is not a workbench command")
            continue
        known = {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}
        for option in re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", " ".join(words)):
            if option not in known:
                problems.append(f"{line}: `{' '.join(path)}` has no option {option}")
    assert not problems, "\n".join(problems)


def test_the_checker_sees_a_wrong_command_and_a_wrong_option():
    root = typer.main.get_command(app)
    assert "fit" in root.commands and "nosuch" not in root.commands
    fit = root.commands["fit"]
    assert "--sweep" not in {o for p in fit.params for o in p.opts}  # the old dialect: `fit --sweep NAME`
    sweep = root.commands["sweep"]
    assert _is_group(sweep) and {"plan", "launch", "status", "cancel", "tune"} <= set(sweep.commands)


def test_the_readme_memory_table_is_the_measured_one():
    """The README's memory rows are docs/MEMORY.md's measured rows, verbatim, for every layout tests/test_memory.py
    measures (8B, 70B and 405B)."""
    section = README.read_text().split("\n## Memory per GPU\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if re.match(r"\| \d+B \|", line)]
    measured = (ROOT / "docs" / "MEMORY.md").read_text().splitlines()
    assert len(rows) >= 14 and all(row in measured for row in rows)
    assert {row.split(" | ")[0] for row in rows} == {"| 8B", "| 70B", "| 405B"}
