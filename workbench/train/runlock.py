"""One trainer per run directory: a lock file RUN_DIR/.lock taken by rank 0 for the whole job.

The mechanism works on shared filesystems (NFS, Lustre) where advisory locks (flock/fcntl) may be
missing or local to a node: the holder writes its record (host, pid, process start time, Slurm job
id, a random token) to a private temp file and hard-links it to `.lock`. `link()` is atomic on NFS
and Lustre (it fails if `.lock` exists); as on NFS the reply can be lost, success is also read from
the temp file's link count (2). While it holds the lock, a daemon thread touches `.lock` every
`stale_s / 10` seconds (the heartbeat).

A lock is stale, and is taken over (logged as a warning), when its holder is dead:
- on this host: the pid is gone, a zombie, or another process with that pid (start time differs);
- under the same Slurm job id (a requeued job: Slurm runs one incarnation of a job at a time);
- on another host: its heartbeat is older than `stale_s` (env WORKBENCH_LOCK_STALE_S, default 300 s;
  the hosts' clocks are assumed to agree to well within that, as NTP keeps them on clusters).
A `.lock` that is not a lock record (malformed JSON, a record without host, pid and token, a directory,
a dangling link) and a record of a live pid on this host without its start time are judged by the
heartbeat rule alone: stale once their modification time is older than `stale_s`; until then the
refusal says what the file is and when it turns stale.
Takeover renames the stale `.lock` to a unique name, checks it took the lock it judged stale (else it
links it back and reports the lock as held), then links its own. Release removes `.lock` only if it
still holds this holder's token.

The lock owns itself: the heartbeat touches the lock through a descriptor of the file it linked (so it
can only ever touch its own) and checks that `.lock` is still that file; if `.lock` was deleted or
replaced (another trainer took the run), it sets `lost` and the trainer stops without writing more
(`check()` is the same test, made before every checkpoint and before final.json).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import socket
import threading
import time
from pathlib import Path

from workbench.core.errors import WorkbenchError
from workbench.core.files import DISK_ERRNOS, disk_error, env_number, write_all, writing
from workbench.train import rundir

log = logging.getLogger(__name__)

DEFAULT_STALE_S = 300.0
MAX_STALE_S = 1e6  # about 11 days: a heartbeat interval longer than that is a typo
MAX_LOCK_BYTES = 1 << 16


class Locked(WorkbenchError):
    """The run directory is locked by a live trainer (or by a lock file that is not yet stale)."""

    def __init__(self, run_dir: Path, holder: dict, stale_s: float | None = None):
        if holder.get("malformed"):
            age = time.time() - holder.get("heartbeat_at", 0.0)
            left = max(0.0, (stale_s or DEFAULT_STALE_S) - age)
            super().__init__(
                f"run {run_dir} has a lock file {rundir.lock_path(run_dir)} that is {holder['malformed']}; "
                f"it counts as held until it is {stale_s or DEFAULT_STALE_S:g} s old ({left:.0f} s from now)",
                "Remove it if no trainer runs this run (or wait), then rerun.",
            )
        else:
            super().__init__(
                f"run {run_dir} is already being trained by {describe(holder)}",
                "Wait for it to finish, or stop that process; a lock of a dead process is taken over.",
            )
        self.holder = holder


class LockLost(WorkbenchError):
    """This trainer's lock was deleted or replaced while it ran: another trainer may own the run now."""

    def __init__(self, path: Path, why: str):
        super().__init__(
            f"the run lock {path} is no longer this trainer's ({why}); stopped without writing more",
            "Another trainer may be running this run: check `workbench sweep status`, then rerun to resume.",
        )


def describe(holder: dict) -> str:
    if holder.get("malformed"):
        return f"a lock file that is {holder['malformed']}"
    job = f", Slurm job {holder['slurm_job_id']}" if holder.get("slurm_job_id") else ""
    return f"pid {holder.get('pid')} on {holder.get('host')}{job}"


