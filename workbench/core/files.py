"""The single home for safe writes and careful reads of files: names that become paths are checked before
the first write, files are written whole through a temp name in their folder and renamed in, a full or
read-only disk is one line naming the path and the space needed, and JSON files are read with a cap on
their size and nesting (docs/LIMITS.md).

Every byte this package writes goes through `os.write` (here: atomic_write_bytes, append_text, OsStream),
and every file is put in place with `os.replace`: the fault-injection tests patch those two and `os.link`.
"""

from __future__ import annotations

import errno
import io
import json
import math
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from workbench.core.errors import WorkbenchError

# ---------------------------------------------------------------- full and read-only disks

DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG}


class DiskError(WorkbenchError):
    """A write failed for want of space, quota or a writable file system: nothing earlier was lost, and the
    same command continues once there is room (a prepare keeps its work folder, a run its checkpoints)."""


def free_bytes(path: str | Path) -> int | None:
    """Free bytes on the file system of `path` (or of its nearest existing parent); None if unknown."""
    path = Path(path)
    for folder in (path, *path.parents):
        try:
            return shutil.disk_usage(folder).free
        except OSError:
            continue
    return None


def size_text(n_bytes: float | None) -> str:
    """1536 -> '1.5 KiB'; None -> 'unknown'."""
    if n_bytes is None:
        return "unknown"
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n_bytes >= scale:
            return f"{n_bytes / scale:.1f} {unit}"
    return f"{int(n_bytes)} B"


def disk_error(err: OSError, path: str | Path, need_bytes: float | None = None) -> WorkbenchError:
    """A one-line error for an OSError while writing `path`: a DiskError for a full disk, an exceeded quota
    or a read-only file system (with the free space and what the write needed), else what the OS said."""
    code = err.errno
    if code == errno.EROFS:
        return DiskError(
            f"cannot write {path}: the file system is read-only",
            "Point the output at a writable folder (or remount it read-write); nothing earlier was lost.",
        )
    if code in DISK_ERRNOS:
        need = f"needs about {size_text(need_bytes)}, " if need_bytes else ""
        why = "disk quota exceeded" if code == errno.EDQUOT else "no space left on the device"
        return DiskError(
            f"cannot write {path}: {why} ({need}{size_text(free_bytes(path))} free)",
            "Free some space (or point the output elsewhere) and rerun the same command; nothing earlier was lost.",
        )
    return WorkbenchError(f"cannot write {path} ({err.strerror or err})", "Check the path and its permissions.")


@contextmanager
def writing(path: str | Path, need_bytes: float | None = None) -> Iterator[None]:
    """Turn an OSError in the block into disk_error(...) for `path` (one line, no traceback)."""
    try:
        yield
    except OSError as err:
        raise disk_error(err, path, need_bytes) from None


