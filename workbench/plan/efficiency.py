"""The matmul throughput a training step reaches: a share of the GPU's dense bf16 peak that depends on the shape.

    achievable FLOP/s = peak x share[GPU] x d_model / (d_model + width)

`share` is what a GPU type reaches in the matmuls of an infinitely wide model. Per token and layer, the matmuls
grow as d_model^2 while the rest of a block (norms, rotary embedding, softmax, activation functions, residual
adds, kernel launches) grows as d_model, so the rest costs a share `width / d_model` of the matmul time: narrow
models run at a lower share of the peak. Everything else a step costs (recompute, TP and PP communication, the
pipeline bubble, FSDP's gathers and reductions) is modelled explicitly by workbench.plan.layout_cost.

Three numbers, fitted (workbench.plan.efficiency_fit.fit) on the published runs whose rows `published.exclusion`
keeps: 46 on A100 and 11 on H100 (docs/throughput.md has the table, each row's leave-one-out error, and what
the fit does and does not cover). H200 has the H100's compute and uses its share; B200 and a GPU given by its
peak have no published rows: they use the H100 share, and the plan warns that it is not calibrated. Pure.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CALIBRATED_KINDS = ("a100", "h100")
BORROWS = {"h200": "h100"}  # same compute as an H100: its calibration applies


@dataclass(frozen=True)
class Efficiency:
    """The matmul share of the peak per GPU kind (for an infinitely wide model) and the width constant."""

    a100: float
    h100: float
    width: float  # d_model at which the non-matmul work of a block costs as much time as its matmuls

    def share(self, kind):
        """The share of the peak for GPU `kind` (a string, or an array of them); any kind but the A100 takes
        the H100's (H200: the same compute; B200 and custom GPUs: uncalibrated, which the plan says)."""
        if isinstance(kind, str):
            return self.a100 if kind == "a100" else self.h100
        return np.where(np.asarray(kind) == "a100", self.a100, self.h100)

    def fraction(self, kind, d_model):
        """The achievable matmul throughput of a training step as a fraction of the dense bf16 peak (floats
        or numpy arrays)."""
        return self.share(kind) * d_model / (d_model + self.width)

    def as_dict(self) -> dict:
        return {"a100": self.a100, "h100": self.h100, "width": self.width}


def calibrated(kind: str) -> bool:
    """Whether published runs calibrate this GPU kind (directly or through one with the same compute)."""
    return BORROWS.get(kind, kind) in CALIBRATED_KINDS


@dataclass(frozen=True)
class Calibration:
    """An efficiency, how well it predicts published runs it was not fitted on, and what it was fitted on."""

    efficiency: Efficiency
    ratio_p5: float  # predicted / published MFU: 5th percentile over the leave-one-out predictions
    ratio_p95: float  # and the 95th
    runs: int  # calibration rows
    left_out: tuple[str, ...] = ()  # id prefixes of calibration rows left out (--leave-out-run)

    def as_dict(self) -> dict:
        return {
            **self.efficiency.as_dict(),
            "runs": self.runs,
            "left_out": list(self.left_out),
            "loo_ratio_p5": self.ratio_p5,
            "loo_ratio_p95": self.ratio_p95,
        }


# fitted on every calibration row, and the leave-one-out ratios over them (tests/test_throughput.py refits both)
EFFICIENCY = Efficiency(a100=0.663, h100=0.640, width=883.0)
CALIBRATION = Calibration(EFFICIENCY, ratio_p5=0.898, ratio_p95=1.085, runs=57)
