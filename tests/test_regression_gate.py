"""Regression gate: the real retrieval eval must stay above the floors in eval/floors.json.

Retrieval only (no ablation, no answers) to keep CI fast. The floors sit a little below what
the system measured when they were set; raise them as retrieval improves, never lower them to
make a change pass without saying so in the commit.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FLOORS = REPO / "eval" / "floors.json"
GATED = ("NDCG@10", "Recall@5")


def load_floors() -> dict:
    floors = json.loads(FLOORS.read_text(encoding="utf-8"))
    assert floors["split"] in ("dev", "test", "all")
    assert all(0.0 < floors[key] <= 1.0 for key in GATED), floors
    return floors


def test_floors_file_is_well_formed():
    load_floors()


def test_retrieval_stays_above_the_floors(engine, settings, capsys):
    from assistant.evaluation import EvalOptions, run_eval

    floors = load_floors()
    run = run_eval(engine, settings, EvalOptions(split=floors["split"], ablation=False, answers=False,
                                                 progress=False))
    measured = run.results["retrieval"]["configs"]["hybrid"]["metrics"]
    judged = run.results["dataset"]["judged"]
    lines = [f"regression gate ({floors['split']} split, {judged} judged questions, hybrid):"]
    lines += [f"  {key:<9} measured {measured[key]:.4f}  floor {floors[key]:.4f}  "
              f"margin {measured[key] - floors[key]:+.4f}" for key in GATED]
    lines += [f"  {key:<9} measured {value:.4f}" for key, value in measured.items() if key not in GATED]
    failures = [f"{key} {measured[key]:.4f} < floor {floors[key]:.4f}" for key in GATED if measured[key] < floors[key]]
    scope, limits = run.results["scope"], floors["scope"]
    lines.append(f"  scope     out-of-scope flagged {scope['recall']:.4f} (min {limits['oos_recall_min']}), "
                 f"in scope wrongly flagged {scope['false_flag_rate']:.4f} (max {limits['false_flag_max']})")
    if scope["recall"] < limits["oos_recall_min"]:
        failures.append(f"out-of-scope flagged {scope['recall']:.4f} < {limits['oos_recall_min']}")
    if scope["false_flag_rate"] > limits["false_flag_max"]:
        failures.append(f"in scope wrongly flagged {scope['false_flag_rate']:.4f} > {limits['false_flag_max']}")
    with capsys.disabled():
        print("\n" + "\n".join(lines))
    if failures:
        pytest.fail("retrieval regressed below eval/floors.json: " + "; ".join(failures))
