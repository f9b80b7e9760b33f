"""Sharded checkpoints for layout runs: torch.distributed.checkpoint (DCP), written by every rank.

A checkpoint of a run with a `layout:` block is the same step directory as any other
(ckpt/step_XXXXXXXX/, written as ckpt/.tmp-step_XXXXXXXX-<pid of rank 0>/ and renamed by rank 0 through
workbench.checkpoint.save): `state.pt` holds the trainer state and RNG only (model and optimizer None),
and `sharded/` holds DCP's files: one `__<rank>_0.distcp` per rank with that rank's shards of the model
and optimizer state, and `.metadata`. Nothing is gathered: each rank writes its own shards (replicated
tensors once). Keys are the plain model's parameter names (`layers.3.attention.wq.weight`, and
`optimizer.state.<name>.exp_avg` ...) under every layout, so DCP reshards on load: a checkpoint saved
under TP 2 loads under DP 2, PP 2 or one process with a layout, and the other way round.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

SHARDED = "sharded"


def is_sharded(path: Path) -> bool:
    return (path / SHARDED / ".metadata").is_file()


def model_view(parts: list[nn.Module]) -> nn.Module:
    """One module whose parameter names are the plain model's, over this rank's parts (pipeline stages)."""
    if len(parts) == 1:
        return parts[0]
    view = nn.Module()
    layers = nn.ModuleDict()
    for part in parts:
        for name in ("tok_embeddings", "norm", "output"):
            if getattr(part, name, None) is not None:
                setattr(view, name, getattr(part, name))
        for key, layer in part.layers.items():
            layers[key] = layer
    view.layers = layers
    return view


def shared_tmp_dir(ckpt_root: Path, step: int) -> Path:
    """The temp dir of checkpoint `step`, named by rank 0's host and pid (workbench.checkpoint.owner_tag,
    so rotation sweeps it only when rank 0 is dead) and the same on every rank."""
    from workbench.checkpoint import owner_tag

    tag = [owner_tag()]
    if dist.is_initialized():
        dist.broadcast_object_list(tag, src=0)
    return ckpt_root / f".tmp-step_{step:08d}-{tag[0]}"


def save_sharded(tmp: Path, parts: list[nn.Module], optimizer: torch.optim.Optimizer) -> None:
    """Every rank writes its shards of the model and optimizer state into tmp/sharded (a collective)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict

    view = model_view(parts)
    state = {"model": get_model_state_dict(view)}
    if optimizer.state:  # before the first step there is none: a resumed run starts a fresh optimizer
        state["optimizer"] = get_optimizer_state_dict(view, optimizer)
    dcp.save(state, checkpoint_id=str(tmp / SHARDED))


def load_sharded(path: Path, parts: list[nn.Module], optimizer: torch.optim.Optimizer | None) -> None:
    """Load checkpoint dir `path`'s DCP state into this rank's (possibly differently sharded) parts."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import (
        get_model_state_dict,
        get_optimizer_state_dict,
        set_model_state_dict,
        set_optimizer_state_dict,
    )

    view = model_view(parts)
    reader = dcp.FileSystemReader(str(path / SHARDED))
    has_optimizer = any(key.startswith("optimizer.") for key in reader.read_metadata().state_dict_metadata)
    state = {"model": get_model_state_dict(view)}
    if optimizer is not None and has_optimizer:
        state["optimizer"] = get_optimizer_state_dict(view, optimizer)
    dcp.load(state, storage_reader=reader)
    set_model_state_dict(view, state["model"])
    if optimizer is None:
        return
    if has_optimizer:
        set_optimizer_state_dict(view, optimizer, state["optimizer"])
    else:
        optimizer.state.clear()


def load_full_into_sharded(parts: list[nn.Module], model_state: dict) -> None:
    """An unsharded model state dict (a checkpoint of a run without a layout) into this rank's parts."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    view = model_view(parts)
    names = set(view.state_dict())
    mine = {k: v for k, v in model_state.items() if k in names}
    set_model_state_dict(view, mine, options=StateDictOptions(full_state_dict=True, strict=False))
