"""The shape of the package, checked with `ast` on the source (nothing is imported or run).

- the floor plan: at most 16 entries under workbench/, stage packages whose imports run one way
  (face -> demo -> report -> plan -> sweep -> fit -> store -> train -> data -> model -> records -> core),
  no import cycle, storage computes no fit, one file name per module (parallel roles listed), nothing
  shadows the standard library, only `train.rundir` spells a run directory's file names;
- imports at the top of the module, unless the import adds a heavy dependency that the module does not
  already have (the face keeps even pandas inside its commands, for `workbench --help`);
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
import os
import re
import sys
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

PURE = (
    "workbench.fit.",
    "workbench.plan.",
    "workbench.model.flops",
    "workbench.model.shapes",
    "workbench.core.units",
    "workbench.core.errors",
    "workbench.records",
)
HEAVY = ("torch", "duckdb")
COMMAND_LINES, DEMO_LINES = 150, 150
FACE = ("workbench/cli.py", "workbench/commands/")  # the modules that print
# the stages in import order: a module imports only from its own package or one listed before it
LAYERS = ("core", "records", "model", "data", "train", "store", "fit", "sweep", "plan", "report", "demo", "face")
PARALLEL_ROLES = {"__init__.py", "config.py"}  # each stage's package file, and a stage's own config section
# heavy third-party packages: a function-local import of one (directly or through a workbench module) keeps
# it off the module's import path; anything else is imported at the top
HEAVY_IMPORTS = {
    "torch",
    "duckdb",
    "matplotlib",
    "scipy",
    "optuna",
    "submitit",
    "jinja2",
    "vl_convert",
    "tokenizers",
    "tiktoken",
    "pyarrow",
    "zstandard",
    "datasets",
    "wandb",
    "tensorboard",
    "omegaconf",  # ~0.2 s: only when a command line has overrides
}
FACE_HEAVY = {"pandas", "numpy", "pydantic", "yaml"}  # also kept inside the commands: `workbench --help` stays fast
# below the face, rich too: every process (each rank, each local worker) imports the logging module, and rich
# (a bar, a handler) is only wanted on a terminal; the face may import it, typer's help does anyway
STAGE_HEAVY = {"rich"}
# workbench modules that the face imports inside a command although they pull in nothing heavy: measured on
# `workbench --help` (the memory probe's subprocess/tempfile machinery: about 1-5 ms of a 0.13 s help), and
# typer's help renderer, loaded only for help, against stand-ins (commands/help_render.py)
HELP_LIGHT = {"workbench.train.parallel.memory_scale", "typer.rich_utils"}


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
        "def f():\n    import workbench.store.database as s\n    return grid._budget_label(1.0), s._x, grid.__name__\n"
    )
    found = _private_uses("workbench.probe", ast.parse(source))
    assert sorted(f.split(": ", 1)[1] for f in found) == [
        "from workbench.sweep.grid import _prefix",
        "grid._budget_label",
        "s._x",
    ]


# ---------------------------------------------------------------- pure modules


def _pure_modules() -> list[str]:
    return [m for m in _files() if m.startswith(PURE) or m + "." in PURE]


def test_pure_modules_reach_neither_torch_nor_duckdb():
    assert {
        "workbench.fit",
        "workbench.fit.laws",
        "workbench.plan.planner",
        "workbench.model.flops",
        "workbench.model.shapes",
    } <= set(_pure_modules())
    problems = []
    for module in _pure_modules():
        for reached, chain in _reachable(module).items():
            heavy = sorted(set(HEAVY) & _edges(reached)[1])
            if heavy:
                problems.append(f"{' -> '.join(chain)} imports {', '.join(heavy)}")
    assert not problems, "pure modules must not import torch or duckdb:\n" + "\n".join(sorted(set(problems)))


def test_the_import_walk_finds_heavy_imports_inside_functions():
    train, store = _edges("workbench.train.trainer")[1], _edges("workbench.store.database")[1]
    assert "torch" in train and "duckdb" in store
    # workbench.commands.train imports the trainer inside its function only
    assert "workbench.train.trainer" in _reachable("workbench.commands.train")


# ---------------------------------------------------------------- thin face


def _lines(path: Path) -> int:
    return len(path.read_text().splitlines())


def test_commands_and_demo_stay_thin():
    limits = {p: COMMAND_LINES for p in (PACKAGE / "commands").glob("*.py")} | {PACKAGE / "demo" / "run.py": DEMO_LINES}
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
        caught = {
            n.id
            for h in node.handlers
            for n in ast.walk(h.type or ast.Name("BaseException"))
            if isinstance(n, ast.Name)
        }
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
        "    try:\n        from workbench.store.database import Store\n    except ImportError:\n        return None\n"
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
    assert _defining(r"\.errors\(\)") == {"workbench/core/configfile.py"}
    assert _defining(r"removeprefix\(.Value error") == {"workbench/core/configfile.py"}
    # one walk of YAML nodes to key lines, and one key-path -> line lookup (config.load_yaml, line_of, Where)
    assert _defining(r"start_mark") == {"workbench/core/configfile.py"}
    assert _defining(r"(?m)^class Where\b") == {"workbench/core/configfile.py"}
    assert _defining(r"for i in range\(len\(\w+\), 0, -1\)") == {"workbench/core/configfile.py"}
    # the sweep's optimizer and checkpoint sections are parts of OptimConfig / CheckpointConfig, not copies
    assert not _defining(r"(?m)^class Sweep(Optim|Checkpoint)\b")
    # one run-id hash of a resolved config: sweep.grid.run_id
    hashing = _defining(r"sha1\(json\.dumps\(")
    assert hashing - KNOWN_RUN_ID_HASH == {"workbench/sweep/grid.py"}
    assert hashing >= KNOWN_RUN_ID_HASH, f"fixed: remove from KNOWN_RUN_ID_HASH: {KNOWN_RUN_ID_HASH - hashing}"
    # one way to parse a number in a config (config.number / config.count over units.parse_number)
    assert _defining(r"(?m)^def parse_number\b") == {"workbench/core/units.py"}
    assert not _defining(r"class _?null\b"), "use contextlib.nullcontext"


# ---------------------------------------------------------------- the floor plan


def _layer(module: str) -> str:
    """The stage package a module belongs to ('face' for the CLI and its commands; the root is core)."""
    parts = module.split(".")
    if len(parts) == 1:
        return "core"
    return "face" if parts[1] in ("cli", "commands") else parts[1]


def test_at_most_sixteen_entries_under_the_package_and_every_stage_is_a_layer():
    entries = sorted(p.name for p in PACKAGE.iterdir() if p.name != "__pycache__")
    assert len(entries) <= 16, entries
    packages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    assert packages - {"commands"} <= set(LAYERS), f"a package that is no stage of LAYERS: {packages - set(LAYERS)}"
    assert {_layer(m) for m in _files()} <= set(LAYERS)


def test_imports_run_one_way_through_the_stages():
    rank = {name: i for i, name in enumerate(LAYERS)}
    upward = []
    for module in _files():
        for target in _edges(module)[0]:
            if rank[_layer(target)] > rank[_layer(module)]:
                upward.append(f"{module} ({_layer(module)}) imports {target} ({_layer(target)})")
    assert not upward, "imports must run downward (LAYERS):\n" + "\n".join(sorted(upward))


def test_storage_imports_no_fit_code():
    fit = sorted(m for m in _reachable("workbench.store.database") if _layer(m) == "fit")
    fit += sorted(m for m in _reachable("workbench.store.importers") if _layer(m) == "fit")
    assert not fit, fit


def _top_edges(module: str) -> set[str]:
    """workbench modules imported when `module` is imported (its top level, not its functions)."""
    found = set()
    for node in _tree(_files()[module]).body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            targets = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [_absolute(module, node), *(f"{_absolute(module, node)}.{a.name}" for a in node.names)]
            )
            found |= {m for t in targets for m in _with_parents(t) if m in _files() and m != module}
    return found


def test_no_import_cycle_between_modules():
    graph = {m: _edges(m)[0] for m in _files()}
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            parents = set(_with_parents(node))  # a package's __init__ is imported with every module in it
            if nxt in parents:
                continue
            if state.get(nxt) == 1:
                cycles.append(" -> ".join([*path[path.index(nxt) :], nxt]) if nxt in path else f"{node} -> {nxt}")
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_one_file_name_per_module_and_nothing_shadows_the_standard_library():
    by_name: dict[str, list[str]] = {}
    for path in _files().values():
        by_name.setdefault(path.name, []).append(_rel(path))
    shared = {name: paths for name, paths in by_name.items() if len(paths) > 1 and name not in PARALLEL_ROLES}
    assert not shared, f"two modules share a file name (rename one to say what it does): {shared}"
    stdlib = set(sys.stdlib_module_names)
    shadows = sorted(_rel(p) for p in PACKAGE.rglob("*") if p.stem in stdlib and (p.suffix == ".py" or p.is_dir()))
    assert not shadows, f"modules named like standard-library modules: {shadows}"


def _string_constants(tree: ast.AST) -> list[tuple[int, str]]:
    """String literals, except the literal parts of f-strings (".lock" in f".{name}.lock" names no run file)."""
    parts = {id(v) for n in ast.walk(tree) if isinstance(n, ast.JoinedStr) for v in n.values}
    return [
        (n.lineno, n.value)
        for n in ast.walk(tree)
        if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in parts
    ]


def test_only_rundir_spells_the_run_directory_file_names():
    rundir = _tree(_files()["workbench.train.rundir"])
    names = {
        node.value.value
        for node in rundir.body
        if isinstance(node, ast.Assign)
        and isinstance(node.value, ast.Constant)
        and isinstance(node.value.value, str)
        and node.targets[0].id in ("CONFIG", "METRICS", "FINAL", "LOG", "CKPT", "LOCK", "JOBS")
    }
    assert names == {"config.yaml", "metrics.jsonl", "final.json", "train.log", "ckpt", ".lock", "jobs.json"}
    spelled = [
        f"{_rel(path)}:{line} {value!r}"
        for module, path in _files().items()
        if module != "workbench.train.rundir"
        for line, value in _string_constants(_tree(path))
        if value in names or any(value.endswith("/" + n) for n in names)
    ]
    assert not spelled, f"run-directory paths go through workbench.train.rundir: {spelled}"


def _local_imports(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            found += [n for n in ast.walk(node) if isinstance(n, ast.Import | ast.ImportFrom)]
    return list({id(n): n for n in found}.values())


def _third_party_reached(module: str, node: ast.Import | ast.ImportFrom) -> set[str]:
    """Third-party top-level names an import statement brings in, directly or through workbench modules."""
    outer = set()
    targets = (
        [a.name for a in node.names]
        if isinstance(node, ast.Import)
        else [_absolute(module, node), *(f"{_absolute(module, node)}.{a.name}" for a in node.names)]
    )
    for target in targets:
        if target.split(".")[0] != "workbench":
            outer.add(target.split(".")[0])
            continue
        for reached in (m for t in _with_parents(target) if t in _files() for m in _top_closure(t)):
            outer |= _top_third_party(reached)
    return outer


@cache
def _top_third_party(module: str) -> frozenset[str]:
    names = set()
    for node in _tree(_files()[module]).body:
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            names.add(node.module.split(".")[0])
    return frozenset(names - {"workbench", "__future__"})


@cache
def _top_closure(module: str) -> frozenset[str]:
    seen, todo = {module}, [module]
    while todo:
        for nxt in _top_edges(todo.pop()) - seen:
            seen.add(nxt)
            todo.append(nxt)
    return frozenset(seen)


def test_imports_sit_at_the_top_unless_they_keep_a_heavy_dependency_off_the_path():
    needless = []
    for module, path in _files().items():
        tree = _tree(path)
        have = {n for m in _top_closure(module) for n in _top_third_party(m)}
        heavy = HEAVY_IMPORTS | (FACE_HEAVY if _layer(module) == "face" else STAGE_HEAVY)
        for node in _local_imports(tree):
            named = [a.name for a in node.names] if isinstance(node, ast.Import) else [_absolute(module, node)]
            light = all(name in HELP_LIGHT for name in named)
            if light and _layer(module) == "face":
                continue
            if not (_third_party_reached(module, node) - have) & heavy:
                needless.append(f"{_rel(path)}:{node.lineno} {ast.unparse(node)}")
    assert not needless, "move these imports to the top of their module:\n" + "\n".join(needless)


def test_the_face_imports_no_heavy_module_at_its_top():
    face = [m for m in _files() if _layer(m) == "face"]
    heavy = HEAVY_IMPORTS | FACE_HEAVY
    problems = {
        m: sorted(bad) for m in face if (bad := {n for r in _top_closure(m) for n in _top_third_party(r)} & heavy)
    }
    assert not problems, f"`workbench --help` would import these: {problems}"


def test_no_format_escapes_issue_numbers_or_paths_outside_the_repo():
    texts = [
        p
        for p in (
            *ROOT.glob("workbench/**/*"),
            *ROOT.glob("tests/*.py"),
            *ROOT.glob("benchmarks/*.py"),
            *ROOT.glob("scripts/*"),
            *ROOT.glob("docs/**/*.md"),
            *ROOT.glob("sweeps/*"),
            ROOT / "README.md",
            *ROOT.glob(".ci/*"),
        )
        if p.is_file() and p.suffix not in (".pyc", ".png", ".svg")
    ]
    me = Path(__file__).resolve()
    skips = [f"{_rel(p)}" for p in texts if p != me and "fmt: " + "skip" in p.read_text(errors="replace")]
    assert not skips, f"format the code instead of escaping the formatter: {skips}"
    numbers = re.compile(r"\b[Ii]ssue[s]? #?\d+|\(issue \d+\)|#\d{2,3}\b(?![0-9a-fA-F])")
    issues = [
        f"{_rel(p)}: {m.group()}" for p in texts if p != me for m in numbers.finditer(p.read_text(errors="replace"))
    ]
    assert not issues, f"no issue numbers in code, docs or report text: {issues}"
    outside = re.compile(r"\.\./shared|/work/shared|shared/(?:STYLE|DESIGN|CPU-SCALE|BROWSER|slurm)")
    pointers = [f"{_rel(p)}" for p in texts if p != me and outside.search(p.read_text(errors="replace"))]
    assert not pointers, f"nothing in the repo points at files outside it: {pointers}"


def test_tests_run_away_from_the_checkout():
    """conftest's autouse fixture: a test's working directory is an empty one of its own and WORKBENCH_DB is
    unset, so a checkout's own database, fits and runs (the demo's) are never read or written by the tests."""
    assert Path.cwd() != ROOT and ROOT not in Path.cwd().parents
    assert not any(Path.cwd().iterdir()) and "WORKBENCH_DB" not in os.environ
