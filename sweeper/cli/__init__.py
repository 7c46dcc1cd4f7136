"""The command line: the typer app (app), its plumbing (common), and the report and plot commands."""

from sweeper.cli.app import app

__all__ = ["app"]
