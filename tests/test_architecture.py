"""The shape of the package, checked with `ast` on the source (nothing is imported or run).

- no workbench module uses a `_private` name of another workbench module;
- the pure science modules reach neither torch nor duckdb, through any chain of workbench imports;
- the commands and the demo stay thin (line limits);
- library modules log, the face prints;
- a few concepts are defined once (validation-error formatter, YAML key lines, run-id hash, Where).

The KNOWN sets name the offenders that other work in flight removes; empty them when it lands (a test
below fails on an entry that no longer offends, so that they do not linger).
"""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "workbench"

# files that import a private name of another workbench module today (being fixed elsewhere)
KNOWN_PRIVATE: set[str] = set()
# files over their line limit today (being shrunk elsewhere)
KNOWN_OVER: set[str] = set()
# library files that still print (being moved to logging elsewhere)
KNOWN_PRINTS: set[str] = set()
# files that still hash a config into a run id of their own (being fixed elsewhere)
KNOWN_RUN_ID_HASH: set[str] = set()

PURE = ("fit", "laws", "plan", "layout", "flops", "shapes", "units", "errors")
HEAVY = ("torch", "duckdb")
COMMAND_LINES, DEMO_LINES = 150, 150
FACE = ("workbench/cli.py", "workbench/commands/")  # the modules that print


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def _files() -> dict[str, Path]:
    """{module name: file} of every module of the package."""
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


