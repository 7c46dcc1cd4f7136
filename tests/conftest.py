"""Shared fixtures: study files written into tmp_path, and store URLs for every backend."""

from __future__ import annotations

import os
import textwrap
import uuid
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

IN_CI = os.environ.get("CI") == "true"


@pytest.fixture
def write_study(tmp_path: Path):
    """Write a study file from a YAML string (dedented) and return its path."""

    def write(body: str, name: str = "study.yaml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(body))
        return path

    return write


def _postgres_url() -> str:
    url = os.environ.get("SWEEPER_TEST_PG_URL")
    if not url:
        if IN_CI:
            pytest.fail("CI must test the PostgreSQL store: SWEEPER_TEST_PG_URL is not set")
        pytest.skip("no PostgreSQL configured (run scripts/pg-sandbox.sh up and set SWEEPER_TEST_PG_URL)")
    return url


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store_url(request, tmp_path: Path):
    """A fresh, empty store on each backend: a SQLite file, or a new PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'results.db'}"
        return
    server = _postgres_url()
    name = f"sweeper_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    yield server.rsplit("/", 1)[0] + "/" + name
    with admin.connect() as c:
        c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()
