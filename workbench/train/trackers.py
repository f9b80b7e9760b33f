"""Weights & Biases and TensorBoard for the trainer, from rank 0 only, when the config's `logging:` asks.

W&B: one run per run directory (its id is the run id, so a resumed run continues it), the config with
the run id, sweep, budget and N, tags `sweep:..`, `budget:..`, `N:..`, each metrics row at its step, and
the final record under the summary key `workbench_final`; the final evaluation is logged at the last step
too (where the loop's last evaluation came earlier). Files go to RUN_DIR/wandb (offline mode
needs no network; `wandb sync` uploads later). TensorBoard: scalars per metric at the step, and the
config and final record as text, in RUN_DIR/tensorboard. `workbench db import` reads both back
(workbench.store.importers). A package that is not installed is a one-line error saying what to install.
"""

from __future__ import annotations

import importlib
import json
import logging
import math
import re
from pathlib import Path
from typing import Any

from workbench.core.errors import WorkbenchError

log = logging.getLogger(__name__)
FINAL_KEY = "workbench_final"  # W&B summary key of the final record
CONFIG_KEY = "workbench"  # W&B config key of the full run config
TB_DIR = "tensorboard"
TB_CONFIG, TB_FINAL = "workbench/config", "workbench/final"


def require(module: str, package: str, extra: str = "track"):

    try:
        return importlib.import_module(module)
    except ImportError:
        raise WorkbenchError(
            f"logging to {package} needs the Python package `{package}`",
            f"Install it: pip install '{package}' (or workbench[{extra}]), or remove it from the config's logging.",
        ) from None


def wandb_id(run_id: str) -> str:
    """A W&B run id from a run id: at most 64 characters, none of / \\ # ? % :."""
    return re.sub(r"[/\\#?%:\s]", "-", run_id)[:64]


class Trackers:
    """The trackers a run's config asks for; does nothing on ranks other than 0 or when none is asked."""

    def __init__(self, cfg, run_dir: Path, is_main: bool):
        self.cfg, self.run_dir = cfg, Path(run_dir)
        wanted = getattr(cfg, "logging", None)
        self.wandb_cfg = wanted.wandb if wanted is not None else None
        self.tensorboard = bool(wanted is not None and wanted.tensorboard)
        self.active = is_main and (self.wandb_cfg is not None or self.tensorboard)
        self.run, self.writer = None, None
        self.logged: dict[str, int] = {}  # metric -> the last step it was logged at
        if self.wandb_cfg is not None:  # checked on every rank: a missing package fails before training
            require("wandb", "wandb")
        if self.tensorboard:
            require("tensorboard", "tensorboard")

    def start(self, params: int) -> None:
        if not self.active:
            return
        cfg = self.cfg
        meta = dict(cfg.meta)
        run_id = self.run_dir.name
        labels = {"run_id": run_id, "sweep": meta.get("sweep"), "budget_flops": meta.get("budget_flops"), "N": params}
        config = {CONFIG_KEY: cfg.model_dump(mode="json")} | labels
        if self.wandb_cfg is not None:
            self._start_wandb(run_id, config, labels)
        if self.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(self.run_dir / TB_DIR))
            self.writer.add_text(TB_CONFIG, json.dumps(config[CONFIG_KEY]), global_step=0)

    def _start_wandb(self, run_id: str, config: dict, labels: dict) -> None:
        wandb = require("wandb", "wandb")
        w = self.wandb_cfg
        tags = [f"sweep:{labels['sweep']}"] if labels["sweep"] else []
        if labels["budget_flops"]:
            tags.append(f"budget:{float(labels['budget_flops']):.3g}")
        tags += [f"N:{labels['N']}", *w.tags]
        settings = wandb.Settings(console="off", x_disable_stats=True, silent=True)
        try:
            self.run = self._init_wandb(wandb, w, run_id, config, tags, labels, settings)
        except Exception as err:  # not logged in, no network in online mode, a bad entity, ...
            first = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise WorkbenchError(
                f"wandb.init failed ({first})", "Run `wandb login`, or set logging.wandb.mode: offline."
            ) from None

    def _init_wandb(self, wandb, w, run_id: str, config: dict, tags: list, labels: dict, settings):
        return wandb.init(
            project=w.project,
            entity=w.entity,
            mode=w.mode,
            group=w.group or labels["sweep"],
            id=wandb_id(run_id),
            name=self.cfg.name,
            dir=str(self.run_dir),
            config=config,
            tags=tags,
            resume="allow",
            settings=settings,
        )

    def log(self, row: dict) -> None:
        """One metrics row (event rows are not curves and are skipped)."""
        if not self.active or "event" in row:
            return
        step = int(row["step"])
        values = {k: v for k, v in row.items() if k != "step" and _number(v)}
        self._scalars(values, step)

    def _scalars(self, values: dict, step: int) -> None:
        if not values:
            return
        self.logged |= dict.fromkeys(values, step)
        if self.run is not None:
            self.run.log(values, step=step)
        if self.writer is not None:
            for key, value in values.items():
                self.writer.add_scalar(key, value, global_step=step)

    def finish(self, record: dict) -> None:
        """The final record; first its final evaluation (val_loss, val_loss_NAME) as scalars at the last step,
        where the loop's last evaluation fell earlier (a run whose length is not a multiple of eval.every_tokens)."""
        if not self.active:
            return
        step = int(record.get("steps") or 0)
        final = {
            k: v
            for k, v in record.items()
            if (k == "val_loss" or k.startswith("val_loss_")) and k != "val_loss_se" and _number(v)
        }
        self._scalars({k: v for k, v in final.items() if self.logged.get(k) != step}, step)
        if self.run is not None:
            self.run.summary[FINAL_KEY] = json.loads(json.dumps(record, default=str))
            self.run.finish(exit_code=0 if record.get("status") == "completed" else 1)
            self.run = None
        if self.writer is not None:
            self.writer.add_text(TB_FINAL, json.dumps(record, default=str), global_step=int(record.get("steps") or 0))
            self.writer.close()
            self.writer = None


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
