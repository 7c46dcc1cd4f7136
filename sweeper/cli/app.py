"""The `sweeper` command line: the typer app, its global options and its commands, in the order
`--help` lists them; each command lives with its kind (running, inspecting, report, plot)."""

from __future__ import annotations

from typing import Annotated

import typer

from sweeper.cli.common import Options
from sweeper.cli.inspecting import logs, show, status, studies
from sweeper.cli.plot import plot_command
from sweeper.cli.report import report_command
from sweeper.cli.running import cancel, launch, plan, rebuild, rehearse, resume
from sweeper.report.console import out

app = typer.Typer(
    help="Declarative ablation sweeps for vision-transformer research.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode="markdown",  # docstring paragraphs reflow to the terminal's width
)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version  # only here: every other command would pay for it

        out.print(f"sweeper {version('sweeper')}")
        raise typer.Exit()


@app.callback()
def main(
    db: Annotated[
        str | None,
        typer.Option(
            "--db",
            envvar="SWEEPER_DB",
            help="Results store: a SQLAlchemy URL or a SQLite file path (default results.db).",
        ),
    ] = None,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    Options.db = db


for command in (plan, studies, show, launch, rehearse, status, resume, cancel, rebuild, logs):
    app.command()(command)
app.command("report")(report_command)
app.command("plot")(plot_command)
