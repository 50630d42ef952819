"""Conversations across API worker processes and restarts: the real ``policy-assistant serve`` over HTTP.

With several uvicorn workers, turn 2 of a conversation may land on a worker that never saw turn 1,
and a restart replaces every worker; the turns live in the conversation store (SQLite here), so
every follow-up must keep its conversation and be read in its context.
"""

from __future__ import annotations

import concurrent.futures

import httpx
import pytest

pytestmark = pytest.mark.slow

FIRST, FOLLOW = "外资能办养老机构吗？", "那医院呢？"


@pytest.fixture
def state_env(cli_env, tmp_path) -> dict[str, str]:
    """The CLI environment with private conversation and feedback databases."""
    return {**cli_env, "ASSISTANT_CONVERSATION_DB": str(tmp_path / "conversations.sqlite3"),
            "ASSISTANT_FEEDBACK_DB": str(tmp_path / "feedback.sqlite3"), "ASSISTANT_INDEX_WATCH_SECONDS": "0"}


def _ask(url: str, question: str, conversation_id: str | None = None) -> dict:
    response = httpx.post(f"{url}/api/ask", json={"question": question, "conversation_id": conversation_id},
                          timeout=120)
    assert response.status_code == 200, response.text
    return response.json()


def _cited(body: dict) -> list[int]:
    return [c["task"] for c in body["citations"] if c["task"] is not None]


def test_follow_ups_keep_their_conversation_across_four_workers(serve_cli, state_env, tmp_path):
    with serve_cli(state_env, "--workers", "4", log_path=tmp_path / "serve.log") as url:
        alone = _cited(_ask(url, FOLLOW))
        firsts = [_ask(url, FIRST) for _ in range(12)]
        assert all(not f["conversation_reset"] for f in firsts)
        # spread over the workers at once, never more than one worker's admission limit (8) in flight:
        # the kernel may hand a worker more than its share, and a 9th at once is a documented 503
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            follows = list(pool.map(lambda f: _ask(url, FOLLOW, f["conversation_id"]), firsts))
    for first, follow in zip(firsts, follows, strict=True):
        assert follow["conversation_id"] == first["conversation_id"]
        assert follow["conversation_reset"] is False
        assert "医院" in (follow["resolved_query"] or "")
        assert _cited(follow) != alone  # read as "can foreign investors run hospitals?", not on its own
    assert "Traceback" not in (tmp_path / "serve.log").read_text()


def test_conversation_continues_after_a_restart(serve_cli, state_env, tmp_path):
    with serve_cli(state_env, "--workers", "2", log_path=tmp_path / "before.log") as url:
        first = _ask(url, FIRST)
    with serve_cli(state_env, "--workers", "2", log_path=tmp_path / "after.log") as url:
        follow = _ask(url, FOLLOW, first["conversation_id"])
        unknown = _ask(url, FOLLOW, "never-issued")
    assert follow["conversation_id"] == first["conversation_id"] and follow["conversation_reset"] is False
    assert "医院" in (follow["resolved_query"] or "")
    assert unknown["conversation_reset"] is True and unknown["conversation_id"] != "never-issued"
