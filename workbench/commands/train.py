"""`workbench train CONFIG.yaml [KEY=VALUE ...]`: run or resume one training run."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from workbench.commands.options import OVERRIDES_HELP, echo_json, json_option
from workbench.core.errors import WorkbenchError


def train(
    config: Path = typer.Argument(
        ..., metavar="CONFIG", help="A train config YAML (a sweep's run config or a planned flagship)."
    ),
    overrides: list[str] = typer.Argument(None, metavar="KEY=VALUE", help=OVERRIDES_HELP, show_default=False),
    as_json: bool = json_option(),
) -> None:
    """Train (or resume) the run in the config's run_dir; exit 3 if it diverged, 4 if interrupted.

    Overrides are recorded in the run's config.yaml (their values) and in its meta.overrides (as typed)."""
    from workbench.core.configfile import load
    from workbench.train import trainer
    from workbench.train.config import TrainConfig

    cfg = load(TrainConfig, config, overrides or ())
    if overrides:
        cfg = cfg.model_copy(update={"meta": {**cfg.meta, "overrides": " ".join(overrides)}})
    try:
        record = trainer.main(cfg)
    except trainer.Interrupted as err:
        raise WorkbenchError(
            f"{err}; a checkpoint was saved", f"Rerun `workbench train {config}` to resume.", trainer.EXIT_INTERRUPTED
        ) from None
    if record["status"] == "diverged":
        raise WorkbenchError(
            f"the run diverged: {record['error']}",
            "Lower optim.lr_peak or raise faults.max_rollbacks; see the run's metrics for the rollbacks.",
            trainer.EXIT_DIVERGED,
        )
    if os.environ.get("RANK", "0") != "0":
        return
    if as_json:
        echo_json(record)
        return
    typer.echo(
        f"{record['status']}: val_loss {record['val_loss']:.4f} after {record['tokens']:,} tokens "
        f"({record['steps']} steps, {record['wall_s']:.1f} s); run dir {Path(cfg.run_dir)}"
    )
