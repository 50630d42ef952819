"""benchmarks/load.py: loopback only, bounded, and a report with the numbers (no speed is asserted here)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("load_benchmark", REPO / "benchmarks" / "load.py")
load = importlib.util.module_from_spec(spec)
sys.modules["load_benchmark"] = load  # dataclasses look their module up there
spec.loader.exec_module(load)


@pytest.mark.parametrize("host", ["127.0.0.1", "127.3.4.5", "localhost", "::1", "[::1]", "LOCALHOST"])
def test_loopback_hosts_are_accepted(host):
    assert load.is_loopback(host)


@pytest.mark.parametrize("url", ["http://10.0.0.1:7860", "http://192.168.1.10", "http://example.com",
                                 "http://0.0.0.0:7860", "http://[2001:db8::1]:80", "http://127.0.0.1.example.com",
                                 "ftp://127.0.0.1", "127.0.0.1:7860"])
def test_other_targets_are_refused_before_any_request(url, monkeypatch):
    import httpx

    def no_network(*args, **kwargs):
        raise AssertionError("a request was sent")

    monkeypatch.setattr(httpx, "get", no_network)
    monkeypatch.setattr(httpx.Client, "send", no_network)
    with pytest.raises(SystemExit) as refused:
        load.main(["--url", url, "--duration", "1"])
    assert "refusing" in str(refused.value) or "must look like" in str(refused.value)


@pytest.mark.parametrize("args", [["--duration", "601"], ["--duration", "0"], ["--clients", "0"],
                                  ["--max-requests", "0"], ["--rate", "-1"], ["--mix", "delete=1"]])
def test_unbounded_runs_are_refused(args):
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "load.py"), "--url", "http://127.0.0.1:9", *args],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "error" in done.stderr


def test_unique_texts_do_not_repeat():
    questions = load.load_questions(REPO / "eval" / "questions.jsonl")
    stream = load.question_stream(questions, unique=True, seed=1)
    texts = [next(stream) for _ in range(5000)]
    assert len(set(texts)) == len(texts)
    assert not set(texts) & {text for _, text in questions}  # never a primed (bare) question


@pytest.mark.slow
def test_short_run_against_the_live_server_reports_every_endpoint(live_server, tmp_path):
    out = tmp_path / "load.json"
    code = load.main(["--url", live_server, "--clients", "4", "--duration", "3", "--max-requests", "60",
                      "--no-prime", "--json", str(out)])
    report = json.loads(out.read_text(encoding="utf-8"))
    assert code == 0
    assert set(report["endpoints"]) == {"search", "ask", "all"}
    total = report["endpoints"]["all"]
    assert 0 < total["requests"] <= 60 and total["errors"] == 0
    for row in report["endpoints"].values():
        assert {"throughput_rps", "p50_ms", "p95_ms", "p99_ms", "errors"} <= set(row)
    assert report["config"]["clients"] == 4 and report["seconds"] <= 3 + 60  # stopped by itself
