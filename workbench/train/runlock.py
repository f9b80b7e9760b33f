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
Takeover renames the stale `.lock` to a unique name, checks it took the lock it judged stale (else it
links it back and reports the lock as held), then links its own. Release removes `.lock` only if it
still holds this holder's token.
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
from workbench.train import rundir

log = logging.getLogger(__name__)

DEFAULT_STALE_S = 300.0


class Locked(WorkbenchError):
    """The run directory is locked by a live trainer."""

    def __init__(self, run_dir: Path, holder: dict):
        super().__init__(
            f"run {run_dir} is already being trained by {describe(holder)}",
            "Wait for it to finish, or stop that process; a lock of a dead process is taken over.",
        )
        self.holder = holder


def describe(holder: dict) -> str:
    job = f", Slurm job {holder['slurm_job_id']}" if holder.get("slurm_job_id") else ""
    return f"pid {holder.get('pid')} on {holder.get('host')}{job}"


def stale_after_s() -> float:
    raw = os.environ.get("WORKBENCH_LOCK_STALE_S", "")
    try:
        value = float(raw) if raw else DEFAULT_STALE_S
    except ValueError:
        raise WorkbenchError(
            f"WORKBENCH_LOCK_STALE_S={raw!r} is not a number", "Set it to seconds, e.g. 300."
        ) from None
    if not value > 0:
        raise WorkbenchError(f"WORKBENCH_LOCK_STALE_S={raw!r} must be positive", "Set it to seconds, e.g. 300.")
    return value


def _slurm_job() -> str | None:
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array and task:
        return f"{array}_{task}"
    return os.environ.get("SLURM_JOB_ID")


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), to tell a reused pid apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[-1].split()
    return fields[19] if len(fields) > 19 else None


def _pid_state(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except (OSError, IndexError):
        return None


def read_holder(run_dir: Path) -> dict | None:
    """The record of the lock's holder, or None when unlocked (an unreadable lock reads as {})."""
    path = rundir.lock_path(run_dir)
    try:
        record = json.loads(path.read_text())
        record["heartbeat_at"] = path.stat().st_mtime
        return record if isinstance(record, dict) else {}
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        try:
            return {"heartbeat_at": path.stat().st_mtime}
        except OSError:
            return None


def holder_alive(holder: dict, stale_s: float | None = None) -> bool:
    """Whether the holder of a lock may still be running (see the module docstring)."""
    stale_s = stale_after_s() if stale_s is None else stale_s
    job = _slurm_job()
    if (
        job
        and holder.get("slurm_job_id") == job
        and (holder.get("host"), holder.get("pid")) != (socket.gethostname(), os.getpid())
    ):
        return False  # a previous incarnation of this very Slurm job
    pid = holder.get("pid")
    if holder.get("host") == socket.gethostname() and isinstance(pid, int):
        if pid == os.getpid():
            return True
        if _pid_state(pid) in (None, "Z", "X"):
            return False
        return holder.get("started") in (None, _start_time(pid))
    return time.time() - holder.get("heartbeat_at", 0.0) < stale_s


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
        self.took_over: dict | None = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def acquire(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        for _ in range(5):  # a few rounds of races with other takers, then give up
            if self._link():
                self._start_heartbeat()
                return
            holder = read_holder(self.run_dir)
            if holder is None:
                continue  # released meanwhile: try again
            if holder_alive(holder, self.stale_s):
                raise Locked(self.run_dir, holder)
            if self._take_over(holder):
                log.warning("took over the stale lock of %s (%s)", self.run_dir, describe(holder))
                self.took_over = holder
                self._start_heartbeat()
                return
        holder = read_holder(self.run_dir) or {}
        raise Locked(self.run_dir, holder)

    def _link(self) -> bool:
        tmp = self.run_dir / f".lock.{self.record['host']}.{self.record['pid']}.{self.record['token']}"
        tmp.write_text(json.dumps(self.record))
        try:
            os.link(tmp, self.path)
            return True
        except FileExistsError:
            return False
        except OSError:
            return tmp.stat().st_nlink == 2  # NFS: the link may exist though the reply was lost
        finally:
            tmp.unlink(missing_ok=True)

    def _take_over(self, stale: dict) -> bool:
        aside = self.run_dir / f".lock.stale.{self.record['token']}"
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return self._link()
        try:
            moved = json.loads(aside.read_text())
        except (OSError, ValueError):
            moved = {}
        if moved.get("token") != stale.get("token"):  # someone else's fresh lock: put it back
            with contextlib.suppress(OSError):
                os.link(aside, self.path)
            aside.unlink(missing_ok=True)
            return False
        aside.unlink(missing_ok=True)
        return self._link()

    def _start_heartbeat(self) -> None:
        self._thread = threading.Thread(target=self._beat, name="workbench-runlock", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.stale_s / 10):
            try:
                os.utime(self.path)
            except OSError as err:
                log.warning("run lock %s heartbeat failed: %s", self.path, err)

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        holder = read_holder(self.run_dir)
        if holder and holder.get("token") == self.record["token"]:
            self.path.unlink(missing_ok=True)
