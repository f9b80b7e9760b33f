"""The inside of one memory measurement (workbench.train.parallel.memory_probe runs it in a child process): one rank
of a fake process group builds the trainer's parallel model on fake tensors and runs its step under torch's
FSDPMemTracker, extended to several pipeline stages per rank, to a stage forward run once per micro-batch, and to
windows: the peak of each part of the step (each stage forward and backward of each micro-batch, and within it
the embedding, the first and the last block, and the head), which is what a reduced-depth measurement is
scaled from (workbench.train.parallel.memory_scale)."""

from __future__ import annotations

import json
import multiprocessing
import sys
import time
import traceback

import torch
import torch.distributed as dist
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.distributed._tools.fsdp2_mem_tracker import FSDPMemTracker, _FSDPRefType
from torch.distributed._tools.mem_tracker import _RefType
from torch.testing._internal.distributed.fake_pg import FakeStore

from workbench.model.config import ModelConfig
from workbench.train.config import LayoutConfig, OptimConfig, RuntimeConfig
from workbench.train.parallel import distributed, fake_step, parallelize
from workbench.train.parallel.memory_probe import ProbeSpec
from workbench.train.trainer import adamw

TOTAL = "Total"


class ExtraRef(_RefType):
    """Our two categories on top of FSDPMemTracker's."""

    LOGITS = "Logits"
    PIPELINE = "Pipeline"


class StepTracker(FSDPMemTracker):
    """FSDPMemTracker over all of a rank's pipeline stages, whose forward runs once per micro-batch (the stock
    tracker takes one root and refuses a second forward of it). It files the logits and their gradients (last
    dimension = this rank's share of the vocabulary) and FSDP2's fp32 gradient accumulators under categories of
    their own, and keeps the peak of each window of the step (`windows`: a set of keys, see `enter`)."""

    def __init__(self, parts: list[nn.Module], optimizer, vocab_shard: int):
        super().__init__(parts[0], optimizer)
        self._root_mod = nn.ModuleList(parts)
        self.vocab_shard = vocab_shard
        self.windows: tuple[tuple, ...] = (("setup",),)
        self.window_peaks: dict[tuple, dict[str, int]] = {}

    def current(self) -> dict[str, int]:
        """Bytes by category now (the one device's snapshot)."""
        snap = next(iter(self._curr_mem_snap.values()), {TOTAL: 0})
        return {getattr(k, "value", k): v for k, v in snap.items()}

    def enter(self, *windows: tuple) -> None:
        """Close the current windows and open `windows` (both see the memory of this moment)."""
        self._note()
        self.windows = windows
        self._note()

    def _note(self) -> None:
        now = next(iter(self._curr_mem_snap.values()), None)
        if now is None:
            return
        for key in self.windows:
            best = self.window_peaks.get(key)
            if best is None or now[TOTAL] > best[TOTAL]:
                self.window_peaks[key] = dict(now)

    def _update_peak_stats(self, peak_state) -> None:  # the step's peak and the windows' (no per-module stats)
        for dev, snap in self._curr_mem_snap.items():
            if self._peak_mem.get(dev, 0) < snap[TOTAL]:
                self._peak_mem[dev] = snap[TOTAL]
                self._peak_mem_snap[dev] = dict(snap)
        self._note()

    def _update_snap(self, u_type, winfo, old_mem_consumed=None, old_reftype=None) -> None:
        snap = self._curr_mem_snap.setdefault(winfo.device, dict.fromkeys(self._ref_class, 0))
        snap.setdefault(winfo.reftype, 0)
        super()._update_snap(u_type, winfo, old_mem_consumed, old_reftype)

    def _track(self, reftype, t: torch.Tensor) -> None:
        if reftype in (_FSDPRefType.ACT, _FSDPRefType.TEMP) and t.ndim >= 2 and t.shape[-1] == self.vocab_shard:
            reftype = ExtraRef.LOGITS
        super()._track(reftype, t)

    def _fsdp_state_pre_forward(self, fsdp_mod, orig):
        inner = super()._fsdp_state_pre_forward(fsdp_mod, orig)

        def again(*args, **kwargs):
            if not self._mod_tracker.is_bw and fsdp_mod in self.memory_tracking:
                del self.memory_tracking[fsdp_mod]  # a stage's next micro-batch: per-module stats of the last only
            return inner(*args, **kwargs)

        return again

    def _fsdp_param_group_post_backward(self, fsdp_mod, orig):
        inner = super()._fsdp_param_group_post_backward(fsdp_mod, orig)

        def accumulators(*args, **kwargs):
            inner(*args, **kwargs)
            group = fsdp_mod._get_fsdp_state()._fsdp_param_group
            for fsdp_param in group.fsdp_params if group else []:
                if fsdp_param.unsharded_accumulated_grad is not None:
                    self._update_and_maybe_create_winfos(
                        fsdp_param.unsharded_accumulated_grad, _FSDPRefType.UNSHARDED_GRAD
                    )

        return accumulators

    def retag(self, tensors: list[torch.Tensor], reftype: _RefType) -> None:
        for tensor in tensors:
            self._update_and_maybe_create_winfos(tensor, reftype)


