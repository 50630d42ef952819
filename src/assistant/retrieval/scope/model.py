"""Does the plan cover the question? A small calibrated classifier over retrieval evidence.

Features are what the retrievers already computed: each dense retriever's best cosine and its
margin over the runner-up pack, BM25's best score, and whether the retrievers agree on the top
unit. A logistic regression is fitted on the *dev* split of the eval set (never the test
split) and its threshold chosen so that at most ``max_false_flag`` of in-scope dev questions
are flagged; the result is stored beside the index it was calibrated for.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from assistant.retrieval.scope.features import SCOPE_FEATURES

CALIBRATION_FILE = "scope.json"

EXAMPLES_FILE = "scope_examples.npz"


# Neighbours averaged per side in the kNN features. 5-fold CV on the calibration pool (578 questions):
# OOS flagged at the same false-flag target k=3 0.876, k=5 0.898, k=10 0.909, k=15 0.910, k=30 0.903;
# a wider neighbourhood reads the region of question space, not one look-alike.
KNN_NEIGHBOURS = 15


def _top_mean(values: np.ndarray, k: int = KNN_NEIGHBOURS) -> float:
    """Mean of the ``k`` largest values: one look-alike example should not decide alone.

    (partition, then sort the k: the same numbers summed in the same order as a full sort.)
    """
    if values.size <= k:
        return float(np.sort(values).mean())
    return float(np.sort(np.partition(values, -k)[-k:]).mean())


@dataclass
class ScopeExamples:
    """Labelled calibration questions as query vectors: a nearest-neighbour view of scope.

    ``knn_<embedder>`` = mean similarity to the ``KNN_NEIGHBOURS`` nearest in-scope examples minus
    that to the as many nearest out-of-scope ones. A question like an out-of-scope example (buying a flat, a
    driving licence) leans out of scope even when retrieval finds a superficially close task.
    """

    vectors: dict[str, np.ndarray]  # embedder -> (n, dim), L2-normalised
    in_scope: np.ndarray  # (n,) bool

    def features(self, query_vectors: Mapping[str, np.ndarray], exclude: int | None = None) -> dict[str, float]:
        labels = self.in_scope
        keep = None
        if exclude is not None:  # cross-validation: leave one example out
            keep = np.ones(labels.size, dtype=bool)
            keep[exclude] = False
            labels = labels[keep]
        if not labels.any() or labels.all():
            return {}
        features = {}
        for name, vector in query_vectors.items():
            if name not in self.vectors:
                continue
            sims = self.vectors[name] @ vector
            if keep is not None:
                sims = sims[keep]
            features[f"knn_{name}"] = _top_mean(sims[labels]) - _top_mean(sims[~labels])
        return features

    def save(self, folder: Path) -> None:
        np.savez(folder / EXAMPLES_FILE, in_scope=self.in_scope, **{f"vec_{k}": v for k, v in self.vectors.items()})

    @classmethod
    def load(cls, folder: Path) -> ScopeExamples | None:
        path = folder / EXAMPLES_FILE
        if not path.exists():
            return None
        with np.load(path) as data:
            return cls(vectors={k.removeprefix("vec_"): data[k] for k in data.files if k.startswith("vec_")},
                       in_scope=data["in_scope"].astype(bool))


@dataclass
class ScopeModel:
    """A logistic model over the registered features (:mod:`.features`); ``score`` is P(in scope)."""

    feature_names: list[str]
    coef: list[float]
    intercept: float
    mean: list[float]
    scale: list[float]
    threshold: float  # below: "none", the plan does not address the question
    fitted_on: dict = field(default_factory=dict)
    full_threshold: float | None = None  # at or above: "full"; between the two: "partial"
    # P(the plan addresses the topic), trained with near-misses as positives: a question the scope
    # model rejects but whose topic the plan covers is answered "partial", not "none"
    topic_coef: list[float] | None = None
    topic_intercept: float = 0.0
    topic_threshold: float = 1.0
    examples: ScopeExamples | None = field(default=None, repr=False, compare=False)

    def _z(self, features: Mapping[str, float]) -> np.ndarray:
        x = np.array([features.get(n, 0.0) for n in self.feature_names], dtype=np.float64)
        return (x - np.array(self.mean)) / np.array(self.scale)

    def score(self, features: Mapping[str, float]) -> float:
        return _sigmoid(float(self._z(features) @ np.array(self.coef) + self.intercept))

    def topic_score(self, features: Mapping[str, float]) -> float:
        if self.topic_coef is None:
            return 0.0
        return _sigmoid(float(self._z(features) @ np.array(self.topic_coef) + self.topic_intercept))

    def in_scope(self, features: Mapping[str, float]) -> tuple[bool, float]:
        probability = self.score(features)
        return probability >= self.threshold, probability

    def save(self, folder: Path) -> None:
        data = {k: v for k, v in asdict(self).items() if k != "examples"}
        (folder / CALIBRATION_FILE).write_text(json.dumps(data, indent=2), encoding="utf-8")
        if self.examples is not None:
            self.examples.save(folder)

    @classmethod
    def load(cls, folder: Path) -> ScopeModel | None:
        path = folder / CALIBRATION_FILE
        if not path.exists():
            return None
        model = cls(**json.loads(path.read_text(encoding="utf-8")))
        model.examples = ScopeExamples.load(folder)
        return model


def _sigmoid(logit: float) -> float:
    return 1.0 / (1.0 + math.exp(-max(min(logit, 50.0), -50.0)))


def _lowest_keeping(probabilities: np.ndarray, max_share: float) -> float:
    """The highest threshold that leaves at most ``max_share`` of ``probabilities`` below it."""
    ordered = np.sort(probabilities)
    allowed = math.floor(max_share * len(ordered))
    return float(ordered[allowed]) if allowed < len(ordered) else 0.5


def fit_scope_model(rows: Sequence[Mapping[str, float]], labels: Sequence[bool],
                    max_false_flag: float = 0.05, examples: ScopeExamples | None = None,
                    max_oos_full: float = 0.03, topic_labels: Sequence[bool] | None = None,
                    max_topic_miss: float = 0.01) -> ScopeModel:
    """Fit on dev questions (label True = in scope) and pick the two decision thresholds.

    ``threshold`` is the highest one that still keeps in-scope questions below it ("none") at or
    under ``max_false_flag``. ``full_threshold`` is the lowest one that lets at most ``max_oos_full``
    of out-of-scope questions reach "full"; questions between the two are answered "partial".
    With ``topic_labels`` (in scope or near-miss), a second model says whether the plan addresses
    the topic at all; its threshold lets at most ``max_topic_miss`` of in-scope questions fall to "none".
    """
    from sklearn.linear_model import LogisticRegression

    present = {k for row in rows for k in row}
    names = [n for n in SCOPE_FEATURES if n in present]  # the registry's order
    x = np.array([[row.get(n, 0.0) for n in names] for row in rows], dtype=np.float64)
    y = np.array(labels, dtype=int)
    if len(set(y.tolist())) < 2:
        raise ValueError("scope calibration needs both in-scope and out-of-scope dev questions")
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale[scale == 0] = 1.0
    model = LogisticRegression(C=0.5, class_weight="balanced", max_iter=1000)
    model.fit((x - mean) / scale, y)
    probabilities = model.predict_proba((x - mean) / scale)[:, 1]
    in_scope_probs = np.sort(probabilities[y == 1])
    allowed = math.floor(max_false_flag * len(in_scope_probs))
    # flag everything strictly below the (allowed+1)-th lowest in-scope probability
    threshold = float(in_scope_probs[allowed]) if allowed < len(in_scope_probs) else 0.5
    flagged = probabilities < threshold
    oos_probs = np.sort(probabilities[y == 0])[::-1]
    allowed_full = math.floor(max_oos_full * len(oos_probs))
    full_threshold = float(oos_probs[allowed_full]) + 1e-9 if allowed_full < len(oos_probs) else threshold
    full_threshold = max(full_threshold, threshold)
    topic: dict = {}
    if topic_labels is not None and len(set(topic_labels)) == 2:
        topic_model = LogisticRegression(C=0.5, class_weight="balanced", max_iter=1000)
        topic_model.fit((x - mean) / scale, np.array(topic_labels, dtype=int))
        topic_probs = topic_model.predict_proba((x - mean) / scale)[:, 1]
        topic = {"topic_coef": topic_model.coef_[0].tolist(), "topic_intercept": float(topic_model.intercept_[0]),
                 "topic_threshold": _lowest_keeping(topic_probs[y == 1], max_topic_miss)}
    return ScopeModel(
        full_threshold=full_threshold, **topic,
        feature_names=names, coef=model.coef_[0].tolist(), intercept=float(model.intercept_[0]),
        mean=mean.tolist(), scale=scale.tolist(), threshold=threshold, examples=examples,
        fitted_on={"questions": len(y), "out_of_scope": int((y == 0).sum()),
                   "dev_oos_recall": float(flagged[y == 0].mean()) if (y == 0).any() else None,
                   "dev_false_flag_rate": float(flagged[y == 1].mean()),
                   "dev_in_scope_full": float((probabilities[y == 1] >= full_threshold).mean()),
                   "dev_oos_full": float((probabilities[y == 0] >= full_threshold).mean())},
    )
