"""Fit the scope model when the index is built, on the calibration pool, through the pipeline itself.

The pool is the eval set's dev questions of ``eval/questions.jsonl`` (no lookups, no follow-ups) plus
``eval/calibration.jsonl``; ``eval/dev/questions.jsonl`` stays out (fitted with it, the model hedged
on plain in-scope questions: benchmarks/scope_cv.py, in-scope full 90.8% -> 84.5%; tried again with
the fifth and sixth sets as dev rows, it hedged less on fresh sets but answered 3 of 17 out-of-scope
follow-ups "full" and rejected a library document's own questions, whose units hold no task knowledge);
the blind test split (``eval/blind/``) is never read here. Each question's features come from
``SearchEngine.search`` (the same stages users get); its neighbour features leave the question
itself out, as a new question's would.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from assistant.config import Settings
from assistant.retrieval.evidence import scope_vectors
from assistant.retrieval.scope.decision import COVERAGES, decide
from assistant.retrieval.scope.model import ScopeExamples, ScopeModel, fit_scope_model

if TYPE_CHECKING:
    from assistant.retrieval.engine import SearchEngine

log = logging.getLogger(__name__)

def _read_jsonl(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def dev_questions(settings: Settings) -> list[dict]:
    """The calibration pool: dev questions (no lookups, follow-ups) and the calibration set."""
    rows = _read_jsonl(settings.eval_path / "questions.jsonl")
    dev = [r for r in rows if r.get("split") == "dev" and r.get("type") not in ("lookup", "followup")]
    return dev + _read_jsonl(settings.eval_path / "calibration.jsonl")


def evidence_rows(engine: SearchEngine, questions: list[dict]) -> tuple[list[dict], np.ndarray, ScopeExamples]:
    """Pipeline features of every calibration question, and the questions as labelled examples."""
    rows, vectors, labels = [], [], []
    # the calibration questions are about the primary plan: other documents of a library stay out of it
    primary = engine.library.primary.number if engine.library.multiple else None
    for question in questions:
        result = engine.search(question["question"], use_lookup=False, document=primary)
        if not result.hits:
            continue
        rows.append(dict(result.features))
        vectors.append(scope_vectors(engine.snapshot, result.analysis))
        labels.append((bool(question["in_scope"]), addresses_topic(question)))
    label_array = np.array([scope for scope, _ in labels], dtype=bool)
    examples = ScopeExamples(vectors={name: np.stack([v[name] for v in vectors]) for name in vectors[0]},
                             in_scope=label_array)
    for position, row in enumerate(rows):
        row.update(examples.features(vectors[position], exclude=position))
        row["_topic"] = float(labels[position][1])
    return rows, label_array, examples


def addresses_topic(question: dict) -> bool:
    """In scope, or a near-miss: the plan covers the topic but not the detail asked for."""
    return bool(question["in_scope"]) or question.get("kind") == "near-miss" or "near-miss" in question.get("tags", ())


def _fit(rows: list[dict], labels: np.ndarray, settings: Settings, examples: ScopeExamples | None = None
         ) -> ScopeModel:
    topic = [bool(row["_topic"]) for row in rows]
    features = [{k: v for k, v in row.items() if k != "_topic"} for row in rows]
    return fit_scope_model(features, labels.tolist(), settings.scope_max_false_flag, examples=examples,
                           max_oos_full=settings.scope_max_oos_full, topic_labels=topic,
                           max_topic_miss=settings.scope_max_topic_miss)


def calibrate_scope(engine: SearchEngine, settings: Settings) -> ScopeModel | None:
    """Fit the scope model for ``engine``'s index on the calibration pool."""
    questions = dev_questions(settings)
    if not questions or all(q["in_scope"] for q in questions):
        log.warning("no dev questions with out-of-scope examples in %s; scope is not calibrated",
                    settings.eval_path)
        return None
    rows, labels, examples = evidence_rows(engine, questions)
    model = _fit(rows, labels, settings, examples)
    log.info("scope calibrated on %d questions: %s", len(labels), model.fitted_on)
    return model


def cross_validate_scope(engine: SearchEngine, settings: Settings, folds: int = 5, seeds: int = 3) -> dict:
    """k-fold cross-validation of the scope model on the calibration pool (never the blind split).

    Held-out questions get neighbour evidence only from the training folds, exactly as a new
    question would from the whole pool.
    """
    rows, labels, examples = evidence_rows(engine, dev_questions(settings))
    base = [{k: v for k, v in row.items() if not k.startswith("knn_")} for row in rows]  # keeps "_topic"
    topic = np.array([bool(row["_topic"]) for row in rows])
    classes = {"in_scope": labels, "near_miss": ~labels & topic, "out_of_scope_other": ~labels & ~topic}
    shares: dict[str, dict[str, list[float]]] = {c: {k: [] for k in COVERAGES} for c in classes}
    for seed in range(seeds):
        order = np.random.default_rng(seed).permutation(len(labels))
        coverage = np.empty(len(labels), dtype=object)
        for fold in range(folds):
            held = order[fold::folds]
            train = np.setdiff1d(order, held)
            subset = ScopeExamples({k: v[train] for k, v in examples.vectors.items()}, labels[train])

            def features(i: int, pool: ScopeExamples, exclude: int | None) -> dict:
                vectors = {k: v[i] for k, v in examples.vectors.items()}
                return {**base[i], **pool.features(vectors, exclude=exclude)}

            model = _fit([features(i, subset, j) for j, i in enumerate(train)], labels[train], settings)
            for i in held:
                coverage[i] = decide(model, features(i, subset, None), set(), True).coverage
        for name, mask in classes.items():
            for outcome in COVERAGES:
                shares[name][outcome].append(float(np.mean(coverage[mask] == outcome)) if mask.any() else 0.0)
    return {"questions": len(labels), "folds": folds, "seeds": seeds,
            "classes": {name: {"n": int(mask.sum()), **{k: round(float(np.mean(v)), 3)
                                                             for k, v in shares[name].items()}}
                        for name, mask in classes.items()}}
