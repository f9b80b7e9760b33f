"""The trainer's side of checkpoints (workbench.train.checkpoint holds the format): what a rank saves and
hashes, when a checkpoint is published, and which one a run restores.

Saving. Without a layout rank 0 gathers the full state and writes (and hashes) every file. With a layout
every rank writes its DCP shards and hashes only the files it wrote; rank 0 gathers those digests, adds
the trainer state, writes the manifest and renames the folder into place; the ranks then meet at a
barrier that waits for rank 0's few small files only. With `checkpoint.async_save` the shards are staged
to CPU memory, written and hashed by a background thread, and published at the next logging step at which
every rank has finished (the trainer's sync: settle), or before the next save, a rollback and the end.
A run saves a step at most once (a finished run's last step is not written twice).

Restoring. Rank 0 sweeps partial folders and drops checkpoints whose files or sizes differ from their
manifest (no hashing); each rank then hashes only what it reads: the small files (state.pt,
trainer.json, meta.json), and of a sharded checkpoint `.metadata` and the shards its DCP load plan reads.
A hash that does not match on any rank rejects that checkpoint on every rank, and the next older one is
tried.
"""

from __future__ import annotations

import logging
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from workbench.core.errors import WorkbenchError
from workbench.train import checkpoint, rundir
from workbench.train.config import TrainConfig
from workbench.train.parallel import distributed

log = logging.getLogger(__name__)


@dataclass
class PendingSave:
    """An asynchronous sharded save in flight: published once `written` (this rank's digests) is done."""

    step: int
    tmp: Path
    state: dict
    meta: dict
    written: Future


