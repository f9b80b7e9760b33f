"""Goodput: the share of a run's wall time that trains, given failures and checkpoints. Pure arithmetic.

- Failures: Llama 3 (Dubey et al. 2024, Sec. 3.3.4, Table 5) counts 466 job interruptions (47 planned, 419
  unexpected) in a 54-day snapshot of 405B pre-training on 16,384 H100s: 466 / (54 x 16,384) = 5.27e-4 per
  GPU-day. A job of G GPUs fails G times as often (independent failures): mean time between failures
  M = 1 / (rate x G).
- Checkpoint: what the trainer writes, the fp32 weights and AdamW's two fp32 moments, 12 bytes per parameter,
  at an aggregate write bandwidth W (default 2 TB/s, the sustained throughput of Llama 3's Tectonic file
  system, Sec. 3.3.1); training stops for delta = bytes / W each time.
- Interval: Young (1974), tau = sqrt(2 delta M), the interval that minimises the time lost to checkpoints and
  rework (Daly 2006 gives the same to first order).
- Lost time, first order: checkpoints take delta / tau of the training time; each failure loses a restart R
  (default 10 minutes: an assumption, with which this model gives Llama 3's run 92% goodput, where the report
  says more than 90% effective training time) and on average half an interval of work. So

      wall = train x (1 + delta / tau) / (1 - (R + (tau + delta) / 2) / M),   goodput = train / wall.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

LLAMA3_INTERRUPTIONS, LLAMA3_DAYS, LLAMA3_GPUS = 466, 54, 16384
FAILURES_PER_GPU_DAY = LLAMA3_INTERRUPTIONS / (LLAMA3_DAYS * LLAMA3_GPUS)
FAILURE_SOURCE = "Llama 3 (2024) Sec. 3.3.4: 466 interruptions in 54 days on 16,384 H100s"
CHECKPOINT_BYTES_PER_PARAM = 12  # fp32 weights + AdamW's exp_avg and exp_avg_sq
WRITE_GB_S = 2000.0  # Llama 3 Sec. 3.3.1: Tectonic sustains 2 TB/s
RESTART_S = 600.0


@dataclass(frozen=True)
class Goodput:
    """Failures, checkpoints and the share of wall time that trains (times in seconds)."""

    failures_per_gpu_day: float
    gpus: int
    mtbf_s: float  # of the whole job
    checkpoint_bytes: float
    write_bytes_s: float
    restart_s: float

    @property
    def checkpoint_s(self) -> float:
        return self.checkpoint_bytes / self.write_bytes_s

    @property
    def interval_s(self) -> float:
        """Young's checkpoint interval, sqrt(2 delta M)."""
        return math.sqrt(2 * self.checkpoint_s * self.mtbf_s)

    @property
    def lost_per_failure_s(self) -> float:
        return self.restart_s + (self.interval_s + self.checkpoint_s) / 2

    @property
    def fraction(self) -> float:
        """Training time / wall time (0 when failures come faster than a restart and half an interval)."""
        if math.isinf(self.mtbf_s):
            return 1.0
        checkpoints = self.checkpoint_s / self.interval_s if self.interval_s > 0 else 0.0
        return max(0.0, (1 - self.lost_per_failure_s / self.mtbf_s) / (1 + checkpoints))

    def as_dict(self) -> dict:
        return {
            "fraction": self.fraction,
            "failures_per_gpu_day": self.failures_per_gpu_day,
            "failure_source": FAILURE_SOURCE if self.failures_per_gpu_day == FAILURES_PER_GPU_DAY else "given",
            "gpus": self.gpus,
            "mtbf_h": self.mtbf_s / 3600,
            "checkpoint_gb": self.checkpoint_bytes / 1e9,
            "write_gb_s": self.write_bytes_s / 1e9,
            "checkpoint_s": self.checkpoint_s,
            "interval_min": self.interval_s / 60,
            "restart_min": self.restart_s / 60,
            "failures_per_day": 86400 / self.mtbf_s,
        }


def goodput(
    gpus: int,
    params_total: float,
    *,
    failures_per_gpu_day: float = FAILURES_PER_GPU_DAY,
    write_gb_s: float = WRITE_GB_S,
    restart_s: float = RESTART_S,
) -> Goodput:
    """Goodput of a job on `gpus` GPUs training a model of `params_total` parameters."""
    mtbf = math.inf if failures_per_gpu_day <= 0 else 86400.0 / (failures_per_gpu_day * gpus)
    return Goodput(
        failures_per_gpu_day, gpus, mtbf, CHECKPOINT_BYTES_PER_PARAM * params_total, write_gb_s * 1e9, restart_s
    )


@dataclass(frozen=True)
class Failures:
    """The failure and checkpoint settings of a plan (`plan --failures-per-gpu-day`, `--checkpoint-gb-s`,
    `--restart-min`)."""

    failures_per_gpu_day: float = FAILURES_PER_GPU_DAY
    write_gb_s: float = WRITE_GB_S
    restart_s: float = RESTART_S

    def of(self, gpus: int, params_total: float) -> Goodput:
        """The goodput of a job on `gpus` GPUs training `params_total` parameters."""
        return goodput(
            gpus,
            params_total,
            failures_per_gpu_day=self.failures_per_gpu_day,
            write_gb_s=self.write_gb_s,
            restart_s=self.restart_s,
        )
