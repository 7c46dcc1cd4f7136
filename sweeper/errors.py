"""User-fixable errors: one message naming the file, the key path and what was expected."""

from __future__ import annotations

from collections.abc import Iterable
from difflib import get_close_matches


class UserError(Exception):
    """An error the user can fix; the CLI prints it without a traceback and exits 2."""


class SpecError(UserError):
    """One or more problems in a study file, each as (key path, message)."""

    def __init__(self, file: str, problems: list[tuple[str, str]]):
        self.file = file
        self.problems = problems
        super().__init__(str(self))

    def __str__(self) -> str:
        return "\n".join(
            f"{self.file}: {path}: {msg}" if path else f"{self.file}: {msg}" for path, msg in self.problems
        )


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """A ' (did you mean 'x'?)' suffix when a close match exists, else ''."""
    close = get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""