def positions(index: int, count: int) -> tuple[str, ...]:
    """The window name of block `index` of a stage of `count` blocks: the first ("bottom") and the last ("top")
    have windows of their own (a one-block stage's block is both); the ones between share "mid", which is bounded
    by its neighbours (memory is linear in a block's position) and is not scaled."""
    found = tuple(name for name, i in (("bottom", 0), ("top", count - 1)) if i == index)
    return found or ("mid",)


class Windows:
    """Hooks that move the tracker's windows along the step: (action, phase, position) keys, where an action is
    one forward or backward of one stage for one micro-batch (without a pipeline: the forward, the backward)."""

    def __init__(self, tracker: StepTracker, par: parallelize.Parallel):
        self.tracker, self.action = tracker, 0
        for part in par.parts:
            blocks = list(part.layers.values()) if isinstance(part.layers, nn.ModuleDict) else list(part.layers)
            for i, block in enumerate(blocks):
                where = positions(i, len(blocks))
                block.register_forward_pre_hook(lambda *_, w=where: self.block("fwd", w))
                block.register_full_backward_pre_hook(lambda *_, w=where: self.block("bwd", w))
            if blocks:
                blocks[-1].register_forward_hook(lambda *_: self.phase("fwd", "head"))
                blocks[0].register_full_backward_hook(lambda *_: self.phase("bwd", "tail"))
        if par.stage_ids:
            for stage in par.pp_stages:
                self.wrap(stage, "forward_one_chunk", "fwd")
                self.wrap(stage, "backward_one_chunk", "bwd")
        else:
            model = par.parts[0]
            model.register_forward_pre_hook(lambda *_: self.start("fwd"))
            model.register_forward_hook(lambda *_: self.start("bwd"))

    def start(self, kind: str) -> None:
        self.action += 1
        self.kind = kind
        self.tracker.enter((self.action, kind, "start"))

    def phase(self, kind: str, name: str) -> None:
        self.tracker.enter((self.action, kind, name))

    def block(self, kind: str, where: tuple[str, ...]) -> None:
        keys = tuple((self.action, kind, w) for w in where if w != "mid")
        self.tracker.enter(*(keys or ((self.action, kind, "mid"),)))

    def wrap(self, stage, method: str, kind: str) -> None:
        plain = getattr(stage, method)

        def wrapped(*args, **kwargs):
            self.start(kind)
            out = plain(*args, **kwargs)
            self.phase(kind, "end")
            return out

        setattr(stage, method, wrapped)


def pipeline_buffers(par: parallelize.Parallel) -> list[torch.Tensor]:
    """The receive buffers the pipeline stages keep for the whole run (one per micro-batch, each way)."""
    found = []
    for stage in par.pp_stages:
        for infos in list(stage.args_recv_info.values()) + list(stage.grad_recv_info.values()):
            found += [info.buffer for info in infos if isinstance(getattr(info, "buffer", None), torch.Tensor)]
    return found


def run_rank(spec: ProbeSpec) -> dict:
    """Build and step one rank of `spec` on fake tensors: the peak, its breakdown and the windows' peaks."""
    torch.set_num_threads(1)
    cfg = ModelConfig(
        n_layers=spec.n_layers,
        d_model=spec.d_model,
        n_heads=spec.n_heads,
        n_kv_heads=spec.n_kv_heads,
        ffn_dim=spec.ffn_dim,
        vocab_size=spec.vocab_size,
    )
    layout = LayoutConfig(
        tp=spec.tp,
        pp=spec.pp,
        dp_shard=spec.dp,
        recompute=spec.recompute,
        pp_schedule="interleaved_1f1b" if spec.virtual > 1 else "1f1b",
        pp_stages_per_rank=spec.virtual,
        micro_batch=spec.micro_batch,
    )
    fake_step.patch_torch()
    if spec.pp > 1:
        fake_step.patch_pipeline(spec.micro_batch, spec.seq_len, spec.tp, spec.d_model, spec.vocab_size)
    rank = spec.pp_rank * spec.dp * spec.tp  # mesh (pp, dp_replicate, dp_shard, tp): dp and tp coordinate 0
    dist.init_process_group("fake", store=FakeStore(), rank=rank, world_size=spec.world)
    try:
        fake_step.patch_workbench(parallelize.build_mesh(layout, "cpu", spec.world))
        with FakeTensorMode(allow_non_fake_inputs=True):
            return _step(spec, cfg, layout)
    finally:
        dist.destroy_process_group()


