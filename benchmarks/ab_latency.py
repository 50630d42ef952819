"""Warm search latency of two checkouts, measured in alternating rounds on the same machine.

A shared or throttled machine's speed drifts by a factor of two within minutes; one run per commit,
minutes apart, then compares the machine more than the code. This runs each checkout's own warm
benchmark (its index already built: ``policy-assistant ingest`` in each) in turn, ``--rounds`` times,
and prints every round and the median over rounds of p50 and p95.

    python benchmarks/ab_latency.py /path/to/other/checkout [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]

WARM = """
import json, sys
from assistant.config import Settings
from assistant.retrieval.engine import SearchEngine
try:
    from assistant.process import tune
except ImportError:  # an older checkout tunes in its constructors
    tune = None
settings = Settings()
if tune is not None:
    tune(settings)
engine = SearchEngine.load(settings, rebuild="never")
queries = json.loads(sys.stdin.read())
engine.search("warm-up")
print(json.dumps([engine.search(q, top_k=10).timings_ms["total"] for q in queries]))
"""


def questions() -> list[str]:
    rows = (json.loads(line) for line in (REPO / "eval" / "questions.jsonl").read_text(encoding="utf-8").splitlines()
            if line.strip())
    return [row["question"] for row in rows]


def warm(checkout: Path, queries: list[str]) -> dict[str, float]:
    done = subprocess.run([sys.executable, "-c", WARM], input=json.dumps(queries), capture_output=True, text=True,
                          cwd=checkout, env={**os.environ, "PYTHONPATH": str(checkout / "src")}, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{checkout}: {done.stderr.strip()[-1500:]}")
    samples = json.loads(done.stdout.strip().splitlines()[-1])
    return {"p50": float(np.percentile(samples, 50)), "p95": float(np.percentile(samples, 95))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("other", type=Path, help="the other checkout (its index built)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    queries = questions()
    checkouts = {"this": REPO, "other": args.other.resolve()}
    rounds: dict[str, list[dict[str, float]]] = {name: [] for name in checkouts}
    for number in range(1, args.rounds + 1):
        for name, path in checkouts.items():
            rounds[name].append(warm(path, queries))
            print(f"round {number} {name:<5} p50 {rounds[name][-1]['p50']:6.2f}  p95 {rounds[name][-1]['p95']:6.2f} ms",
                  flush=True)
    for name, path in checkouts.items():
        p50 = statistics.median(r["p50"] for r in rounds[name])
        p95 = statistics.median(r["p95"] for r in rounds[name])
        print(f"median {name:<5} p50 {p50:6.2f}  p95 {p95:6.2f} ms   ({path})")


if __name__ == "__main__":
    main()
