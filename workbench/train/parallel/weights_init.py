"""Layout-independent initialisation: every weight is a function of (seed, parameter name, position).

A parameter is cut into a fixed grid of tiles (TILE_ROWS x TILE_COLS of the full, unsharded tensor);
tile (i, j) of parameter NAME is Normal(0, std) from a torch CPU generator seeded with a hash of
(seed, NAME, i, j). A rank fills only the tiles that overlap its own shard, so a model built on the
meta device materialises nothing but its shards, and any TP x PP x DP layout (or one process) gets the
same weights. The stds are model.py's: init_std, init_std / sqrt(2 n_layers) for wo and w2, norms 1.

This is used under a `layout:` block only. Without one the trainer keeps the single-process
initialisation of model.Transformer.reset_parameters (one torch seed, drawn in parameter order), so
every published run reproduces; the two initialisations have the same distribution but other draws.
"""

from __future__ import annotations

import hashlib
import math

import torch
from torch import nn
from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

from workbench.model.config import ModelConfig

TILE_ROWS = 1024
TILE_COLS = 8192
WRAPPER_PARTS = ("_checkpoint_wrapped_module.", "_orig_mod.", "_fsdp_wrapped_module.")


def canonical(name: str) -> str:
    """The parameter's name in the plain model (wrapper prefixes removed)."""
    for part in WRAPPER_PARTS:
        name = name.replace(part, "")
    return name


def tile_seed(seed: int, name: str, row_tile: int, col_tile: int) -> int:
    digest = hashlib.sha256(f"{seed}/{name}/{row_tile}/{col_tile}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def local_region(param: torch.Tensor) -> tuple[torch.Tensor, tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """(local tensor, full shape, local shape, global offset) of a plain tensor or a DTensor."""
    if hasattr(param, "device_mesh"):
        shape, offset = compute_local_shape_and_global_offset(param.shape, param.device_mesh, param.placements)
        return param.to_local(), tuple(param.shape), tuple(shape), tuple(offset)
    return param, tuple(param.shape), tuple(param.shape), (0,) * param.ndim


def normal_region(
    seed: int, name: str, std: float, full: tuple[int, ...], shape: tuple[int, ...], offset: tuple[int, ...]
) -> torch.Tensor:
    """The fp32 values of region [offset, offset + shape) of parameter `name` (full shape `full`)."""
    rows, cols = full[0], math.prod(full[1:])
    r0, c0 = offset[0], (offset[1] if len(offset) > 1 else 0)
    nr, nc = shape[0], math.prod(shape[1:])
    out = torch.empty(nr, nc)
    if nr == 0 or nc == 0:
        return out.view(shape)
    for ti in range(r0 // TILE_ROWS, (r0 + nr - 1) // TILE_ROWS + 1):
        for tj in range(c0 // TILE_COLS, (c0 + nc - 1) // TILE_COLS + 1):
            tr0, tc0 = ti * TILE_ROWS, tj * TILE_COLS
            g = torch.Generator().manual_seed(tile_seed(seed, name, ti, tj))
            tile = torch.randn(min(TILE_ROWS, rows - tr0), min(TILE_COLS, cols - tc0), generator=g)
            a0, a1 = max(r0, tr0), min(r0 + nr, tr0 + tile.shape[0])
            b0, b1 = max(c0, tc0), min(c0 + nc, tc0 + tile.shape[1])
            out[a0 - r0 : a1 - r0, b0 - c0 : b1 - c0] = tile[a0 - tr0 : a1 - tr0, b0 - tc0 : b1 - tc0]
    return out.mul_(std).view(shape)


@torch.no_grad()
def init_parameters(modules: list[nn.Module], cfg: ModelConfig, seed: int) -> None:
    """Fill every parameter of `modules` (materialised, possibly sharded) from (seed, name)."""
    residual_std = cfg.init_std / math.sqrt(2 * cfg.n_layers)
    for module in modules:
        for raw_name, param in module.named_parameters():
            name = canonical(raw_name)
            local, full, shape, offset = local_region(param)
            if name.endswith("norm.weight"):
                local.fill_(1.0)
                continue
            std = residual_std if name.endswith(("wo.weight", "w2.weight")) else cfg.init_std
            local.copy_(normal_region(seed, name, std, full, shape, offset).to(local.dtype))
