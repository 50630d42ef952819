"""Regression gate: the blind split must stay within every floor of eval/floors.json.

Runs the real evaluation on the split floors.json names (blind): retrieval of the default hybrid
(no ablation), every single question through ``Assistant.ask`` and every conversation turn by
turn. The floors sit a little below what the system measured when they were set, so a regression
fails and run-to-run noise does not; raise them as the system improves, never lower them to make a
change pass without saying so in the commit.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from assistant.evaluation.floors import GATED, check_floors, load_floors

REPO = Path(__file__).resolve().parents[1]
FLOORS = REPO / "eval" / "floors.json"


def test_floors_file_is_well_formed():
    floors = load_floors(FLOORS)  # every gated metric, one bound in its direction, within [0, 1]
    assert floors["split"] == "blind"
    for name, (direction, _) in GATED.items():
        entry = floors["floors"][name]
        if "measured" in entry:  # a floor is never stricter than what was measured when it was set
            bound = entry[direction]
            assert entry["measured"] >= bound if direction == "min" else entry["measured"] <= bound, name


def test_blind_split_stays_within_the_floors(engine, settings, capsys):
    from assistant.evaluation import EvalOptions, run_eval

    floors = load_floors(FLOORS)
    run = run_eval(engine, settings, EvalOptions(split=floors["split"], ablation=False, progress=False))
    checks = check_floors(run.results.gated, floors)
    dataset = run.results.dataset
    lines = [f"regression gate ({floors['split']} split: {dataset.questions} questions, {dataset.judged} judged, "
             f"{dataset.conversations} conversations):"]
    lines += [f"  {check.line()}" for check in checks]
    with capsys.disabled():
        print("\n" + "\n".join(lines))
    failures = [check.line() for check in checks if not check.ok]
    if failures:
        pytest.fail("the blind split regressed past eval/floors.json:\n" + "\n".join(failures))
