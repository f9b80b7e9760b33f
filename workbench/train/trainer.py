"""The one trainer: `main(config)` runs a sweep point on a CPU core or the flagship on a cluster.

One step = one global batch of `batch_tokens` tokens (from the batch ramp), cut into chunks of
`micro_batch` sequences; chunk j of step s is `Mixture.train_batch(s + data_offset, j, micro_batch)`,
and rank r takes the chunks j with j % world == r. The data a step sees is therefore a function of
(seed, step) alone, whatever the world size or a resume: a resumed run and a DDP run reproduce a
single uninterrupted process.

Faults: a NaN/inf loss or a loss above `spike_factor` x its running mean is caught before the
optimizer step; the run rolls back to its last checkpoint and skips the batches from there to the
spike (`data_offset`), at most `max_rollbacks` times, then ends `diverged` (exit code 3).
Signals: SIGTERM, SIGUSR1 and SIGUSR2 finish the current step, save a checkpoint, then call the
handler that was there before (submitit's USR2 handler requeues the job); with none, `Interrupted`
(exit code 4). Rerunning the same config resumes from the newest checkpoint.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import platform
import re
import signal
import sys
import threading
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from workbench import __version__
from workbench.core.configfile import dump_yaml, load, parse_model
from workbench.core.errors import WorkbenchError
from workbench.data.batches import Mixture, mixtures
from workbench.model import flops
from workbench.model.transformer import Transformer
from workbench.train import checkpoint, checkpointer, rundir, runlock
from workbench.train.config import OptimConfig, TrainConfig, lengths_fit
from workbench.train.parallel import distributed, parallelize
from workbench.train.schedule import batch_tokens_at, lr_at
from workbench.train.trackers import Trackers

EXIT_DIVERGED = 3
EXIT_INTERRUPTED = 4
SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)
SPIKE_WARMUP_STEPS = 10  # the running mean needs a few steps before spikes mean anything

log = logging.getLogger(__name__)


class Interrupted(Exception):
    """A signal asked the run to stop; a checkpoint was saved and rerunning resumes."""

    def __init__(self, signum: int):
        super().__init__(f"interrupted by {signal.Signals(signum).name}")
        self.signum = signum


def coerce_config(config: TrainConfig | dict | str | Path) -> TrainConfig:
    """A TrainConfig from an object, a dict or a YAML path."""
    if isinstance(config, TrainConfig):
        return config
    if isinstance(config, dict):
        return parse_model(TrainConfig, config, "config")
    return load(TrainConfig, config)


def total_tokens(cfg: TrainConfig) -> int:
    """Tokens the run trains on: stop.tokens, or the budget converted with the FLOP rule."""
    if cfg.stop.tokens is not None:
        return cfg.stop.tokens
    shape = cfg.model.shape()
    return flops.tokens_for_budget(shape, cfg.stop.budget_flops, cfg.data.seq_len, cfg.stop.flop_rule)


def main(config: TrainConfig | dict | str | Path) -> dict:
    """Run (or resume) one training run; returns its final.json record."""
    cfg = coerce_config(config)
    record = rundir.read_final(cfg.run_dir)
    if record is not None and record.get("status") in rundir.TERMINAL:  # delete the run dir to retry
        return record
    d = distributed.setup(cfg.runtime.device, group=cfg.layout is not None)
    try:
        with runlock.RunLock(cfg.run_dir) if d.is_main else contextlib.nullcontext() as lock:  # one trainer per run
            record = rundir.read_final(cfg.run_dir)
            if record is not None and record.get("status") in rundir.TERMINAL:
                return record  # finished by the holder we waited behind
            return Trainer(cfg, d, lock).run()
    finally:
        distributed.teardown(d)


def check_batches(cfg: TrainConfig, total: int, world: int) -> None:
    """Every batch of the ramp splits into whole micro-batches over the data-parallel readers: `world`
    processes, or under a layout block its dp_replicate x dp_shard replicas."""
    seq = cfg.data.seq_len
    readers = world if cfg.layout is None else cfg.layout.dp_replicate * cfg.layout.dp_shard
    if total < batch_tokens_at(0, cfg.batch):
        raise WorkbenchError(
            f"stop: the run has {total} tokens, less than one batch of {cfg.batch.batch_tokens}",
            "Raise stop.tokens / stop.budget_flops or lower batch.batch_tokens.",
        )
    for tokens in [cfg.batch.batch_tokens] + [r.batch_tokens for r in cfg.batch.ramp]:
        chunks = tokens // seq
        if chunks % cfg.batch.micro_batch or (chunks // cfg.batch.micro_batch) % readers:
            raise WorkbenchError(
                f"batch: {tokens} tokens = {chunks} sequences of {seq} is not a multiple of "
                f"micro_batch {cfg.batch.micro_batch} x {readers} data-parallel processes",
                "Pick batch.batch_tokens = seq_len x micro_batch x data-parallel processes x k.",
            )


def adamw(params: list[torch.Tensor], optim: OptimConfig, fused: bool) -> torch.optim.AdamW:
    """The trainer's AdamW over `params`: weight decay on matrices and embeddings, none on the norm gains; fused
    (one kernel, no temporaries) on a GPU."""
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]  # norm gains
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": optim.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=optim.lr_peak,
        betas=optim.betas,
        eps=optim.eps,
        fused=fused,
    )


@dataclass
class _Step:
    """One optimizer step not yet read on the host: its row so far, its counters before, and on the device
    the sum and count of this rank's micro-batch losses and the global gradient norm."""

    row: dict
    before: dict
    losses: torch.Tensor  # [loss sum, micro-batches], fp64
    grad_norm: torch.Tensor