def write_all(fd: int, data: bytes | memoryview) -> None:
    """Write all of `data` to file descriptor `fd` with os.write (which may write less than asked)."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


# ---------------------------------------------------------------- atomic writes


def output_file(path: str | Path, option: str = "--out", inputs: tuple = ()) -> Path:
    """Check an output path before any work: a path that exists must be a regular file (or a link to one, which
    is written through: the link stays, its target is replaced) and none of the command's `inputs`. A folder, a
    device (/dev/null), a pipe or a socket would be replaced by the rename of an atomic write."""
    target = Path(os.path.realpath(path))
    if target.exists() and not target.is_file():
        kind = "a folder" if target.is_dir() else "not a regular file (a device, pipe or socket)"
        raise WorkbenchError(f"{option} {path} is {kind}", f"Point {option} at a file path, new or to be replaced.")
    for given in inputs:
        if given is not None and Path(os.path.realpath(given)) == target:
            raise WorkbenchError(f"{option} {path} is this command's input", f"Give {option} another path.")
    return target


def atomic_write_bytes(path: str | Path, data: bytes, mode: int = 0o644) -> Path:
    """Write `data` to a temp file in the same folder, fsync it, then os.replace it over `path`: a reader
    (or a crash, or a full disk) sees the old file or the new one, never half of one. A link is written
    through (its target replaced); an existing path that is not a regular file is refused (output_file)."""
    path = output_file(path, "output") if os.path.lexists(path) else Path(path)
    with writing(path, len(data)):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            try:
                write_all(fd, data)
                os.fsync(fd)
                os.fchmod(fd, mode)  # mkstemp makes 0600; results are meant to be read by others
            finally:
                os.close(fd)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return path


def atomic_write_text(path: str | Path, text: str, mode: int = 0o644) -> Path:
    """atomic_write_bytes of `text` as UTF-8."""
    return atomic_write_bytes(path, text.encode("utf-8"), mode)


def append_text(path: str | Path, text: str) -> None:
    """Append `text` with one os.write per call (whole lines stay whole unless the disk fills mid-line;
    readers drop a torn last line)."""
    data = text.encode("utf-8")
    with writing(path, len(data)):
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            write_all(fd, data)
        finally:
            os.close(fd)


class OsStream(io.RawIOBase):
    """A seekable binary file written with os.write, for writers that want a file object (torch.save). A
    library that turns the OSError into its own exception (torch raises RuntimeError) loses nothing: the
    error is kept in `error` and `write_stream` raises it as a one-line DiskError."""

    def __init__(self, fd: int):
        super().__init__()
        self.fd, self.error = fd, None

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        return os.lseek(self.fd, offset, whence)

    def tell(self) -> int:
        return os.lseek(self.fd, 0, os.SEEK_CUR)

    def write(self, data) -> int:
        try:
            return os.write(self.fd, data)
        except OSError as err:
            self.error = err
            raise


def write_stream(path: str | Path, write: Callable[[io.BufferedWriter], Any], need_bytes: float | None = None) -> Path:
    """Create `path` and let `write(f)` fill it (f: a buffered file over OsStream), then fsync it. Any error
    of the OS (even one a library re-raised as its own type) is a one-line error; the partial file is removed."""
    path = Path(path)
    with writing(path, need_bytes):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    raw, failure = OsStream(fd), None
    try:
        with io.BufferedWriter(raw, 1 << 20) as handle:
            write(handle)
            handle.flush()
            os.fsync(fd)
    except Exception as err:
        failure = err
    finally:
        try:
            os.close(fd)
        except OSError as err:
            failure = failure or err
    if failure is None:
        return path
    path.unlink(missing_ok=True)
    cause = raw.error or (failure if isinstance(failure, OSError) else None)
    if cause is None:
        raise failure
    raise disk_error(cause, path, need_bytes) from None


# ---------------------------------------------------------------- JSON


def json_clean(value: Any) -> Any:
    """A JSON-safe copy: NaN and infinities become None (JSON has no NaN), numpy scalars and arrays become
    Python numbers and lists, tuples lists, paths and other objects their text. The one NaN-to-null rule
    of the package: run records, store columns and fits all go through it."""
    if isinstance(value, bool) or value is None or isinstance(value, int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): json_clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_clean(v) for v in value]
    if hasattr(value, "tolist"):  # numpy scalars and arrays, without importing numpy
        return json_clean(value.tolist())
    return str(value)


def json_text(value: Any, indent: int | None = None) -> str:
    """Strict JSON text of `value` after json_clean (no NaN, no Infinity)."""
    return json.dumps(json_clean(value), indent=indent, allow_nan=False)


MAX_JSON_BYTES = 256 << 20  # a record, fit, plan, lock or jobs file larger than this is not one of ours
MAX_JSON_DEPTH = 64  # nesting of a record this package reads (its own are at most ~6 deep)


def parse_json(text: str | bytes, source: str, hint: str) -> Any:
    """Parsed JSON of `text`; malformed JSON, nesting deeper than MAX_JSON_DEPTH, a number of thousands of
    digits or text that is not UTF-8 is a one-line error naming `source`. Infinity and NaN stay floats:
    the domain checks of whoever reads the value refuse them where they do not belong."""
    try:
        data = json.loads(text)
    except RecursionError:
        raise WorkbenchError(f"{source}: JSON nested too deeply", hint) from None
    except UnicodeDecodeError as err:
        raise WorkbenchError(f"{source}: not UTF-8 text (byte {err.start})", hint) from None
    except ValueError as err:  # JSONDecodeError, and int() of more than sys.get_int_max_str_digits() digits
        where = f" (line {err.lineno})" if isinstance(err, json.JSONDecodeError) else ""
        first = str(err).splitlines()[0][:80] if not isinstance(err, json.JSONDecodeError) else err.msg
        raise WorkbenchError(f"{source}: not valid JSON{where}: {first}", hint) from None
    if json_depth(data) > MAX_JSON_DEPTH:
        raise WorkbenchError(f"{source}: JSON nested deeper than {MAX_JSON_DEPTH} levels", hint)
    return data


def json_depth(value: Any) -> int:
    """Nesting depth of parsed JSON (a scalar: 0), iteratively (stops counting past MAX_JSON_DEPTH)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict | list):
            deepest = max(deepest, depth)
            if depth > MAX_JSON_DEPTH:
                return depth
            stack.extend((child, depth + 1) for child in (node.values() if isinstance(node, dict) else node))
    return deepest


