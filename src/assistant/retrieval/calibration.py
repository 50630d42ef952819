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


def _evidence_rows(engine: SearchEngine, questions: list[dict]) -> tuple[list[dict], np.ndarray, ScopeExamples]:
    """Retrieval evidence of every calibration question, and the questions as labelled examples."""
    from assistant.retrieval.engine import normalise_query

    rows, texts = [], []
    for question in questions:
        text = normalise_query(question["question"])
        scores, _ = engine.unit_scores(text)
        rows.append(engine.evidence(text, scores, detect_language(text)))
        texts.append(text)
    labels = np.array([bool(q["in_scope"]) for q in questions], dtype=bool)
    vectors = [engine.scope_vectors(t) for t in texts]
    examples = ScopeExamples(vectors={name: np.stack([v[name] for v in vectors]) for name in vectors[0]},
                             in_scope=labels)
    for position, row in enumerate(rows):
        # each example's neighbours exclude itself, as a new question's would
        row.update(examples.features(vectors[position], exclude=position))
    return rows, labels, examples


def calibrate_scope(engine: SearchEngine, settings: Settings) -> ScopeModel | None:
    """Fit the scope model for ``engine``'s index on the calibration pool."""
    questions = dev_questions(settings)
    if not questions or all(q["in_scope"] for q in questions):
        log.warning("no dev questions with out-of-scope examples in %s; scope is not calibrated",
                    settings.eval_path)
        return None
    rows, labels, examples = _evidence_rows(engine, questions)
    model = fit_scope_model(rows, labels.tolist(), settings.scope_max_false_flag, examples=examples)
    log.info("scope calibrated on %d questions: %s", len(labels), model.fitted_on)
    return model


def cross_validate_scope(engine: SearchEngine, settings: Settings, folds: int = 5, seeds: int = 3) -> dict:
    """k-fold cross-validation of the scope model on the calibration pool (never the test split).

    Held-out questions get neighbour evidence only from the training folds, exactly as a new
    question would from the whole pool.
    """
    questions = dev_questions(settings)
    rows, labels, examples = _evidence_rows(engine, questions)
    flagged_oos, flagged_in = [], []
    for seed in range(seeds):
        order = np.random.default_rng(seed).permutation(len(labels))
        predicted = np.zeros(len(labels), dtype=bool)
        for fold in range(folds):
            held = order[fold::folds]
            train = np.setdiff1d(order, held)
            subset = ScopeExamples({k: v[train] for k, v in examples.vectors.items()}, labels[train])

            def features(i: int, pool: ScopeExamples, exclude: int | None) -> dict:
                vectors = {k: v[i] for k, v in examples.vectors.items()}
                return {**rows[i], **pool.features(vectors, exclude=exclude)}

            model = fit_scope_model([features(i, subset, j) for j, i in enumerate(train)], labels[train].tolist(),
                                    settings.scope_max_false_flag)
            for i in held:
                predicted[i] = model.in_scope(features(i, subset, None))[0]
        flagged_oos.append(float((~predicted[~labels]).mean()))
        flagged_in.append(float((~predicted[labels]).mean()))
    return {"questions": len(labels), "out_of_scope": int((~labels).sum()), "folds": folds, "seeds": seeds,
            "oos_flagged": round(float(np.mean(flagged_oos)), 3),
            "in_scope_wrongly_flagged": round(float(np.mean(flagged_in)), 3)}
