"""The accelerators a plan can use: dense bf16 peak, memory, links, and the calibrated efficiency. Pure.

Peaks and HBM bandwidths from the vendors' data sheets (no sparsity): H100 989 TFLOP/s and 3.35 TB/s, A100 312 and
2.04, H200 989 and 4.8, B200 2250 and 8. NVLink and the inter-node network are NCCL bus bandwidths per GPU and
direction: 80% of the line rate (nccl-tests reach about that): H100/H200 NVLink 4 450 GB/s, A100 NVLink 3
300 GB/s, B200 NVLink 5 900 GB/s; 400 Gb/s per GPU of RoCE/InfiniBand (Llama 3 Sec. 3.3.1), 200 Gb/s for A100
clusters (HDR). Each collective step costs a latency of 3 us on NVLink and 10 us across nodes.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from workbench.core.errors import WorkbenchError
from workbench.core.units import parse_number
from workbench.plan.efficiency import EFFICIENCY, Efficiency, calibrated

GPUS_PER_NODE = 8
GB = 1e9
NVLINK_LATENCY_S, NETWORK_LATENCY_S = 3e-6, 10e-6
BUS_EFFICIENCY = 0.8


@dataclass(frozen=True)
class Gpu:
    """An accelerator: dense bf16 peak (FLOP/s), memory (bytes), links (bytes/s), and the kind whose
    calibration (workbench.plan.efficiency) gives its achievable matmul throughput."""

    name: str
    peak_flops: float
    memory_bytes: float
    nvlink_bytes_s: float = BUS_EFFICIENCY * 450e9
    network_bytes_s: float = BUS_EFFICIENCY * 50e9
    hbm_bytes_s: float = 3.35e12
    kind: str = "custom"
    efficiency: Efficiency = EFFICIENCY

    def achievable_flops(self, d_model: float) -> float:
        """The matmul throughput (FLOP/s) a training step of a model of width `d_model` reaches."""
        return float(self.peak_flops * self.efficiency.fraction(self.kind, d_model))

    @property
    def calibrated(self) -> bool:
        """Whether published runs on this kind of GPU calibrate its efficiency."""
        return calibrated(self.kind)


# dense bf16 peaks from the vendors' data sheets (no sparsity); NVLink per direction; 400/200 Gb/s networks
GPUS = {
    "h100": Gpu("h100", 989e12, 80 * GB, BUS_EFFICIENCY * 450e9, BUS_EFFICIENCY * 50e9, 3.35e12, "h100"),
    "a100": Gpu("a100", 312e12, 80 * GB, BUS_EFFICIENCY * 300e9, BUS_EFFICIENCY * 25e9, 2.04e12, "a100"),
    "h200": Gpu("h200", 989e12, 141 * GB, BUS_EFFICIENCY * 450e9, BUS_EFFICIENCY * 50e9, 4.8e12, "h200"),
    "b200": Gpu("b200", 2250e12, 192 * GB, BUS_EFFICIENCY * 900e9, BUS_EFFICIENCY * 50e9, 8e12, "b200"),
}


# what a GPU given by its numbers may be (NaN and inf fail the comparisons too): a peak from 1 GFLOPS (a
# CPU) to 100 PFLOPS (40x a B200), memory from 1 MB (a CPU plan gives a core its share) to 100 TB
MIN_PEAK_TFLOPS, MAX_PEAK_TFLOPS = 1e-3, 1e5
MIN_MEMORY_GB, MAX_MEMORY_GB = 1e-3, 1e5
MAX_GPUS = 10_000_000  # a layout or --gpus above this is a typo (the largest clusters hold ~10^5 GPUs)


def resolve_gpu(spec: str, memory_gb: float | None = None) -> Gpu:
    """A GPU by name (h100, a100, h200, b200) or by its peak in TFLOPS (memory 80 GB, H100 links unless given)."""
    key = spec.strip().lower()
    known = ", ".join(GPUS)
    if key in GPUS:
        gpu = GPUS[key]
    else:
        try:
            peak_tflops = parse_number(spec, "--gpu")
        except WorkbenchError:
            raise WorkbenchError(
                f"--gpu: unknown GPU {spec!r}", f"Use one of {known}, or a bf16 peak in TFLOPS such as 989."
            ) from None
        if not MIN_PEAK_TFLOPS <= peak_tflops <= MAX_PEAK_TFLOPS:
            raise WorkbenchError(
                f"--gpu: a peak of {spec} TFLOPS is outside [{MIN_PEAK_TFLOPS:g}, {MAX_PEAK_TFLOPS:g}]",
                f"Use one of {known}, or a GPU's dense bf16 peak in TFLOPS such as 989.",
            )
        gpu = Gpu(f"{peak_tflops:g} TFLOPS", peak_tflops * 1e12, 80 * GB)
    if memory_gb is not None:
        if not MIN_MEMORY_GB <= memory_gb <= MAX_MEMORY_GB:
            raise WorkbenchError(
                f"--gpu-memory-gb {memory_gb:g} is outside [{MIN_MEMORY_GB:g}, {MAX_MEMORY_GB:g}]",
                "Give the GPU's memory in GB (80 for an H100).",
            )
        gpu = replace(gpu, memory_bytes=memory_gb * GB)
    return gpu


def network(gpu: Gpu) -> tuple[float, float]:
    """(bandwidth, latency) of one GPU's share of the inter-node network."""
    return gpu.network_bytes_s, NETWORK_LATENCY_S