def _step(spec: ProbeSpec, cfg: ModelConfig, layout: LayoutConfig) -> dict:
    """AdamW's state made first (a step on zero gradients), then one training step under the tracker."""
    policy = distributed.mixed_precision_policy(RuntimeConfig(dtype="bf16"), "cuda")
    device = torch.device("cpu")
    par = parallelize.build(
        cfg, layout, seq_len=spec.seq_len, device=device, seed=0, mp_policy=policy, micro_batch=spec.micro_batch
    )
    params = par.parameters()
    optimizer = adamw(params, OptimConfig(lr_peak=1e-4), fused=True)
    for p in params:
        p.grad = torch.zeros_like(p)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    batches = [
        torch.randint(0, spec.vocab_size, (spec.micro_batch, spec.seq_len + 1), device=device)
        for _ in range(spec.micro_batches)
    ]
    tracker = StepTracker(par.parts, optimizer, spec.vocab_size // spec.tp)
    tracker.track_inputs(tuple(batches))
    Windows(tracker, par)
    with tracker:
        tracker.enter(("step", "start"))
        parallelize.forward_backward(par, batches, 1.0 / spec.micro_batches)
        tracker.enter(("clip",))
        parallelize.clip_grad_norm(params, 1.0, par.pp_group())
        tracker.enter(("optimizer",))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        tracker.enter(("end",))
    peak = dict(next(iter(tracker._peak_mem_snap.values())))
    buffers = sum(b.untyped_storage().nbytes() for b in pipeline_buffers(par))
    return {
        "peak": _named(peak, buffers),
        "windows": [[list(key), _named(snap, buffers)] for key, snap in tracker.window_peaks.items()],
        "blocks_on_rank": sum(len(part.layers) for part in par.parts),
    }


def _named(snap: dict, pipeline_bytes: int) -> dict[str, int]:
    """A snapshot by category name; the pipeline's receive buffers (made in the step's first forward, as
    activations) moved to their own category."""
    out = {getattr(k, "value", k): v for k, v in snap.items() if v}
    if pipeline_bytes:
        moved = min(pipeline_bytes, out.get("Activation", 0))
        out["Activation"] = out.get("Activation", 0) - moved
        out["Pipeline"] = out.get("Pipeline", 0) + moved
    return out


def _measure_one(spec_dict: dict, conn) -> None:
    """In a forked process: one measurement, sent back through `conn` (an error as its traceback)."""
    started = time.perf_counter()
    try:
        result = run_rank(ProbeSpec(**spec_dict))
        result["wall_s"] = round(time.perf_counter() - started, 2)
        conn.send({"spec": spec_dict, **result})
    except BaseException:  # noqa: BLE001 - reported to the parent, which raises a WorkbenchError
        conn.send({"error": traceback.format_exc().strip().splitlines()[-1], "traceback": traceback.format_exc()})
    finally:
        conn.close()


def main(path: str) -> None:
    """The child process (torch and the trainer imported once, above): fork one process per spec and write each
    result as one JSON line on stdout (the parent's pipe)."""
    context = multiprocessing.get_context("fork")
    with open(path) as fh:
        specs = json.load(fh)
    for spec in specs:
        receive, send = context.Pipe(duplex=False)
        worker = context.Process(target=_measure_one, args=(spec, send))
        worker.start()
        send.close()
        try:
            record = receive.recv()
        except EOFError:
            record = {"error": f"the measuring process died (exit code {worker.join() or worker.exitcode})"}
        worker.join()
        sys.stdout.write(json.dumps(record) + "\n")
        sys.stdout.flush()
        if "error" in record:
            sys.stderr.write(record.get("traceback", record["error"]))
            return


if __name__ == "__main__":
    main(sys.argv[1])
