"""Conversations across API workers and a restart: do follow-ups keep their context?

Starts ``policy-assistant serve --workers N`` itself on a free 127.0.0.1 port (never another host),
with a private conversation database (a temporary SQLite file, or the PostgreSQL of
``ASSISTANT_STATE_DSN`` when that is set), then:

1. opens ``--conversations`` conversations at once (turn 1: "外资能办养老机构吗？"),
2. answers the follow-up "那医院呢？" in all but ``--continue`` of them, concurrently, so turns land
   on workers that never saw turn 1,
3. restarts the service (every worker replaced),
4. answers the follow-up in the remaining ``--continue`` conversations.

A follow-up kept its context when it came back in the same conversation (same id,
``conversation_reset`` false) and was read against turn 1: its citations differ from those of the
same words asked on their own (a fresh "那医院呢？"). Busy answers (503 + Retry-After, overload
shedding) are retried up to ``--retries`` times and counted; anything else is an error.
Every run is bounded: at most ``MAX_CONVERSATIONS`` conversations and ``--max-seconds`` in all.

    python benchmarks/conversations.py                       # 200 conversations, 50 after the restart
    python benchmarks/conversations.py --workers 2 --json out.json
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from load import START_TIMEOUT_S, Server, free_port  # the sibling benchmark's server helper

FIRST, FOLLOW = "外资能办养老机构吗？", "那医院呢？"
MAX_CONVERSATIONS = 2_000
MAX_CLIENTS = 256


@dataclass
class Tally:
    """Outcomes of one phase."""

    asked: int = 0
    kept: int = 0
    reset: int = 0
    other_id: int = 0
    no_context: int = 0  # same conversation, but the follow-up was answered as if asked alone
    busy_retries: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1

    def to_json(self) -> dict[str, Any]:
        return {"asked": self.asked, "kept_context": self.kept, "reset": self.reset, "other_id": self.other_id,
                "no_context": self.no_context, "busy_retries": self.busy_retries,
                "errors": sum(self.errors.values()), "error_kinds": self.errors, "seconds": round(self.seconds, 1)}


class Client:
    """``/api/ask`` with retries of busy (503) answers, honouring Retry-After."""

    def __init__(self, url: str, retries: int, deadline: float) -> None:
        self.url, self.retries, self.deadline = url, retries, deadline
        self.http = httpx.Client(base_url=url, timeout=120)

    def ask(self, question: str, conversation_id: str | None, tally: Tally) -> dict[str, Any] | None:
        for attempt in range(self.retries + 1):
            if time.monotonic() > self.deadline:
                tally.error("deadline")
                return None
            try:
                response = self.http.post("/api/ask", json={"question": question, "conversation_id": conversation_id})
            except httpx.HTTPError as exc:
                tally.error(type(exc).__name__)
                return None
            if response.status_code == 503 and attempt < self.retries:
                tally.busy_retries += 1
                time.sleep(float(response.headers.get("retry-after", "1") or 1))
                continue
            if response.status_code != 200:
                tally.error(f"HTTP {response.status_code}")
                return None
            return response.json()
        return None

    def close(self) -> None:
        self.http.close()


def cited(body: dict[str, Any]) -> list[Any]:
    return [c.get("task") if c.get("task") is not None else c.get("section_id") for c in body["citations"]]


def open_conversations(client: Client, count: int, clients: int) -> tuple[list[str], Tally]:
    tally, started = Tally(), time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        bodies = list(pool.map(lambda _: client.ask(FIRST, None, tally), range(count)))
    tally.asked, tally.seconds = count, time.monotonic() - started
    ids = [b["conversation_id"] for b in bodies if b is not None]
    tally.kept = len(ids)
    return ids, tally


def follow_up(client: Client, ids: list[str], alone: list[Any], clients: int) -> Tally:
    tally, started = Tally(), time.monotonic()

    def one(conversation_id: str) -> None:
        body = client.ask(FOLLOW, conversation_id, tally)
        if body is None:
            return
        if body.get("conversation_reset"):
            tally.reset += 1
        elif body.get("conversation_id") != conversation_id:
            tally.other_id += 1
        elif not body["citations"] or cited(body) == alone:
            tally.no_context += 1
        else:
            tally.kept += 1

    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        list(pool.map(one, ids))
    tally.asked, tally.seconds = len(ids), time.monotonic() - started
    return tally


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--conversations", type=int, default=200)
    parser.add_argument("--continue", dest="after", type=int, default=50,
                        help="conversations whose follow-up is asked after the restart")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--clients", type=int, default=200, help="concurrent clients (threads)")
    parser.add_argument("--retries", type=int, default=20, help="retries of a busy (503) answer")
    parser.add_argument("--max-seconds", type=float, default=1200.0, help="the whole run, start-ups included")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    if not 1 <= args.conversations <= MAX_CONVERSATIONS:
        parser.error(f"--conversations must be 1-{MAX_CONVERSATIONS}")
    if not 0 <= args.after <= args.conversations:
        parser.error("--continue must be between 0 and --conversations")
    if not 1 <= args.clients <= MAX_CLIENTS or not 1 <= args.workers <= 32:
        parser.error(f"--clients must be 1-{MAX_CLIENTS} and --workers 1-32")
    deadline = time.monotonic() + min(args.max_seconds, 3600.0)

    tmp = Path(tempfile.mkdtemp(prefix="conversations-bench-"))
    if not os.environ.get("ASSISTANT_STATE_DSN"):
        os.environ["ASSISTANT_CONVERSATION_DB"] = str(tmp / "conversations.sqlite3")
    os.environ.setdefault("ASSISTANT_FEEDBACK_DB", str(tmp / "feedback.sqlite3"))
    os.environ["ASSISTANT_HOST"] = "127.0.0.1"
    port = free_port()
    results: dict[str, Any] = {"workers": args.workers, "conversations": args.conversations,
                               "after_restart": args.after, "clients": args.clients,
                               "state": "postgresql" if os.environ.get("ASSISTANT_STATE_DSN") else "sqlite"}
    server = Server(args.workers, port, tmp / "serve-1.log")
    try:
        health = server.wait_ready(min(START_TIMEOUT_S, deadline - time.monotonic()))
        results["max_in_flight"] = health.get("max_in_flight")
        client = Client(server.url, args.retries, deadline)
        alone_tally = Tally()
        alone_body = client.ask(FOLLOW, None, alone_tally)
        if alone_body is None:
            raise SystemExit(f"error: the fresh question failed: {alone_tally.errors}")
        alone = cited(alone_body)
        results["alone_citations"] = alone

        ids, opened = open_conversations(client, args.conversations, args.clients)
        before_ids, after_ids = ids[: len(ids) - args.after], ids[len(ids) - args.after:]
        before = follow_up(client, before_ids, alone, args.clients)
        client.close()

        restart_started = time.monotonic()
        server.stop()
        server = Server(args.workers, port, tmp / "serve-2.log")
        server.wait_ready(min(START_TIMEOUT_S, deadline - time.monotonic()))
        results["restart_seconds"] = round(time.monotonic() - restart_started, 1)
        client = Client(server.url, args.retries, deadline)
        after = follow_up(client, after_ids, alone, args.clients)
        client.close()
    finally:
        server.stop()
    results.update({"turn1": opened.to_json(), "followups_before_restart": before.to_json(),
                    "followups_after_restart": after.to_json()})
    kept, asked = before.kept + after.kept, before.asked + after.asked
    errors = sum(sum(t.errors.values()) for t in (opened, before, after))
    results["summary"] = {"followups": asked, "kept_context": kept, "errors": errors,
                          "busy_retries": opened.busy_retries + before.busy_retries + after.busy_retries}
    print(f"state: {results['state']}, {args.workers} workers, {args.clients} clients, "
          f"max_in_flight {results['max_in_flight']}; a fresh {FOLLOW!r} cites {alone}")
    print(f"turn 1: {opened.kept}/{opened.asked} conversations opened in {opened.seconds:.1f} s, "
          f"{sum(opened.errors.values())} errors {opened.errors or ''}, {opened.busy_retries} busy retries")
    for name, tally in (("before restart", before), ("after restart", after)):
        print(f"follow-ups {name}: {tally.kept}/{tally.asked} kept their context "
              f"(reset {tally.reset}, other id {tally.other_id}, no context {tally.no_context}), "
              f"{sum(tally.errors.values())} errors {tally.errors or ''}, {tally.busy_retries} busy retries, "
              f"{tally.seconds:.1f} s")
    print(f"restart took {results['restart_seconds']} s; overall {kept}/{asked} follow-ups kept their context, "
          f"{errors} errors")
    if args.json:
        args.json.write_text(json.dumps(results, ensure_ascii=False, indent=2))
    return 0 if kept == asked and errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
