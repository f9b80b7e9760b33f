"""Config files: YAML read with the line of every key, validated against strict pydantic models, every
error one line naming the file, the line and the field (the toolkit each stage's config module uses).

Numbers such as 1e18, 350M or 16B are accepted wherever a count or a float is expected (YAML 1.1
reads `1e18` as a string; these types read it as a number).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError

from workbench.core.errors import WorkbenchError
from workbench.core.units import parse_number, shown


def number(value: Any) -> float:
    """A config value as a finite float (1e18, '6e18', '350M'); a ValueError that pydantic places at the field."""
    try:
        return parse_number(value)
    except WorkbenchError as err:  # pydantic collects ValueErrors with the field's location
        raise ValueError(str(err.message).removeprefix("value: ") + f"; {err.hint}") from None


def count(value: Any) -> int:
    """A config value as a whole number (4096, '16B', 1e6); a ValueError that pydantic places at the field."""
    as_float = number(value)
    if as_float != math.floor(as_float):
        raise ValueError(f"{value!r} is not a whole number")
    if abs(as_float) >= 2**63:  # counts reach torch and DuckDB as 64-bit integers
        raise ValueError(f"{value!r} is beyond a 64-bit count (at most 9.2e18)")
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else int(as_float)


Number = Annotated[float, BeforeValidator(number)]
Count = Annotated[int, BeforeValidator(count)]


class Strict(BaseModel):
    """Unknown keys are errors; configs are frozen once resolved."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def load_yaml(path: str | Path) -> tuple[Any, dict[tuple, int]]:
    """Read a YAML file: (data, {key path: line number}). Malformed YAML, a file that is not UTF-8 text,
    a duplicate key, an anchor or alias (a few bytes of nested aliases expand without bound) and
    nesting deeper than MAX_YAML_DEPTH are one-line errors at file:line."""
    path = Path(path)
    if not path.is_file():
        raise WorkbenchError(f"config file {path} not found", "Check the path.")
    size = path.stat().st_size
    if size > MAX_CONFIG_BYTES:
        raise WorkbenchError(
            f"{path}: {size:,} bytes, over the {MAX_CONFIG_BYTES:,}-byte limit of a config file (docs/LIMITS.md)",
            "A sweep or run config is a few KB: check that this is the file you meant.",
        )
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise WorkbenchError(
            f"{path}: not a UTF-8 text file (byte {err.start})", "Give the YAML config file, saved as UTF-8."
        ) from None
    loader = None
    try:
        loader = _TreeLoader(text)  # checks the characters first
        node = loader.get_single_node()
        lines = _key_lines(node, source=str(path))
        data = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        position = getattr(err, "position", None)  # a ReaderError: a character YAML does not allow
        line = mark.line + 1 if mark else text[:position].count("\n") + 1 if isinstance(position, int) else None
        where = f"{path}:{line}" if line else str(path)
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise WorkbenchError(f"{where}: malformed YAML ({problem})", "Fix the YAML syntax there.") from None
    except _YamlRefusal as err:
        raise WorkbenchError(f"{path}:{err.line}: {err.message}", err.hint) from None
    except RecursionError:
        raise WorkbenchError(f"{path}: YAML nested too deeply", "Flatten the file.") from None
    except (ValueError, OverflowError) as err:  # an int of thousands of digits, a date out of range
        raise WorkbenchError(f"{path}: a value YAML cannot read ({str(err)[:80]})", "Fix the value.") from None
    finally:
        if loader is not None:
            loader.dispose()
    return data, lines


MAX_YAML_DEPTH = 64
MAX_CONFIG_BYTES = 1 << 20  # YAML is parsed in Python at ~1 MB/s: a larger config is refused before parsing


