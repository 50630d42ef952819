"""The answerability evidence: a registry of features, each a small function of one typed input.

Every feature the scope model may weigh is declared here with the function that computes it;
``SCOPE_FEATURES`` (the model's inputs, in order) and the fingerprint that makes an index stale
when the set changes both come from the registry, so no list elsewhere can fall out of step.
Feature groups were chosen by cross-validation on the calibration pool (``benchmarks/scope_cv.py``).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

Features = dict[str, float]


@dataclass(frozen=True)
class EvidenceInput:
    """What the answerability stage sees of one search."""

    lang: str
    scores: Mapping[str, np.ndarray]  # retriever -> score of every unit
    fused: Sequence[tuple[int, float]]  # (unit position, fused score), best first
    asked: frozenset[str] = frozenset()  # detail types the question asks for
    unmet_top3: frozenset[str] = frozenset()  # of those, the ones no top-3 unit states
    unmet_top2: frozenset[str] = frozenset()
    places: frozenset[str] = frozenset()  # places named that the plan never mentions
    lexical: Mapping[str, tuple[float, float]] = field(default_factory=dict)  # index -> (coverage, top support)
    neighbours: Mapping[str, float] = field(default_factory=dict)  # knn_<vector> features


@dataclass(frozen=True)
class Feature:
    names: tuple[str, ...]
    compute: Callable[[EvidenceInput], Features]


REGISTRY: list[Feature] = []


def feature(*names: str) -> Callable[[Callable[[EvidenceInput], Features]], Callable[[EvidenceInput], Features]]:
    """Register a function computing ``names``."""

    def register(compute: Callable[[EvidenceInput], Features]) -> Callable[[EvidenceInput], Features]:
        REGISTRY.append(Feature(names, compute))
        return compute

    return register


@feature("lang_en")
def _language(evidence: EvidenceInput) -> Features:
    return {"lang_en": 1.0 if evidence.lang == "en" else 0.0}


def _orders(evidence: EvidenceInput) -> dict[str, np.ndarray]:
    return {name: np.argsort(-values) for name, values in evidence.scores.items() if values.size}


@feature("top3_overlap", "consensus5", "top_in_all_top3", "fused_top")
def _agreement(evidence: EvidenceInput) -> Features:
    """Retrievers agreeing on the best units: an unanswerable question scatters them."""
    orders = _orders(evidence)
    top3s = [set(order[:3].tolist()) for order in orders.values()]
    features: Features = {}
    if len(top3s) > 1:
        pairs = [len(a & b) / len(a | b) for i, a in enumerate(top3s) for b in top3s[i + 1:]]
        features["top3_overlap"] = float(np.mean(pairs))
        votes = np.bincount([p for order in orders.values() for p in order[:5].tolist()], minlength=1)
        features["consensus5"] = float((votes >= 2).sum())
    if evidence.fused:
        features["fused_top"] = evidence.fused[0][1]
        features["top_in_all_top3"] = float(all(evidence.fused[0][0] in top3 for top3 in top3s))
    return features


_DENSE = ("use", "e5", "st", "use_k", "e5_k", "st_k")


@feature(*(f"{n}_{kind}" for n in _DENSE for kind in ("top", "margin")), "bm25_k_top")
def _best_scores(evidence: EvidenceInput) -> Features:
    """Each retriever's best score and its margin over the runner-up pack."""
    features: Features = {}
    for name, values in sorted(evidence.scores.items()):
        if values.size == 0:
            continue
        order = np.argsort(-values)
        best = float(values[order[0]])
        pack = values[order[1:6]] if values.size > 1 else values[order[:1]]
        if name.startswith("bm25"):
            features[f"{name}_top"] = math.log1p(max(best, 0.0))
        else:
            features[f"{name}_top"] = best
            features[f"{name}_margin"] = best - float(pack.mean())
    return features


@feature("coverage", "top_support", "coverage_k", "top_support_k")
def _lexical(evidence: EvidenceInput) -> Features:
    """How much of the question the index knows, and how much of it the best unit holds (IDF-weighted);
    ``_k`` over the task knowledge, whose everyday words the plan's text lacks."""
    features: Features = {}
    for suffix, (coverage, support) in evidence.lexical.items():
        features[f"coverage{suffix}"], features[f"top_support{suffix}"] = coverage, support
    return features


@feature("detail_unmet", "detail_met_support")
def _detail(evidence: EvidenceInput) -> Features:
    """The question asks for a figure, a date, a procedure … that the best units do (not) state."""
    met_top = bool(evidence.asked) and bool(evidence.fused) and not evidence.unmet_top2
    support = evidence.lexical.get("", (0.0, 0.0))[1]
    return {"detail_unmet": float(bool(evidence.unmet_top3)), "detail_met_support": float(met_top) * support}


@feature("other_place")
def _place(evidence: EvidenceInput) -> Features:
    return {"other_place": float(bool(evidence.places))}


@feature("knn_use", "knn_e5", "knn_st", "knn_form_use")
def _neighbours(evidence: EvidenceInput) -> Features:
    """Similarity to labelled in-scope minus out-of-scope calibration questions (see ``ScopeExamples``)."""
    return dict(evidence.neighbours)


SCOPE_FEATURES: tuple[str, ...] = tuple(name for f in REGISTRY for name in f.names)


def compute_features(evidence: EvidenceInput) -> Features:
    """Every registered feature that the evidence allows."""
    features: Features = {}
    for group in REGISTRY:
        features.update(group.compute(evidence))
    return features


def feature_fingerprint() -> str:
    """The feature set and the code computing it: an index calibrated with others is stale."""
    digest = hashlib.sha256("\0".join(SCOPE_FEATURES).encode())
    for module in ("features.py", "model.py", "answer_types.py", "places.py", "decision.py"):
        path = Path(__file__).parent / module
        if path.exists():
            digest.update(path.read_bytes())
    return digest.hexdigest()
