"""Fit the scope model on the dev split of the eval set (the test split is never used)."""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING

from assistant.config import Settings
from assistant.retrieval.scope import ScopeModel, evidence_features, fit_scope_model
from assistant.text import detect_language

if TYPE_CHECKING:
    from assistant.retrieval.engine import SearchEngine

log = logging.getLogger(__name__)


def dev_questions(settings: Settings) -> list[dict]:
    """Dev-split questions usable for scope calibration (no lookups, no follow-ups)."""
    path = settings.eval_path / "questions.jsonl"
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [r for r in rows if r.get("split") == "dev" and r.get("type") not in ("lookup", "followup")]


def calibrate_scope(engine: SearchEngine, settings: Settings) -> ScopeModel | None:
    questions = dev_questions(settings)
    if not questions or all(q["in_scope"] for q in questions):
        log.warning("no dev questions with out-of-scope examples in %s; scope is not calibrated",
                    settings.eval_path)
        return None
    rows, labels = [], []
    for question in questions:
        scores, _ = engine.unit_scores(question["question"])
        rows.append(evidence_features(scores, detect_language(question["question"])))
        labels.append(bool(question["in_scope"]))
    model = fit_scope_model(rows, labels)
    log.info("scope calibrated on %d dev questions: %s", len(labels), model.fitted_on)
    return model
