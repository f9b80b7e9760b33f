"""`workbench model`: shapes, parameter counts and FLOPs per token."""

import json

import typer
from rich.console import Console
from rich.table import Table

from workbench.commands.options import json_option
from workbench.model import flops
from workbench.model.shapes import LLAMA3_VOCAB, resolve_size

app = typer.Typer(no_args_is_help=True)


@app.command("show", context_settings={"ignore_unknown_options": True})  # so "-5" reaches SIZE
def show(
    size: str = typer.Argument(..., help="A preset (8b, 70b, 405b) or a parameter count (350M, 1.2e9)."),
    seq_len: int = typer.Option(8192, "--seq-len", min=1, help="Sequence length for the attention FLOPs."),
    vocab_size: int = typer.Option(LLAMA3_VOCAB, "--vocab-size", min=2, help="Vocabulary size."),
    as_json: bool = json_option(),
) -> None:
    """Print the shape, total parameters, N (non-embedding) and FLOPs per token of a model."""
    shape = resolve_size(size, vocab_size)
    record = {
        **shape.as_dict(),
        "params_total": shape.params_total,
        "params": shape.params,
        "flops_per_token": flops.flops_per_token(shape, seq_len),
        "flops_per_token_6n": flops.flops_per_token(shape, seq_len, "6N"),
        "seq_len": seq_len,
    }
    if as_json:
        typer.echo(json.dumps(record))
        return
    table = Table(title=f"model {shape.name}", show_header=False)
    for key, value in record.items():
        table.add_row(
            key, f"{value:,}" if isinstance(value, int) else f"{value:.4g}" if isinstance(value, float) else str(value)
        )
    Console().print(table)
