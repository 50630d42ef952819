"""Fit the scope model on the dev split of the eval set (the test split is never used)."""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING

import numpy as np

from assistant.config import Settings
from assistant.retrieval.scope import ScopeExamples, ScopeModel, fit_scope_model
from assistant.text import detect_language

if TYPE_CHECKING:
    from assistant.retrieval.engine import SearchEngine

log = logging.getLogger(__name__)


def _read_jsonl(path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def dev_questions(settings: Settings) -> list[dict]:
    """Questions usable for scope calibration: the eval set's *dev* split (no lookups, no
    follow-ups) plus ``eval/calibration.jsonl``, a separate set written for calibration only.
    The test split is never read here."""
    rows = _read_jsonl(settings.eval_path / "questions.jsonl")
    dev = [r for r in rows if r.get("split") == "dev" and r.get("type") not in ("lookup", "followup")]
    return dev + _read_jsonl(settings.eval_path / "calibration.jsonl")


def calibrate_scope(engine: SearchEngine, settings: Settings) -> ScopeModel | None:
    questions = dev_questions(settings)
    if not questions or all(q["in_scope"] for q in questions):
        log.warning("no dev questions with out-of-scope examples in %s; scope is not calibrated",
                    settings.eval_path)
        return None
    from assistant.retrieval.engine import normalise_query

    rows, labels, texts = [], [], []
    for question in questions:
        text = normalise_query(question["question"])
        scores, _ = engine.unit_scores(text)
        rows.append(engine.evidence(text, scores, detect_language(text)))
        labels.append(bool(question["in_scope"]))
        texts.append(text)
    examples = ScopeExamples(
        vectors={name: np.stack([engine.query_vectors(t)[name] for t in texts]) for name in engine.dense_names},
        in_scope=np.array(labels, dtype=bool))
    for position, (row, text) in enumerate(zip(rows, texts, strict=True)):
        # each example's neighbours exclude itself, as a new question's would
        row.update(examples.features(engine.query_vectors(text), exclude=position))
    model = fit_scope_model(rows, labels, examples=examples)
    log.info("scope calibrated on %d dev questions: %s", len(labels), model.fitted_on)
    return model