def stale_after_s() -> float:
    """Seconds without a heartbeat after which a lock of another host is stale: WORKBENCH_LOCK_STALE_S."""
    return env_number("WORKBENCH_LOCK_STALE_S", DEFAULT_STALE_S, 0.0, MAX_STALE_S)


def _slurm_job() -> str | None:
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array and task:
        return f"{array}_{task}"
    return os.environ.get("SLURM_JOB_ID")


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), to tell a reused pid apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (OSError, ValueError):
        return None
    fields = stat.rsplit(")", 1)[-1].split()
    return fields[19] if len(fields) > 19 else None


def _pid_state(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except (OSError, IndexError, ValueError):
        return None


def read_holder(run_dir: Path) -> dict | None:
    """The record of the lock's holder with `heartbeat_at` (the lock's mtime) and `inode`, or None when
    unlocked. A lock that is not a record of ours reads as {"malformed": what it is, "heartbeat_at": ...}."""
    return read_lock_file(rundir.lock_path(run_dir))


def read_lock_file(path: Path) -> dict | None:
    """read_holder of the lock file at `path`."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError as err:
        return {"malformed": f"unreadable ({err.strerror})", "heartbeat_at": time.time()}
    what = None
    record: object = None
    if path.is_symlink():
        what = "a link" if path.exists() else f"a dangling link (to {os.readlink(path)[:80]})"
    elif path.is_dir():
        what = "a directory"
    elif info.st_size > MAX_LOCK_BYTES:
        what = f"{info.st_size:,} bytes long"
    else:
        try:
            record = json.loads(path.read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, ValueError, RecursionError):
            what = "not JSON"
    if what is None and not _is_record(record):
        what = "not a lock record (host, pid, token)"
    if what is not None:
        return {"malformed": what, "heartbeat_at": info.st_mtime, "inode": info.st_ino}
    return {**record, "heartbeat_at": info.st_mtime, "inode": info.st_ino}


def _is_record(record: object) -> bool:
    return (
        isinstance(record, dict)
        and isinstance(record.get("host"), str)
        and isinstance(record.get("pid"), int)
        and not isinstance(record.get("pid"), bool)
        and isinstance(record.get("token"), str)
        and isinstance(record.get("started"), str | None)
        and isinstance(record.get("slurm_job_id"), str | None)
    )


def holder_alive(holder: dict, stale_s: float | None = None) -> bool:
    """Whether the holder of a lock may still be running (see the module docstring)."""
    stale_s = stale_after_s() if stale_s is None else stale_s
    fresh = time.time() - holder.get("heartbeat_at", 0.0) < stale_s
    if holder.get("malformed"):
        return fresh
    job = _slurm_job()
    if (
        job
        and holder.get("slurm_job_id") == job
        and (holder.get("host"), holder.get("pid")) != (socket.gethostname(), os.getpid())
    ):
        return False  # a previous incarnation of this very Slurm job
    pid = holder.get("pid")
    if holder.get("host") == socket.gethostname() and isinstance(pid, int) and pid > 0:
        if pid == os.getpid():
            return True
        if _pid_state(pid) in (None, "Z", "X"):
            return False
        started = holder.get("started")
        return fresh if started is None else started == _start_time(pid)
    return fresh


class RunLock:
    """`with RunLock(run_dir):` holds the run's lock (heartbeat included) for the block."""

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        self.path = rundir.lock_path(self.run_dir)
        self.stale_s = stale_after_s()
        self.record = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started": _start_time(os.getpid()),
            "slurm_job_id": _slurm_job(),
            "taken_at": time.time(),
            "token": secrets.token_hex(8),
        }
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._fd: int | None = None  # the lock file this holder linked, for the heartbeat
        self.inode: int | None = None
        self.lost: str | None = None  # why the lock stopped being ours (set by the heartbeat or check)
        self.took_over: dict | None = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def acquire(self) -> None:
        with writing(self.run_dir):
            self.run_dir.mkdir(parents=True, exist_ok=True)
        for _ in range(5):  # a few rounds of races with other takers, then give up
            if self._link():
                self._start_heartbeat()
                return
            holder = read_holder(self.run_dir)
            if holder is None:
                continue  # released meanwhile: try again
            if holder_alive(holder, self.stale_s):
                raise Locked(self.run_dir, holder, self.stale_s)
            if self._take_over(holder):
                log.warning("took over the stale lock of %s (%s)", self.run_dir, describe(holder))
                self.took_over = holder
                self._start_heartbeat()
                return
        holder = read_holder(self.run_dir) or {}
        raise Locked(self.run_dir, holder, self.stale_s)

    def _link(self) -> bool:
        tmp = self.run_dir / f".lock.{self.record['host']}.{self.record['pid']}.{self.record['token']}"
        data = json.dumps(self.record).encode()
        try:
            with writing(tmp, len(data)):
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                try:
                    write_all(fd, data)
                finally:
                    os.close(fd)
            try:
                os.link(tmp, self.path)
            except FileExistsError:
                return False
            except OSError as err:
                if err.errno in DISK_ERRNOS:
                    raise disk_error(err, self.path) from None
                if os.stat(tmp).st_nlink != 2:  # NFS: the link may exist though the reply was lost
                    return False
            self.inode = os.stat(tmp).st_ino
            self._fd = os.open(tmp, os.O_RDONLY)
            return True
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink()

    def _take_over(self, stale: dict) -> bool:
        aside = self.run_dir / f".lock.stale.{self.record['token']}"
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return self._link()
        except OSError as err:
            raise disk_error(err, self.path) from None
        moved = read_lock_file(aside) or {}
        if moved.get("inode") != stale.get("inode") or moved.get("token") != stale.get("token"):
            with contextlib.suppress(OSError):  # someone else's fresh lock: put it back
                os.link(aside, self.path)
            _remove_aside(aside)
            return False
        _remove_aside(aside)
        return self._link()

    def _start_heartbeat(self) -> None:
        self._thread = threading.Thread(target=self._beat, name="workbench-runlock", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.stale_s / 10):
            if self._owner_check() is not None:
                log.warning("run lock %s lost: %s; the trainer stops", self.path, self.lost)
                return
            try:
                os.utime(self._fd)  # our own file, whatever .lock is now
            except OSError as err:
                log.warning("run lock %s heartbeat failed: %s", self.path, err)

    def _owner_check(self) -> str | None:
        """Why `.lock` is no longer the file this holder linked (None while it is); sets `lost`."""
        if self.lost is None and self.inode is not None:
            try:
                inode = os.lstat(self.path).st_ino
            except FileNotFoundError:
                inode = None
            except OSError:
                return None  # cannot tell (a flaky network file system): the next beat looks again
            if inode != self.inode:
                self.lost = "the lock file was deleted" if inode is None else "the lock file was replaced"
        return self.lost

    def check(self) -> None:
        """Raise LockLost if `.lock` is no longer this holder's (before a checkpoint or final.json)."""
        if self._owner_check() is not None:
            raise LockLost(self.path, self.lost)

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None
        holder = read_holder(self.run_dir)
        if holder and holder.get("token") == self.record["token"] and holder.get("inode") == self.inode:
            try:
                self.path.unlink(missing_ok=True)
            except OSError as err:
                log.warning("could not remove the run lock %s: %s", self.path, err)


def _remove_aside(aside: Path) -> None:
    """Remove a lock moved aside; a directory is left as it is (named .lock.stale.*) and said so."""
    if aside.is_dir() and not aside.is_symlink():
        log.warning("left the stale lock directory as %s", aside)
        return
    with contextlib.suppress(OSError):
        aside.unlink()
