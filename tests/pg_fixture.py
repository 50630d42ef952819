"""A private PostgreSQL for tests: ``scripts/postgres.sh start`` once per session, a fresh schema per test.

Load it from a test module with ``pytest_plugins = ["pg_fixture"]``. When the
server cannot start, tests that need it are skipped with the script's own reason.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def pg_dsn() -> Iterator[str]:
    """The DSN of a private server on a free loopback port (started once per session and stopped
    after it, so another session's server never stands in the way), or a skip saying why not."""
    env = {**os.environ, "PGPORT_ASSISTANT": str(_free_port())}
    script = ["bash", str(REPO / "scripts" / "postgres.sh")]
    try:
        done = subprocess.run([*script, "start"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"scripts/postgres.sh start failed: {exc}")
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines or not lines[-1].startswith("postgresql://"):
        pytest.skip(f"scripts/postgres.sh start failed ({done.returncode}): {done.stderr.strip()[-800:]}")
    try:
        yield lines[-1]
    finally:
        subprocess.run([*script, "stop"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture
def pg_schema(pg_dsn) -> Iterator[str]:
    """A schema name unique to one test (the stores create it), dropped afterwards."""
    import psycopg

    schema = f"t_{uuid.uuid4().hex[:12]}"
    yield schema
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