@cache
def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement that can run: at the top, in functions, in try blocks; not under TYPE_CHECKING."""
    found = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append(node)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def _absolute(module: str, node: ast.ImportFrom) -> str:
    """The absolute module an ImportFrom reads from (relative imports resolved against `module`)."""
    if not node.level:
        return node.module or ""
    is_package = _files()[module].name == "__init__.py"
    base = module.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _with_parents(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


@cache
def _edges(module: str) -> tuple[set[str], set[str]]:
    """(workbench modules that importing `module` imports, third-party top-level names it imports)."""
    inner, outer = set(), set()
    for node in _imports(_tree(_files()[module])):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            source = _absolute(module, node)
            targets = [source] + [f"{source}.{alias.name}" for alias in node.names]
        for target in targets:
            if target.split(".")[0] == "workbench":
                inner.update(m for m in _with_parents(target) if m in _files())
            elif target:
                outer.add(target.split(".")[0])
    inner.discard(module)
    return inner, outer


def _reachable(module: str) -> dict[str, list[str]]:
    """Every workbench module that importing `module` may import, with one import chain to it."""
    chains = {m: [m] for m in _with_parents(module) if m in _files()}
    todo = list(chains)
    while todo:
        current = todo.pop()
        for nxt in sorted(_edges(current)[0]):
            if nxt not in chains:
                chains[nxt] = [*chains[current], nxt]
                todo.append(nxt)
    return chains


# ---------------------------------------------------------------- private names


def _private(name: str) -> bool:
    return any(part.startswith("_") and not (part.startswith("__") and part.endswith("__")) for part in name.split("."))


def _private_uses(module: str, tree: ast.Module | None = None) -> list[str]:
    """`from workbench.x import _y`, `import workbench._x`, and `x._y` on a workbench module bound to x."""
    tree, found, modules = tree or _tree(_files()[module]), [], {}
    for node in _imports(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("workbench.") and _private(alias.name):
                    found.append(f"line {node.lineno}: import {alias.name}")
                if alias.name.startswith("workbench") and alias.asname:
                    modules[alias.asname] = alias.name
            continue
        source = _absolute(module, node)
        if source.split(".")[0] != "workbench" or source == module:
            continue
        if _private(source):
            found.append(f"line {node.lineno}: from {source}")
        for alias in node.names:
            if _private(alias.name):
                found.append(f"line {node.lineno}: from {source} import {alias.name}")
            elif f"{source}.{alias.name}" in _files():
                modules[alias.asname or alias.name] = f"{source}.{alias.name}"
    for node in ast.walk(tree):
        named = isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in modules
        if named and modules[node.value.id] != module and _private(node.attr):
            found.append(f"line {node.lineno}: {node.value.id}.{node.attr}")
    return found


def test_no_module_uses_a_private_name_of_another():
    offenders = {_rel(_files()[m]): uses for m in _files() if (uses := _private_uses(m))}
    unexpected = {path: uses for path, uses in offenders.items() if path not in KNOWN_PRIVATE}
    assert not unexpected, f"private names used across modules (make them public or move them): {unexpected}"
    assert not KNOWN_PRIVATE - set(offenders), f"fixed: remove from KNOWN_PRIVATE: {KNOWN_PRIVATE - set(offenders)}"


def test_the_private_name_check_sees_every_kind_of_use():
    source = (
        "from workbench.sweep.grid import _prefix, expand_runs\n"
        "from workbench.sweep import grid\n"
        "def f():\n    import workbench.store as s\n    return grid._budget_label(1.0), s._x, grid.__name__\n"
    )
    found = _private_uses("workbench.probe", ast.parse(source))
    assert sorted(f.split(": ", 1)[1] for f in found) == [
        "from workbench.sweep.grid import _prefix",
        "grid._budget_label",
        "s._x",
    ]


# ---------------------------------------------------------------- pure modules


def _pure_modules() -> list[str]:
    return [m for m in _files() if m.split(".")[1:2] and m.split(".")[1] in PURE]


def test_pure_modules_reach_neither_torch_nor_duckdb():
    assert {"workbench.fit", "workbench.laws", "workbench.plan", "workbench.flops", "workbench.shapes"} <= set(
        _pure_modules()
    )
    problems = []
    for module in _pure_modules():
        for reached, chain in _reachable(module).items():
            heavy = sorted(set(HEAVY) & _edges(reached)[1])
            if heavy:
                problems.append(f"{' -> '.join(chain)} imports {', '.join(heavy)}")
    assert not problems, "pure modules must not import torch or duckdb:\n" + "\n".join(sorted(set(problems)))


def test_the_import_walk_finds_heavy_imports_inside_functions():
    train, store = _edges("workbench.train")[1], _edges("workbench.store")[1]
    assert "torch" in train and "duckdb" in store
    # workbench.commands.train imports the trainer inside its function only
    assert "workbench.train" in _reachable("workbench.commands.train")


# ---------------------------------------------------------------- thin face


def _lines(path: Path) -> int:
    return len(path.read_text().splitlines())


def test_commands_and_demo_stay_thin():
    limits = {p: COMMAND_LINES for p in (PACKAGE / "commands").glob("*.py")} | {PACKAGE / "demo.py": DEMO_LINES}
    over = {_rel(p): _lines(p) for p, limit in limits.items() if _lines(p) >= limit}
    unexpected = {path: n for path, n in over.items() if path not in KNOWN_OVER}
    assert not unexpected, f"over {COMMAND_LINES} lines (move the logic into the library): {unexpected}"
    assert not KNOWN_OVER - set(over), f"now under the limit: remove from KNOWN_OVER: {KNOWN_OVER - set(over)}"


# ---------------------------------------------------------------- logging, not printing


def _prints(tree: ast.Module) -> list[str]:
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Name) and func.id == "print":
            found.append(f"line {node.lineno}: print")
        elif isinstance(func, ast.Attribute) and func.attr in ("echo", "secho", "print"):
            found.append(f"line {node.lineno}: .{func.attr}")
    return found


def test_library_modules_log_and_do_not_print():
    library = [p for p in _files().values() if not _rel(p).startswith(FACE)]
    offenders = {_rel(p): found for p in library if (found := _prints(_tree(p)))}
    unexpected = {path: found for path, found in offenders.items() if path not in KNOWN_PRINTS}
    assert not unexpected, f"library code logs (logging.getLogger(__name__)); only the CLI prints: {unexpected}"
    assert not KNOWN_PRINTS - set(offenders), f"fixed: remove from KNOWN_PRINTS: {KNOWN_PRINTS - set(offenders)}"


# ---------------------------------------------------------------- no guards around our own modules


def _guards(module: str, tree: ast.Module) -> list[int]:
    """Lines of try blocks that import a workbench module and catch its ImportError (or anything)."""
    lines = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Try):
            continue
        caught = {n.id for h in node.handlers for n in ast.walk(h.type or ast.Name("BaseException"))
                  if isinstance(n, ast.Name)}  # fmt: skip
        ours = any(
            isinstance(i, ast.ImportFrom)
            and _absolute(module, i).startswith("workbench")
            or isinstance(i, ast.Import)
            and any(a.name.startswith("workbench") for a in i.names)
            for i in _imports(ast.Module(body=node.body, type_ignores=[]))
        )
        if ours and caught & {"ImportError", "ModuleNotFoundError", "Exception", "BaseException"}:
            lines.append(node.lineno)
    return lines


def test_the_print_and_guard_checks_see_them():
    source = (
        "import typer\ndef f():\n    print('x')\n    typer.echo('y')\n"
        "    try:\n        from workbench.store import Store\n    except ImportError:\n        return None\n"
    )
    tree = ast.parse(source)
    assert _prints(tree) == ["line 3: print", "line 4: .echo"]
    assert _guards("workbench.probe", tree) == [5]


def test_no_import_guards_around_workbench_modules():
    guarded = [f"{_rel(path)}:{line}" for module, path in _files().items() for line in _guards(module, _tree(path))]
    assert not guarded, f"workbench's own modules are always there; drop the guard: {guarded}"
    skips = [
        f"{p.name}:{n}"
        for p in sorted((ROOT / "tests").glob("*.py"))
        for n, line in enumerate(p.read_text().splitlines(), 1)
        if re.search(r"importorskip\(\s*[\"']workbench|find_spec\(\s*[\"']workbench", line)
    ]
    assert not skips, f"tests never skip on a workbench module: {skips}"


# ---------------------------------------------------------------- each concept once


def _defining(pattern: str) -> set[str]:
    regex = re.compile(pattern)
    return {_rel(p) for p in _files().values() if regex.search(p.read_text())}


def test_each_concept_is_defined_once():
    # one formatter for pydantic validation errors: config.describe
    assert _defining(r"\.errors\(\)") == {"workbench/config.py"}
    assert _defining(r"removeprefix\(.Value error") == {"workbench/config.py"}
    # one walk of YAML nodes to key lines, and one key-path -> line lookup (config.load_yaml, line_of, Where)
    assert _defining(r"start_mark") == {"workbench/config.py"}
    assert _defining(r"(?m)^class Where\b") == {"workbench/config.py"}
    assert _defining(r"for i in range\(len\(\w+\), 0, -1\)") == {"workbench/config.py"}
    # the sweep's optimizer and checkpoint sections are parts of OptimConfig / CheckpointConfig, not copies
    assert not _defining(r"(?m)^class Sweep(Optim|Checkpoint)\b")
    # one run-id hash of a resolved config: sweep.grid.run_id
    hashing = _defining(r"sha1\(json\.dumps\(")
    assert hashing - KNOWN_RUN_ID_HASH == {"workbench/sweep/grid.py"}
    assert hashing >= KNOWN_RUN_ID_HASH, f"fixed: remove from KNOWN_RUN_ID_HASH: {KNOWN_RUN_ID_HASH - hashing}"
    # one way to parse a number in a config (config.number / config.count over units.parse_number)
    assert _defining(r"(?m)^def parse_number\b") == {"workbench/units.py"}
    assert not _defining(r"class _?null\b"), "use contextlib.nullcontext"