class _TreeLoader(yaml.SafeLoader):
    """A safe loader whose node graph is a tree: anchors and aliases are refused where they appear."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise _refused(event.start_mark, f"alias *{event.anchor}", "aliases are not supported")
        event = self.peek_event()
        if getattr(event, "anchor", None) is not None:
            raise _refused(event.start_mark, f"anchor &{event.anchor}", "anchors are not supported")
        return super().compose_node(parent, index)


def _refused(mark, what: str, why: str) -> WorkbenchError:
    return _YamlRefusal(mark.line + 1, f"{what} ({why})", "Write the values out in full.")


class _YamlRefusal(WorkbenchError):
    """A refused YAML construct; load_yaml adds the file name."""

    def __init__(self, line: int, message: str, hint: str):
        super().__init__(message, hint)
        self.line = line


def _key_lines(node: yaml.Node | None, prefix: tuple = (), source: str = "config") -> dict[tuple, int]:
    """{key path: line} for every key and list item; visits each node once (iteratively, the tree has no
    aliases) and refuses duplicate keys and nesting deeper than MAX_YAML_DEPTH."""
    lines: dict[tuple, int] = {}
    stack = [(node, prefix)]
    while stack:
        current, where = stack.pop()
        if len(where) - len(prefix) > MAX_YAML_DEPTH:
            raise WorkbenchError(f"{source}:{current.start_mark.line + 1}: YAML nested too deeply", "Flatten the file.")
        if isinstance(current, yaml.MappingNode):
            seen: dict[tuple, int] = {}
            for key, value in current.value:
                ident = (key.tag, key.value) if isinstance(key, yaml.ScalarNode) else (key.tag, id(key))
                line = key.start_mark.line + 1
                if ident in seen:
                    raise WorkbenchError(
                        f"{source}:{line}: duplicate key '{key.value}' (first at line {seen[ident]})",
                        "Keep one of them.",
                    )
                seen[ident] = line
                path = (*where, key.value if isinstance(key, yaml.ScalarNode) else line)
                lines[path] = line
                stack.append((value, path))
        elif isinstance(current, yaml.SequenceNode):
            for i, item in enumerate(current.value):
                lines[(*where, i)] = item.start_mark.line + 1
                stack.append((item, (*where, i)))
    return lines


def _fields_at(model: type[BaseModel], loc: tuple) -> list[str]:
    """The valid keys of the sub-model that `loc` (ending in the bad key) points into."""
    current: Any = model
    for part in loc[:-1]:
        if isinstance(part, int) or current is None:
            continue
        field = current.model_fields.get(part) if hasattr(current, "model_fields") else None
        current = _model_in(field.annotation) if field else None
    return sorted(current.model_fields) if current is not None and hasattr(current, "model_fields") else []


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def line_of(lines: dict[tuple, int], key: tuple) -> int | None:
    """The line of a key path (from `load_yaml`), or of its nearest parent that has one; None if none."""
    return next((lines[key[:i]] for i in range(len(key), 0, -1) if key[:i] in lines), None)


class Where:
    """`file:line` of a key path of a loaded YAML file, for errors found after validation; a key set on the
    command line (`overridden`: key path -> the override as typed) is placed there instead."""

    def __init__(self, source: str, lines: dict[tuple, int], overridden: dict[tuple, str] | None = None):
        self.source, self.lines, self.overridden = source, lines, overridden or {}

    def __call__(self, key: tuple) -> str:
        for path, text in self.overridden.items():
            if key[: len(path)] == path or path[: len(key)] == key and key:
                return f"command line ({text})"
        line = line_of(self.lines, key)
        return f"{self.source}:{line}" if line else self.source


def describe(
    err: ValidationError,
    model: type[BaseModel],
    where: str | Where,
    at: tuple | None = None,
    context: str = "",
    hint: str = "",
) -> WorkbenchError:
    """One line for the first problem of a ValidationError: file:line, field, what is wrong, the fix.

    `where` is the file (a Where finds the field's line); `at` places the error at that key path instead
    (for a model built from a file rather than read from it); `context` names what was being built;
    `hint` replaces the default fix.
    """
    first = err.errors()[0]
    loc = tuple(p for p in first["loc"] if not (isinstance(p, str) and p.startswith(("function-", "tagged-"))))
    field = ".".join(str(p) for p in loc) or "(top level)"
    if not field.isprintable():  # a key with a newline or a control character stays on one line
        field = repr(field)[1:-1]
    place = where(loc if at is None else at) if isinstance(where, Where) else where
    prefix = f"{context}: " if context else ""
    if first["type"] == "extra_forbidden":
        valid = _fields_at(model, loc)
        hint = hint or f"Valid keys here: {', '.join(valid)}."
        return WorkbenchError(f"{prefix}unknown key '{field}'", hint, where=place)
    if first["type"] == "missing":
        return WorkbenchError(f"{prefix}missing required key '{field}'", hint or "Add it to the config.", where=place)
    message = first["msg"].removeprefix("Value error, ")
    value = first.get("input")
    got = "" if isinstance(value, dict | list) or "(got " in message else f" (got {shown(value, 80)})"
    subject = f"{field}: " if loc else ""
    return WorkbenchError(f"{prefix}{subject}{message}{got}", hint or "Fix this value in the config.", where=place)


def parse_model(
    model: type[BaseModel],
    data: Any,
    source: str,
    lines: dict[tuple, int] | None = None,
    overridden: dict[tuple, str] | None = None,
):
    """Validate `data` against `model`; any problem becomes a one-line WorkbenchError (at the command-line
    override that set the key, for keys in `overridden`)."""
    if not isinstance(data, dict):
        raise WorkbenchError(
            f"{source}: expected a mapping of keys at the top level, got {type(data).__name__}",
            "Write the config as `key: value` lines.",
        )
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise describe(err, model, Where(source, lines or {}, overridden)) from None


def load(model: type[BaseModel], path: str | Path, overrides: Sequence[str] = ()):
    """Load and validate a YAML config file against `model`, with `key.sub=value` overrides applied first."""
    data, lines = load_yaml(path)
    data, overridden = apply_overrides(data, overrides, str(path))
    return parse_model(model, data, str(path), lines, overridden)


OVERRIDE_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*")


def apply_overrides(data: Any, overrides: Sequence[str], source: str) -> tuple[Any, dict[tuple, str]]:
    """`data` (a loaded YAML mapping) with each `key.sub=value` set, values read as YAML would read them
    (OmegaConf's dotlist grammar: numbers, true/false, null, [lists], quoted strings); returns the data and
    {key path: the override as typed} for errors. A malformed override is a one-line error naming it."""
    if not overrides:
        return data, {}
    from omegaconf import OmegaConf  # ~0.2 s of import: only when there are overrides
    from omegaconf.errors import OmegaConfBaseException

    if not isinstance(data, dict):
        raise WorkbenchError(f"{source}: expected a mapping at the top level to override", "Fix the file first.")
    overridden: dict[tuple, str] = {}
    for text in overrides:
        key, eq, _ = text.partition("=")
        if not eq or not OVERRIDE_KEY.fullmatch(key.strip()):
            raise WorkbenchError(
                f"command line: {text[:80]!r} is not an override KEY=VALUE",
                "Write overrides as dotted keys of the YAML, e.g. optim.lr_peak=3e-4.",
            )
        try:
            value = OmegaConf.to_container(OmegaConf.from_dotlist([text]))
        except (OmegaConfBaseException, yaml.YAMLError, ValueError) as err:  # ValueError: an int of 4,300+ digits
            shown = text if len(text) <= 80 and text.isprintable() else repr(text[:80])
            raise WorkbenchError(
                f"command line ({shown}): cannot read the value ({str(err).splitlines()[0][:200]})",
                "Quote strings with spaces or brackets, e.g. name='my run'.",
            ) from None
        path = tuple(key.strip().split("."))
        _set(data, path, _leaf(value, path), text)
        overridden[path] = text
    return data, overridden


def _leaf(container: Any, path: tuple) -> Any:
    for part in path:
        container = container[part]
    return container


def _set(data: dict, path: tuple, value: Any, text: str) -> None:
    """Set data[path] = value, creating mappings on the way; a path through a non-mapping is an error."""
    node = data
    for i, part in enumerate(path[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            where = ".".join(path[: i + 1])
            raise WorkbenchError(
                f"command line ({text}): {where} is a value, not a section", f"Override {where} itself."
            )
        node = child
    node[path[-1]] = value


def dump_yaml(config: BaseModel) -> str:
    """The config as YAML that `load` reads back to an equal object."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