class Trainer:
    def __init__(self, cfg: TrainConfig, d: distributed.Dist, lock: runlock.RunLock | None = None):

        self.cfg, self.d = cfg, d
        self.lock = lock  # rank 0's run lock: checked at each host sync, before each checkpoint and final.json
        self.run_dir = Path(cfg.run_dir)
        if cfg.runtime.threads:
            torch.set_num_threads(cfg.runtime.threads)
        seq = cfg.data.seq_len
        self.data, self.anneal_data = mixtures(cfg.data, cfg.seed)  # one tokenizer for both, checked
        if self.data.vocab_size != cfg.model.vocab_size:
            raise WorkbenchError(
                f"model.vocab_size {cfg.model.vocab_size} does not match the tokenizer's {self.data.vocab_size}",
                f"Set model.vocab_size: {self.data.vocab_size}.",
            )
        self.shape = cfg.model.shape(cfg.name)
        self.flops_per_token = flops.flops_per_token(self.shape, seq, cfg.stop.flop_rule)
        self.total = total_tokens(cfg)
        lengths_fit(cfg, self.total)
        self._check_batches()
        self.state = {
            "step": 0,
            "tokens": 0,
            "flops": 0.0,
            "data_offset": 0,
            "rollbacks": 0,
            "wall_s": 0.0,
            "loss_mean": None,
        }
        self._build_model()
        self.ckpt = checkpointer.Checkpointer(cfg, d, self.par or self.raw, self.optimizer, self._log_event)
        self.val = self.data.val_batches(cfg.eval.batches, cfg.eval.batch_seqs)
        self.val_loss_se: float | None = None  # set by evaluate() on the pooled val split
        self.val_sets = _named_val_sets(cfg, self.data)  # name -> batches: val_loss_NAME
        self.final_sets: dict[str, float] = {}
        self.trackers = Trackers(cfg, self.run_dir, d.is_main)  # W&B / TensorBoard when logging: asks
        self.stop_signal: int | None = None
        self.previous_handlers: dict[int, object] = {}

    def _check_batches(self) -> None:
        distributed.check_layout(self.cfg.layout, self.d.world, self.cfg.batch.micro_batch)
        check_batches(self.cfg, self.total, self.d.world)

    def _build_model(self) -> None:
        cfg, d = self.cfg, self.d
        policy = distributed.mixed_precision_policy(cfg.runtime, d.device.type)
        self.par = None  # a parallelize.Parallel under a layout: block (TP x PP x DP, sharded checkpoints)
        if cfg.layout is not None:
            self.par = parallelize.build(
                cfg.model,
                cfg.layout,
                seq_len=cfg.data.seq_len,
                device=d.device,
                seed=cfg.seed,
                compile=cfg.runtime.compile,
                mp_policy=policy,
                micro_batch=cfg.batch.micro_batch,
            )
            self.raw = self.model = None
            self.autocast = False  # FSDP2's policy casts (it is applied in bf16 even with DP 1)
            params = self.par.parameters()
        else:
            torch.manual_seed(cfg.seed)  # the same initial weights on every rank and every world size
            model = Transformer(cfg.model, max_seq_len=cfg.data.seq_len).to(d.device)
            self.raw = model
            self.model = distributed.wrap(model, d, cfg.runtime.parallel, policy)
            if cfg.runtime.compile:
                self.model = torch.compile(self.model)
            sharded = d.active and cfg.runtime.parallel == "fsdp"
            self.autocast = distributed.uses_bf16(cfg.runtime, d.device.type) and not sharded
            params = list(model.parameters())
        self.optimizer = adamw(params, cfg.optim, fused=d.device.type == "cuda")

    # ---------------------------------------------------------------- checkpoints
    def _save(self) -> None:
        if self.lock is not None and not self.d.active:  # multi-process: the sync's flags carry a lost lock
            self.lock.check()
        self.ckpt.save(self.state)

    def _restore(self, saved: dict, trainer_state: bool = True) -> None:
        if trainer_state:
            self.state.update(saved["trainer"])
            checkpointer.set_rng_state(saved)

    def _resume_or_start(self) -> None:
        self.ckpt.heal()
        saved = self.ckpt.restore_newest(remove_damaged=True)
        if saved is not None:
            self._restore(saved)
            # what this segment's bit-identity rests on: a resume on other threads or kernels is visible
            self._log_event(
                {"event": "resume", "from_step": self.state["step"], "bit_identity": rundir.bit_identity(self.d.device)}
            )
        elif self.cfg.checkpoint.init_from:
            source = checkpoint.resolve_init_from(self.cfg.checkpoint.init_from)
            try:
                saved = self.ckpt.restore(source)
            except checkpoint.Damaged as err:
                raise WorkbenchError(
                    f"checkpoint.init_from {self.cfg.checkpoint.init_from}: {source} is damaged ({err})",
                    "Rerun the source run or give another checkpoint.",
                ) from None
            for key in ("step", "tokens", "flops", "data_offset"):
                self.state[key] = saved["trainer"][key]
            self._log_event({"event": "init_from", "source": str(source), "from_step": self.state["step"]})
        if self.cfg.faults.max_rollbacks and checkpoint.latest_of_run(self.run_dir) is None:
            self._save()  # something to roll back to before the first periodic checkpoint

    # ---------------------------------------------------------------- the loop
    def run(self) -> dict:
        self._prepare_run_dir()
        self.trackers.start(self.shape.params)
        self._install_signal_handlers()
        try:
            self._resume_or_start()
            status, error = self._loop()
            self.ckpt.wait()
        finally:
            self._restore_signal_handlers()
        if status == "interrupted":
            self._on_interrupt()
        val_loss = self.evaluate() if status == "completed" else None
        self.final_sets = self.evaluate_sets() if status == "completed" else {}
        if status == "completed":
            self._save()  # nothing if the loop saved this step already
            self.ckpt.wait()
        return self._finish(status, val_loss, error)

    def _loop(self) -> tuple[str, str | None]:
        """Steps until the token budget is spent. The host reads a step's loss only at a sync (_sync_due:
        every runtime.log_every_steps steps and before evaluations, checkpoints and the end): faults, rows,
        evaluations, checkpoints and signals are handled there, for the steps since the last one."""
        cfg, st = self.cfg, self.state
        progress = _Progress(self.total, st["tokens"], self.d.is_main, cfg.runtime.log_every_steps, cfg.name)
        self.window_start = time.perf_counter()  # wall_s is elapsed time: steps, logging, evals and checkpoints
        steps: list[_Step] = []
        with progress:
            while st["tokens"] + batch_tokens_at(st["tokens"], cfg.batch) <= self.total:
                before = {k: st[k] for k in ("step", "tokens", "flops")}
                batch_tokens = batch_tokens_at(st["tokens"], cfg.batch)
                lr = lr_at(st["tokens"], self.total, cfg.optim.lr_peak, cfg.schedule)
                losses, grad_norm = self._step(batch_tokens, lr)
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
                st["step"] += 1
                st["tokens"] += batch_tokens
                st["flops"] += self.flops_per_token * batch_tokens
                row = {"step": st["step"], "tokens": st["tokens"], "flops": st["flops"], "lr": lr}
                steps.append(_Step(row | {"batch_tokens": batch_tokens}, before, losses, grad_norm))
                if self._sync_due(before["tokens"]):
                    outcome = self._settle(steps, progress)
                    steps = []
                    if outcome is not None:
                        return outcome
        return "completed", None

    def _sync_due(self, before: int) -> bool:
        """Whether the step just taken (from `before` tokens) ends with a host sync; the same on every rank."""
        cfg, st = self.cfg, self.state
        every_eval, every_ckpt = cfg.eval.every_tokens, cfg.checkpoint.every_tokens
        return (
            st["step"] % cfg.runtime.log_every_steps == 0
            or bool(every_eval and before // every_eval != st["tokens"] // every_eval)
            or bool(every_ckpt and before // every_ckpt != st["tokens"] // every_ckpt)
            or st["tokens"] in cfg.checkpoint.save_at_tokens
            or st["tokens"] + batch_tokens_at(st["tokens"], cfg.batch) > self.total
        )

    def _read(self, steps: list[_Step]) -> tuple[list[float], list[float], bool, float]:
        """The host sync: one all-reduce of the steps' loss sums and counts, this rank's signal flag, its
        unfinished asynchronous save and whether rank 0 lost its run lock (LockLost on every rank), read with
        the gradient norms. Returns (losses, gradient norms, whether any rank was signalled, how many ranks are
        still writing a checkpoint)."""
        local = torch.cat([torch.stack([s.losses for s in steps]).flatten(), self._flags()])
        if self.d.active:
            torch.distributed.all_reduce(local)
        values = torch.cat([local, torch.stack([s.grad_norm.double() for s in steps])]).tolist()
        k = len(steps)
        if values[2 * k + 2] > 0:  # rank 0 lost its run lock: every rank stops here, before writing more
            why = self.lock.lost if self.lock is not None else "lost on rank 0"
            raise runlock.LockLost(rundir.lock_path(self.run_dir), why)
        losses = [values[2 * i] / values[2 * i + 1] for i in range(k)]
        return losses, values[2 * k + 3 :], values[2 * k] > 0, values[2 * k + 1]

    def _flags(self) -> torch.Tensor:
        lost = float(self.lock is not None and self.lock.lost is not None)  # rank 0's heartbeat saw it replaced
        flags = [float(self.stop_signal is not None), self.ckpt.busy(), lost]
        return torch.tensor(flags, dtype=torch.float64).to(self.d.device)

    def _settle(self, steps: list[_Step], progress: _Progress) -> tuple[str, str | None] | None:
        """Read `steps` on the host and act on them in order: a fault rolls back (or ends the run diverged);
        then rows, an evaluation, a checkpoint and a signal at the last one. Returns the loop's outcome if it
        ends here, else None."""
        cfg, st = self.cfg, self.state
        losses, norms, signalled, busy = self._read(steps)
        now = time.perf_counter()
        step_s, self.window_start = (now - self.window_start) / len(steps), now
        for i, (item, loss, grad_norm) in enumerate(zip(steps, losses, norms, strict=True)):
            reason = self._fault(loss, item.before["step"])
            if reason:
                return self._on_fault(reason, loss, item)
            st["loss_mean"] = loss if st["loss_mean"] is None else 0.9 * st["loss_mean"] + 0.1 * loss
            st["wall_s"] += step_s
            row = item.row | {"loss": loss, "grad_norm": grad_norm, "tokens_per_s": item.row["batch_tokens"] / step_s}
            row["wall_s"] = st["wall_s"]
            if i == len(steps) - 1 and self._crossed(cfg.eval.every_tokens, item):
                row["val_loss"] = self.evaluate()
                row |= self.evaluate_sets()
            self._log(row)
            progress.update(row["step"], row["tokens"], loss, row["tokens_per_s"])
        self.ckpt.settle(busy)
        last = steps[-1]
        if self._crossed(cfg.checkpoint.every_tokens, last) or st["tokens"] in cfg.checkpoint.save_at_tokens:
            self._save()
        if signalled:
            self._save()
            return "interrupted", None
        return None

    def _crossed(self, every: int, item: _Step) -> bool:
        return bool(every) and item.before["tokens"] // every != item.row["tokens"] // every

    def _on_fault(self, reason: str, loss: float, item: _Step) -> tuple[str, str | None] | None:
        st = self.state
        st.update(item.before)  # the steps from the faulty one on are not counted (their updates are undone)
        if st["rollbacks"] >= self.cfg.faults.max_rollbacks:
            self._log_event({"event": "diverged", "step": st["step"] + 1, "loss": loss, "reason": reason})
            return "diverged", f"{reason} at step {st['step'] + 1}; {st['rollbacks']} rollbacks used"
        self._rollback(reason, loss)
        self.window_start = time.perf_counter()
        return None

    def _step(self, batch_tokens: int, lr: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Forward and backward over this rank's chunks of the global batch; returns ([loss sum, micro-batches]
        of this rank, the global gradient norm), both on the device: nothing is read on the host."""
        cfg, d, st = self.cfg, self.d, self.state
        for group in self.optimizer.param_groups:
            group["lr"] = lr
            if cfg.optim.weight_decay_mode == "constant" and group["weight_decay"]:
                group["weight_decay"] = cfg.optim.weight_decay * cfg.optim.lr_peak / max(lr, 1e-30)
        micro = cfg.batch.micro_batch
        chunks = batch_tokens // cfg.data.seq_len // micro
        if self.par is not None:
            return self._layout_step(chunks)
        mine = list(range(d.rank, chunks, d.world))
        source = self._source(st["tokens"])
        loss_sum = torch.zeros((), dtype=torch.float64, device=d.device)
        for i, j in enumerate(mine):
            batch = torch.from_numpy(source.train_batch(st["step"] + st["data_offset"], j, micro)).to(d.device)
            sync = i == len(mine) - 1
            ctx = self.model.no_sync() if (d.active and not sync and hasattr(self.model, "no_sync")) else nullcontext()
            with ctx, torch.autocast(d.device.type, dtype=torch.bfloat16, enabled=self.autocast):
                loss = self.model(batch[:, :-1], batch[:, 1:])
                (loss * (d.world / chunks)).backward()  # DDP averages over ranks: sum over chunks / chunks
            loss_sum += loss.detach().double()
        clip = cfg.optim.grad_clip if cfg.optim.grad_clip > 0 else float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)
        if hasattr(grad_norm, "full_tensor"):  # a DTensor under FSDP
            grad_norm = grad_norm.full_tensor()
        return torch.stack([loss_sum, loss_sum.new_tensor(float(len(mine)))]), grad_norm

    def _layout_step(self, chunks: int) -> tuple[torch.Tensor, torch.Tensor]:
        """_step under a layout: data-parallel rank r of R takes chunks j % R == r (TP and PP ranks of one
        replica read the same rows), so the global batch is the same as without a layout."""

        cfg, st, par = self.cfg, self.state, self.par
        source = self._source(st["tokens"])
        step, micro = st["step"] + st["data_offset"], cfg.batch.micro_batch
        mine = range(par.dp_rank, chunks, par.dp_size)
        batches = [torch.from_numpy(source.train_batch(step, j, micro)).to(self.d.device) for j in mine]
        loss_sum, count = parallelize.forward_backward(par, batches, par.dp_size / chunks)
        clip = cfg.optim.grad_clip if cfg.optim.grad_clip > 0 else float("inf")
        grad_norm = parallelize.clip_grad_norm(par.parameters(), clip, par.pp_group())
        loss_sum = loss_sum.double()
        return torch.stack([loss_sum, loss_sum.new_tensor(float(count))]), grad_norm

    def _source(self, tokens: int):
        anneal = self.cfg.data.anneal_tokens
        if self.anneal_data is not None and anneal and tokens >= self.total - anneal:
            return self.anneal_data
        return self.data

    def _fault(self, loss: float, step_before: int) -> str | None:
        if not math.isfinite(loss):
            return "non-finite loss"
        # The reference is the running mean, capped by ln(vocab), the loss of uniform guessing that a
        # fresh model starts from: a loss far above that is a blow-up even before the mean has settled.
        factor, reference = self.cfg.faults.spike_factor, math.log(self.cfg.model.vocab_size)
        mean = self.state["loss_mean"]
        if mean is not None and step_before >= SPIKE_WARMUP_STEPS:
            reference = min(reference, mean)
        if loss > factor * reference:
            return f"loss spike {loss:.4g} > {factor:g} x reference {reference:.4g}"
        return None

    def _rollback(self, reason: str, loss: float) -> None:
        """Back to the newest checkpoint (state: the counters before the faulty step), skipping the batches
        from there to the faulty one (data_offset)."""
        bad_step = self.state["step"] + 1
        rollbacks, offset = self.state["rollbacks"] + 1, self.state["data_offset"]
        self.optimizer.zero_grad(set_to_none=True)
        self.ckpt.wait()
        saved = self.ckpt.restore_newest(remove_damaged=False)
        if saved is None:
            raise WorkbenchError(f"{reason} at step {bad_step} and no intact checkpoint to roll back to", "Rerun.")
        self._restore(saved)
        skipped = bad_step - self.state["step"]  # the batches from the checkpoint to the spike
        self.state["rollbacks"], self.state["data_offset"] = rollbacks, offset + skipped
        self._log_event(
            {
                "event": "rollback",
                "step": bad_step,
                "loss": loss if math.isfinite(loss) else str(loss),
                "reason": reason,
                "to_step": self.state["step"],
                "skipped_batches": skipped,
                "rollbacks": rollbacks,
            }
        )

    def evaluate_sets(self) -> dict[str, float]:
        """val_loss_NAME of every named held-out set (eval.sets, eval.per_source)."""
        return {f"val_loss_{name}": self.evaluate(batches) for name, batches in self.val_sets.items()}

    @torch.no_grad()
    def evaluate(self, batches: list | None = None) -> float:
        """Mean validation loss over fixed held-out batches (nats per token); default: the pooled val split.
        The losses stay on the device until one read at the end."""
        if self.par is not None:
            return self._evaluate_layout(batches)
        self.model.eval()
        sums = torch.zeros(3, dtype=torch.float64, device=self.d.device)
        for batch, weight in _shares(self.val if batches is None else batches, self.d.rank, self.d.world):
            tokens = torch.from_numpy(batch).to(self.d.device)
            with torch.autocast(self.d.device.type, dtype=torch.bfloat16, enabled=self.autocast):
                loss = self.model(tokens[:, :-1], tokens[:, 1:]).double()
            sums += weight * torch.stack([loss, torch.ones_like(loss), loss * loss])
        self.model.train()
        loss_sum, count, square_sum = distributed.total(sums, self.d)
        mean = loss_sum / count
        # the validation set's own sampling error: the standard error of the mean over its batches
        if batches is None:
            se = math.sqrt(max(square_sum / count - mean * mean, 0.0) / (count - 1)) if count > 1 else None
            self.val_loss_se = se
        return mean

    def _evaluate_layout(self, batches: list | None = None) -> float:

        for part in self.par.parts:
            part.eval()
        sums = torch.zeros(2, dtype=torch.float64, device=self.d.device)
        for batch, weight in _shares(self.val if batches is None else batches, self.par.dp_rank, self.par.dp_size):
            loss, count = parallelize.eval_loss(self.par, torch.from_numpy(batch).to(self.d.device))
            sums += weight * torch.stack([loss.double(), sums.new_tensor(float(count))])
        for part in self.par.parts:
            part.train()
        loss_sum, count = distributed.total(sums, self.d)
        return loss_sum / count

    # ---------------------------------------------------------------- run directory
    def _prepare_run_dir(self) -> None:
        if not self.d.is_main:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        config_path = self.run_dir / rundir.CONFIG
        if config_path.is_file():
            existing = load(TrainConfig, config_path)
            if existing != self.cfg:
                raise WorkbenchError(
                    f"{config_path} holds a different config for this run directory",
                    "Use a new run_dir, or delete the old run directory to start over.",
                )
        else:
            rundir.write_config(self.run_dir, dump_yaml(self.cfg))
        rundir.repair_metrics(self.run_dir)

    def _log(self, row: dict) -> None:
        if self.d.is_main:
            rundir.append_metric(self.run_dir, row)
            self.trackers.log(row)

    def _log_event(self, row: dict) -> None:
        self._log({"step": self.state["step"], **row} if "step" not in row else row)

    def _finish(self, status: str, val_loss: float | None, error: str | None) -> dict:
        record = {
            "status": status,
            "val_loss": val_loss,
            "val_loss_se": self.val_loss_se if val_loss is not None else None,
            "params": self.shape.params,
            "params_total": self.shape.params_total,
            "tokens": self.state["tokens"],
            "flops": self.state["flops"],
            "steps": self.state["step"],
            "wall_s": self.state["wall_s"],
            "error": error,
            "rollbacks": self.state["rollbacks"],
            "flops_per_token": self.flops_per_token,
            "seq_len": self.cfg.data.seq_len,
            "versions": {"workbench": _version(), "torch": torch.__version__, "python": platform.python_version()},
            "bit_identity": rundir.bit_identity(self.d.device),
            **self.final_sets,
        }
        if self.d.is_main:
            if self.lock is not None and not self.d.active:
                self.lock.check()
            rundir.write_final(self.run_dir, record)
        self.trackers.finish(record)
        return record

    # ---------------------------------------------------------------- signals
    def _install_signal_handlers(self) -> None:

        if threading.current_thread() is not threading.main_thread():
            return
        for sig in SIGNALS:
            self.previous_handlers[sig] = signal.signal(sig, self._on_signal)

    def _restore_signal_handlers(self) -> None:
        for sig, handler in self.previous_handlers.items():
            signal.signal(sig, handler)

    def _on_signal(self, signum: int, frame) -> None:
        self.stop_signal = signum  # acted on at the next sync, where every rank learns of it

    def _on_interrupt(self) -> None:
        signum = self.stop_signal or signal.SIGTERM
        self._log_event({"event": "interrupted", "signal": signal.Signals(signum).name})
        previous = self.previous_handlers.get(signum)
        if callable(previous):
            previous(signum, None)  # e.g. submitit's USR2 handler: checkpoint() and requeue
        if signum == signal.SIGTERM and os.environ.get("SLURM_JOB_ID"):
            # scontrol requeue / preemption: Slurm kills us after KillWait and reruns the job, which
            # resumes from the checkpoint just saved; exiting now would let submitit record a result.
            while True:
                time.sleep(60)
        raise Interrupted(signum)


class _Progress:
    """A rich progress bar on a terminal; otherwise a log line every `every_steps` steps and at the end."""

    def __init__(self, total: int, start: int, enabled: bool, every_steps: int, name: str):
        self.total, self.enabled, self.name, self.every_steps = total, enabled, name, every_steps
        self.tty = enabled and sys.stderr.isatty()
        self.bar, self.task = None, None
        if self.tty:
            self.bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                TextColumn("{task.fields[info]}"),
                TimeRemainingColumn(),
                transient=True,
            )
            self.task = self.bar.add_task(name, total=total, completed=start, info="")

    def __enter__(self):
        if self.bar:
            self.bar.start()
        return self

    def __exit__(self, *exc):
        if self.bar:
            self.bar.stop()

    def update(self, step: int, tokens: int, loss: float, tokens_per_s: float) -> None:
        if not self.enabled:
            return
        if self.bar:
            info = f"loss {loss:.4f}  {tokens_per_s:,.0f} tok/s  {tokens:,}/{self.total:,} tokens"
            self.bar.update(self.task, completed=tokens, info=info)
        elif step % self.every_steps == 0 or tokens >= self.total:
            log.info(
                "[train %s] tokens %s/%s loss %.4f %s tok/s",
                self.name,
                f"{tokens:,}",
                f"{self.total:,}",
                loss,
                f"{tokens_per_s:,.0f}",
            )


def _shares(batches: list, rank: int, size: int) -> list[tuple[object, float]]:
    """(batch, weight) of data-parallel rank `rank` of `size`: batches i with i % size == rank, weight 1, padded
    with the first batch at weight 0 so that every rank runs as many forward passes (FSDP gathers in each)."""
    rounds = -(-len(batches) // size)
    return [(batches[i], 1.0) if i < len(batches) else (batches[0], 0.0) for i in range(rank, rounds * size, size)]


def _named_val_sets(cfg: TrainConfig, main) -> dict[str, list]:
    """Fixed validation batches of each named held-out set; every set must use the training tokenizer."""

    named = dict(cfg.eval.sets)
    if cfg.eval.per_source:
        named |= {re.sub(r"\W", "_", Path(s.path).name): s.path for s in cfg.data.sources}
    sets = {}
    for name, path in named.items():
        held_out = Mixture([(path, 1.0)], cfg.data.seq_len, cfg.seed)
        if held_out.tokenizer_sha256 != main.tokenizer_sha256:
            raise WorkbenchError(
                f"eval set {name} ({path}) and data.sources ({main.dirs[0]}) use different tokenizers",
                "Prepare the held-out set with the training data's --tokenizer.",
            )
        sets[name] = held_out.val_batches(cfg.eval.batches, cfg.eval.batch_seqs)
    return sets


def _version() -> str:

    return __version__
