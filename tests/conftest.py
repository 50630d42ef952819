"""Shared fixtures: one real index (real embedders, real FAISS, real BM25) per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from assistant.config import Settings

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def index_dir(tmp_path_factory) -> Path:
    """A session-wide index folder, so tests never touch the developer's index/."""
    return tmp_path_factory.mktemp("index")


@pytest.fixture(scope="session")
def settings(index_dir, tmp_path_factory) -> Settings:
    return Settings(home=REPO, index_dir=index_dir,
                    feedback_db=tmp_path_factory.mktemp("var") / "feedback.sqlite3")


@pytest.fixture(scope="session")
def engine(settings):
    """The real search engine over a freshly built index (built once per session)."""
    from assistant.retrieval.engine import SearchEngine

    return SearchEngine.load(settings, rebuild="if_needed")


@pytest.fixture(scope="session")
def cli_env(settings) -> dict[str, str]:
    """Environment for running the CLI as a subprocess against the session index."""
    env = dict(os.environ)
    env["ASSISTANT_INDEX_DIR"] = str(settings.index_path)
    env["ASSISTANT_FEEDBACK_DB"] = str(settings.feedback_path)
    return env