class Checkpointer:
    """Saves and restores one run's checkpoints for one rank. `model`: the unwrapped model (no layout) or
    the parallelize.Parallel of a layout run; `log_event(row)`: the trainer's metrics log."""

    def __init__(self, cfg: TrainConfig, d: distributed.Dist, model, optimizer, log_event):
        self.cfg, self.d, self.model, self.optimizer, self.log_event = cfg, d, model, optimizer, log_event
        self.root = rundir.ckpt_dir(cfg.run_dir)
        self.sharded = cfg.layout is not None
        self.saved_step: int | None = None  # the step of the newest checkpoint this run has on disk
        self.pending: PendingSave | None = None
        self._async_group = None

    # ------------------------------------------------------------ saving
    def save(self, trainer_state: dict) -> None:
        """Checkpoint `trainer_state` with the model and optimizer (a collective); nothing if that step is saved."""
        step = trainer_state["step"]
        if step == self.saved_step:
            return
        self.saved_step = step
        state = {"trainer": dict(trainer_state), "rng": rng_state()}
        meta = {k: trainer_state[k] for k in ("step", "tokens", "flops")} | {"shape": self.shape()}
        if not self.sharded:
            return self._save_full(step, state, meta)
        state |= {"model": None, "optimizer": None}
        meta["sharded"] = True
        self.wait()
        tmp = checkpoint.shared_tmp_dir(self.root, step)
        if self.cfg.checkpoint.async_save:
            written = checkpoint.save_sharded_async(tmp, self.model.parts, self.optimizer, self._group())
            self.pending = PendingSave(step, tmp, state, meta, written)
            return
        digests = checkpoint.save_sharded(tmp, self.model.parts, self.optimizer)  # each rank hashes its own files
        self._publish(step, tmp, state, meta, digests)

    def _save_full(self, step: int, state: dict, meta: dict) -> None:
        model_state, optim_state = distributed.full_state(self.model, self.optimizer, self.d, self.cfg.runtime.parallel)
        if self.d.is_main:
            ck = self.cfg.checkpoint
            state |= {"model": model_state, "optimizer": optim_state}
            checkpoint.save(self.root, step, state, meta, ck.keep, set(ck.save_at_tokens))
        if self.d.active:
            dist.barrier()

    def _publish(self, step: int, tmp: Path, state: dict, meta: dict, digests: dict) -> None:
        """Rank 0 merges every rank's digests into the manifest, adds the trainer state and renames."""
        merged = checkpoint.gather_digests(digests)
        if self.d.is_main:
            ck = self.cfg.checkpoint
            checkpoint.save(self.root, step, state, meta, ck.keep, set(ck.save_at_tokens), tmp=tmp, digests=merged)
        if self.d.active:
            dist.barrier()

    def _group(self):
        """A gloo group of all ranks for DCP's background thread (async_save needs a CPU backend, and its
        collectives must not interleave with the step's on the default group)."""
        if self._async_group is None and dist.is_initialized():
            self._async_group = dist.new_group(backend="gloo")
        return self._async_group

    def busy(self) -> float:
        """1.0 while this rank's asynchronous save is still writing, else 0.0 (summed over ranks at a sync)."""
        return float(self.pending is not None and not self.pending.written.done())

    def settle(self, busy_ranks: float) -> None:
        """At a sync every rank reaches: publish the pending save if no rank is still writing it."""
        if self.pending is not None and busy_ranks == 0:
            self.wait()

    def wait(self) -> None:
        """Finish and publish the pending asynchronous save, if any (a collective)."""
        if self.pending is None:
            return
        pending, self.pending = self.pending, None
        self._publish(pending.step, pending.tmp, pending.state, pending.meta, pending.written.result())

    def shape(self) -> dict:
        return {k: getattr(self.cfg.model, k) for k in checkpoint.SHAPE_KEYS}

    # ------------------------------------------------------------ restoring
    def heal(self) -> None:
        """Rank 0 (holding the run lock): sweep partial folders, drop checkpoints whose files or sizes differ
        from their manifest (nothing is hashed here)."""
        if self.d.is_main:
            checkpoint.sweep_partial(self.root)
            _, rejected = checkpoint.newest_intact(self.root, read=())
            for path, reason in rejected:
                self.log_event({"event": "checkpoint_rejected", "checkpoint": path.name, "reason": reason})
        if self.d.active:
            dist.barrier()

    def restore_newest(self, remove_damaged: bool) -> dict | None:
        """Load the newest of this run's checkpoints that loads on every rank into the model and optimizer;
        returns its state (checkpoint.load) or None. Damaged ones are logged and (`remove_damaged`) removed."""
        for path in reversed(checkpoint.run_checkpoints(self.cfg.run_dir)):
            try:
                saved = self.restore(path)
            except checkpoint.Damaged as err:
                if self.d.is_main:
                    checkpoint.reject(path, str(err), remove_damaged)
                    self.log_event({"event": "checkpoint_rejected", "checkpoint": path.name, "reason": str(err)})
                continue
            self.saved_step = saved["meta"]["step"]
            return saved
        return None

    def restore(self, path: Path) -> dict:
        """Load checkpoint `path` into the model and optimizer; returns its state. Damaged on every rank if a
        file read on any rank does not match its manifest."""
        error = None
        try:
            saved = checkpoint.load(path)
        except checkpoint.Damaged as err:
            error = str(err)
        if self.d.active and distributed.total([float(error is not None)], self.d)[0]:
            raise checkpoint.Damaged(error or "a file read by another rank does not match the manifest")
        if error is not None:
            raise checkpoint.Damaged(error)
        checkpoint.check_shape(path, saved["meta"], self.shape())
        if self.sharded:
            self._restore_sharded(path, saved)
        elif saved["model"] is None:
            raise WorkbenchError(
                f"{path} is a sharded checkpoint of a run with a layout: block",
                "Resume it with a layout (any TP x PP x DP, or all 1 for one process).",
            )
        else:
            args = (saved["model"], saved["optimizer"], self.d, self.cfg.runtime.parallel)
            distributed.load_full_state(self.model, self.optimizer, *args)
        return saved

    def _restore_sharded(self, path: Path, saved: dict) -> None:
        if checkpoint.is_sharded(path):
            checkpoint.load_sharded(path, self.model.parts, self.optimizer, saved["manifest"])
            return
        checkpoint.load_full_into_sharded(self.model.parts, saved["model"])  # a run without a layout: weights only
        self.optimizer.state.clear()


def rng_state() -> dict:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state()}


def set_rng_state(saved: dict) -> None:
    torch.set_rng_state(saved["rng"]["torch"])
    np.random.set_state(saved["rng"]["numpy"])
