"""The `workbench` command: one typer group per stage, one error handler.

Heavy modules (torch, duckdb, scipy, matplotlib, pandas) are imported inside the commands, so that
`workbench --help` stays fast. Library modules log through `logging` (workbench.core.logs); the commands
print. The global options --debug and --version may come anywhere on the line, also after the subcommand.
"""

from __future__ import annotations

import logging
import os
import sys

import click
import typer
from typer.core import TyperGroup

import workbench
from workbench.commands import data, db, demo, fit, flagship, memory, model, plan, report, sweep, train
from workbench.commands.help_render import load_help_renderer, wants_help
from workbench.core import logs
from workbench.core.errors import WorkbenchError
from workbench.core.files import DISK_ERRNOS, disk_error

GLOBAL_FLAGS = ("--debug", "--version")
# typer >= 0.22 parses with its own copy of click (typer.BadParameter derives from that copy's UsageError)
USAGE_ERRORS = tuple({click.UsageError, typer.BadParameter.__mro__[1]})


class _Group(TyperGroup):
    """The root group: turns a WorkbenchError anywhere below it into `Error: ...` and its exit code, and a
    usage error (an unknown option, a value the option's type or range refuses) into one `Error:` line, exit 2."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except USAGE_ERRORS as err:
            if (ctx.obj or {}).get("debug"):
                raise
            _usage_error(err, ctx)
        except WorkbenchError as err:
            if (ctx.obj or {}).get("debug"):
                raise
            click.echo(f"Error: {err}", err=True)
            ctx.exit(err.exit_code)
        except OSError as err:  # a file the command did not expect to fail (its own sites name theirs)
            if (ctx.obj or {}).get("debug"):
                raise
            place = err.filename if err.filename is not None else "a file"
            click.echo(f"Error: {disk_error(err, place) if err.errno in DISK_ERRNOS else _os_text(err)}", err=True)
            ctx.exit(1)

    def make_context(self, info_name, args, parent=None, **extra):
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except USAGE_ERRORS as err:  # the root's own options (e.g. an unknown one before the command)
            _usage_error(err, None)


def _usage_error(err, ctx) -> None:
    """One `Error:` line naming the command, what the parser refused and where the help is; exit 2."""
    if err.ctx is not None:  # the root's name is the program's, whatever the caller named it
        where = " ".join(["workbench", *err.ctx.command_path.split()[1:]])
    else:
        sub = getattr(ctx, "invoked_subcommand", None)
        where = f"workbench {sub}" if sub else "workbench"
    text = " ".join(err.format_message().split()).rstrip(".")
    click.echo(f"Error: {where}: {text}. See `{where} --help`.", err=True)
    sys.exit(2)


def _os_text(err: OSError) -> str:
    where = f" ({err.filename})" if err.filename is not None else ""
    return f"{err.strerror or type(err).__name__}{where}. Check the path and its permissions; --debug shows where."


app = typer.Typer(
    cls=_Group,
    help="Scaling-law experiments and compute planning for LLM pretraining.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"workbench {workbench.__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    debug: bool = typer.Option(False, "--debug", help="Show the full traceback of an error and debug log lines."),
    version: bool = typer.Option(
        False, "--version", is_eager=True, callback=_version, help="Print the version and exit."
    ),
) -> None:
    ctx.obj = {"debug": debug}
    logs.setup(debug)


app.add_typer(model.app, name="model", help="Model shapes, parameter counts and FLOPs.")
app.add_typer(data.app, name="data", help="Prepare token shards from text.")
app.command("train")(train.train)
app.add_typer(sweep.app, name="sweep", help="Expand, launch and follow sweeps of training runs.")
app.add_typer(db.app, name="db", help="The DuckDB store of runs, metrics, fits and plans.")
app.command("fit")(fit.fit)
app.command("plan")(plan.plan)
app.command("memory")(memory.memory)
app.add_typer(flagship.app, name="flagship", help="Launch a planned flagship run through the sweep launcher.")
app.command("report")(report.report)
app.command("demo")(demo.demo)


def global_flags_first(argv: list[str]) -> list[str]:
    """The arguments with --debug and --version moved to the front, wherever they were typed (up to `--`)."""
    end = argv.index("--") if "--" in argv else len(argv)
    flags = [a for a in argv[:end] if a in GLOBAL_FLAGS]
    return flags + [a for i, a in enumerate(argv) if not (i < end and a in GLOBAL_FLAGS)]


def main() -> None:
    """Console-script entry point."""
    if wants_help(sys.argv[1:]):
        load_help_renderer()
    try:
        app(args=global_flags_first(sys.argv[1:]), prog_name="workbench")
    except SystemExit as done:
        if launched_worker():
            exit_now(done.code)
        raise
    if launched_worker():
        exit_now(0)


def launched_worker() -> bool:
    """Whether this process is one of several started by a launcher (torchrun, srun): WORLD_SIZE > 1."""
    return os.environ.get("WORLD_SIZE", "1").strip() not in ("", "0", "1")


def exit_now(code: int | str | None) -> None:
    """Leave without the interpreter's finalization. A launched worker has destroyed its process group and
    written what it owns by now; under load, gloo's C++ teardown at interpreter exit can still call
    std::terminate ("terminate called without an active exception", SIGABRT), which turns a finished run
    into a failed one for torchrun or Slurm. So flush what Python buffered and exit with the command's code."""
    if isinstance(code, str):
        print(code, file=sys.stderr)
        code = 1
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
