"""`workbench train CONFIG.yaml`: run or resume one training run."""

import os
from pathlib import Path

import typer

from workbench.core.errors import WorkbenchError

app = typer.Typer()


@app.callback(invoke_without_command=True)
def train(
    config: Path = typer.Argument(..., help="A train config YAML (a sweep's run config or a planned flagship)."),
) -> None:
    """Train (or resume) the run in the config's run_dir; exit 3 if it diverged, 4 if interrupted."""
    from workbench.train import trainer

    try:
        record = trainer.main(config)
    except trainer.Interrupted as err:
        raise WorkbenchError(
            f"{err}; a checkpoint was saved", f"Rerun `workbench train {config}` to resume.", trainer.EXIT_INTERRUPTED
        ) from None
    if record["status"] == "diverged":
        raise WorkbenchError(
            f"the run diverged: {record['error']}",
            "Lower optim.lr_peak or raise faults.max_rollbacks; see metrics.jsonl for the rollbacks.",
            trainer.EXIT_DIVERGED,
        )
    if os.environ.get("RANK", "0") != "0":
        return
    typer.echo(
        f"{record['status']}: val_loss {record['val_loss']:.4f} after {record['tokens']:,} tokens "
        f"({record['steps']} steps, {record['wall_s']:.1f} s); run dir {Path(trainer.coerce_config(config).run_dir)}"
    )