def read_json(path: str | Path, what: str, hint: str, max_bytes: int = MAX_JSON_BYTES) -> Any:
    """Parsed JSON of the file `path` (a `what`); missing, larger than `max_bytes`, unreadable or malformed
    is a one-line error naming it."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if not path.is_file():
            raise WorkbenchError(f"{what} {path} is not a file", hint)
        if size > max_bytes:
            raise WorkbenchError(f"{what} {path} is {size_text(size)}, over the {size_text(max_bytes)} limit", hint)
        raw = path.read_bytes()
    except FileNotFoundError:
        raise WorkbenchError(f"no such {what}: {path} not found", hint) from None
    except OSError as err:
        raise WorkbenchError(f"cannot read {what} {path} ({err.strerror or err})", hint) from None
    return parse_json(raw, f"{what} {path}", hint)


# ---------------------------------------------------------------- names that become paths

SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,127}")  # "+": run ids name budgets like c4e+11


def safe_name(value: object, what: str, where: str = "") -> str:
    """`value` if it is a plain file name (letters, digits, `_`, `.`, `+`, `-`; no `/`, no `..`), else a one-line
    error. Every name that becomes part of a path (sweep, run id, fit, report) is checked with this where
    it is read: a name from a file (a run's config.yaml, a fit JSON) can otherwise point anywhere."""
    text = str(value) if value is not None else ""
    if not SAFE_NAME.fullmatch(text) or ".." in text:
        shown = repr(text)[:80]
        place = f"{where}: " if where else ""
        raise WorkbenchError(
            f"{place}{what} {shown} is not a plain name (letters, digits, '_', '.', '+', '-'; at most 128)",
            f"Rename the {what}; it becomes part of a file path.",
        )
    return text


def inside(path: str | Path, folder: str | Path) -> bool:
    """Whether `path` is `folder` or lies below it, after resolving links and `..`."""
    resolved, base = Path(path).resolve(), Path(folder).resolve()
    return resolved == base or base in resolved.parents


def child(folder: str | Path, name: object, what: str, where: str = "") -> Path:
    """FOLDER/NAME for a `name` checked with safe_name, refused (one line) if a link there points out of
    `folder`: call it before the first write of anything named by `name`."""
    path = Path(folder) / safe_name(name, what, where)
    if path.is_symlink() and not inside(path, folder):
        raise WorkbenchError(
            f"{where + ': ' if where else ''}{path} is a link to {os.path.realpath(path)}, outside {folder}",
            f"Remove the link; a {what} must name a folder inside {folder}.",
        )
    return path


# ---------------------------------------------------------------- environment


def env_number(
    name: str,
    default: float,
    low: float = 0.0,
    high: float = math.inf,
    *,
    low_open: bool = True,
    integer: bool = False,
) -> float:
    """A number from environment variable `name` (unset or empty: `default`): finite, in (low, high] ([low,
    high] when not `low_open`) and whole when `integer` (returned as an int); anything else (inf, nan, text)
    is a one-line error naming the variable."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    bounds = f"{'(' if low_open else '['}{low:g}, {high:g}]"
    kind = "a whole number" if integer else "a number"
    if (
        not math.isfinite(value)
        or (value <= low if low_open else value < low)
        or value > high
        or (integer and value != int(value))
    ):
        raise WorkbenchError(
            f"environment variable {name}={raw[:40]!r} is not {kind} in {bounds}",
            f"Set it to {kind} in {bounds} (default {default:g}) or unset it.",
        )
    return int(value) if integer else value
