"""What it takes to run the trainer's own parallel build and step on fake tensors, as one rank of a fake
process group, and count its memory as a GPU would hold it. Imported only by workbench.train.parallel.memory_probe,
inside the child process that measures (every patch here is process-wide).

- `FakeTensorMode` + torch's "fake" process-group backend: tensors have shapes, dtypes and storages but no data,
  and collectives return at once, so one rank of a 512-GPU layout runs on a CPU core.
- DTensor's sharding propagation runs each op once more on global-shape fake tensors under
  `detect_fake_mode() or FakeTensorMode()`; under our fake mode that is our mode, and the memory tracker would
  count those global-shape temporaries (a full-size Adam state for every DTensor parameter). Propagation gets a
  fake mode of its own.
- DeviceMesh computes rank coordinates with data-dependent ops (`nonzero`, `tolist`) that fake mode refuses; FSDP2
  on TP DTensors builds a (dp, tp) mesh inside `fully_shard`. DeviceMesh runs with fake mode suspended.
- Pipeline stages get their input and output shapes up front (torch's STATIC metadata mode), because the dynamic
  mode's metadata exchange and its warm-up vote (`.item()` of a received tensor) need a real peer.
- `F.rms_norm` as CUDA runs it: one fused kernel (`_fused_rms_norm`) that returns the normalised output in the
  input's dtype and saves the input, the weight and the fp32 reciprocal RMS ([tokens, 1]) for its backward. The
  CPU's composite (an fp32 copy, pow, mean, rsqrt, two muls) saves two fp32 [tokens, d] tensors more per norm.
- Parameter initialisation is skipped (values mean nothing on fake tensors, and the per-tile RNG is slow).
"""

from __future__ import annotations

import torch
import torch.distributed.tensor._sharding_prop as sharding_prop
import torch.nn.functional as F
from torch._subclasses.fake_tensor import FakeTensorMode, unset_fake_temporarily
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.pipelining import PipelineStage
from torch.distributed.pipelining import schedules as pipeline_schedules
from torch.distributed.pipelining._utils import InferenceMode

from workbench.train.parallel import parallelize


def patch_torch() -> None:
    """Sharding propagation in a fake mode of its own; DeviceMesh outside fake mode; CUDA's rms_norm."""
    propagation = FakeTensorMode()
    sharding_prop.detect_fake_mode = lambda *args, **kwargs: propagation
    mesh_get, mesh_init = DeviceMesh.mesh.fget, DeviceMesh.__init__

    def mesh_real(self):
        with unset_fake_temporarily():
            return mesh_get(self)

    def init_real(self, *args, **kwargs):
        with unset_fake_temporarily():
            mesh_init(self, *args, **kwargs)

    DeviceMesh.mesh = property(mesh_real)
    DeviceMesh.__init__ = init_real
    F.rms_norm = fused_rms_norm


class FusedRMSNorm(torch.autograd.Function):
    """The memory of CUDA's fused rms_norm: output in the input's dtype; saved input, weight and fp32 rstd."""

    @staticmethod
    def forward(ctx, x, weight, eps):
        rstd = x[..., :1].float()  # [..., 1] fp32, as the kernel's reciprocal RMS
        ctx.save_for_backward(x, weight, rstd)
        return torch.empty_like(x)

    @staticmethod
    def backward(ctx, grad):
        x, weight, _ = ctx.saved_tensors
        return torch.empty_like(x), torch.empty_like(weight), None


def fused_rms_norm(x, normalized_shape, weight=None, eps=None):
    return FusedRMSNorm.apply(x, weight, eps)


def patch_pipeline(micro_batch: int, seq_len: int, tp: int, d_model: int, vocab: int) -> None:
    """Static stage metadata (the residual stream between stages is bf16, split over the sequence under TP; the
    last stage hands on its vocabulary shard of the bf16 logits), and no P2P warm-up vote."""

    class StaticStage(PipelineStage):
        def __init__(self, submodule, stage_index, num_stages, device, group=None):
            first, last = stage_index == 0, stage_index == num_stages - 1
            if first:
                inputs = torch.empty(micro_batch, seq_len, dtype=torch.long, device=device)
            else:
                inputs = torch.empty(micro_batch, seq_len // tp, d_model, dtype=torch.bfloat16, device=device)
                inputs.requires_grad_(True)
            shape = (micro_batch, seq_len, vocab // tp) if last else (micro_batch, seq_len // tp, d_model)
            outputs = torch.empty(shape, dtype=torch.bfloat16, device=device, requires_grad=True)
            super().__init__(
                submodule, stage_index, num_stages, device, input_args=inputs, output_args=outputs, group=group
            )
            self.declared = (tuple(outputs.shape), outputs.dtype)

    def warmup(self, stages, has_backward, p2p_done):
        for stage in stages:
            stage._inference_mode = InferenceMode.STATIC

    parallelize.TorchStage = StaticStage
    pipeline_schedules._PipelineSchedule._warmup_p2p = warmup


def patch_workbench(mesh) -> None:
    """The mesh built outside fake mode; no parameter initialisation."""
    parallelize.build_mesh = lambda *args, **kwargs: mesh
    parallelize.init_parameters = lambda *args, **kwargs: None
