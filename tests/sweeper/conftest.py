"""Fixtures for the orchestrator tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def env(tmp_path: Path, monkeypatch):
    """A study directory as a user has it: results.db and runs/ in the cwd; tasks importable."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PYTHONPATH", str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    monkeypatch.setenv("SWEEPER_HEARTBEAT_S", "1")
    monkeypatch.delenv("SWEEPER_DB", raising=False)
    monkeypatch.delenv("SWEEPER_FAULT", raising=False)
    return tmp_path
