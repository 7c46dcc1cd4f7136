"""The command line: the typer app (app), its plumbing (common), the commands that record and run
studies (running) and those that look at them (inspecting), what they print (views), --wait (watch),
and the report and plot commands."""

from sweeper.cli.app import app

__all__ = ["app"]
