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

CALIBRATION_FILE = "scope.json"

# The evidence the model weighs. Chosen by 5-fold cross-validation on the calibration pool
# (dev split + eval/calibration.jsonl): dropping any one of these costs OOS recall; the other
# computed features (raw BM25 scores, margins of the fusion, unknown-token counts) add nothing.
SCOPE_FEATURES = ("coverage", "top_support", "e5_top", "e5_margin", "use_top", "use_margin", "fused_top",
                  "top_in_all_top3", "top3_overlap", "consensus5", "detail_unmet", "detail_met_support",
                  "other_place", "lang_en", "knn_use", "knn_e5", "knn_st", "knn_form_use")
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


def evidence_features(scores: Mapping[str, np.ndarray], lang: str,
                      fused: Sequence[tuple[int, float]] = ()) -> dict[str, float]:
    """Scalar evidence from per-retriever unit scores (arrays over all units) and their fusion."""
    features: dict[str, float] = {"lang_en": 1.0 if lang == "en" else 0.0}
    tops: list[int] = []
    orders = {name: np.argsort(-values) for name, values in scores.items() if values.size}
    top3s = [set(order[:3].tolist()) for order in orders.values()]
    if len(top3s) > 1:
        pairs = [len(a & b) / len(a | b) for i, a in enumerate(top3s) for b in top3s[i + 1:]]
        features["top3_overlap"] = float(np.mean(pairs))
        # list questions ("all the visa measures") have no single winner but several units that
        # retrievers agree on; an unanswerable question scatters them
        top5s = [order[:5].tolist() for order in orders.values()]
        votes = np.bincount([p for top in top5s for p in top], minlength=1)
        features["consensus5"] = float((votes >= 2).sum())
    if fused:
        features["fused_top"] = fused[0][1]
        features["fused_margin"] = fused[0][1] - (fused[1][1] if len(fused) > 1 else 0.0)
        features["top_in_all_top3"] = float(all(fused[0][0] in top3 for top3 in top3s))
    for name, values in sorted(scores.items()):
        if values.size == 0:
            continue
        order = orders[name]
        best = float(values[order[0]])
        pack = values[order[1:6]] if values.size > 1 else values[order[:1]]
        tops.append(int(order[0]))
        if name == "bm25":
            features["bm25_top"] = math.log1p(max(best, 0.0))
            features["bm25_margin"] = math.log1p(max(best, 0.0)) - math.log1p(max(float(pack.mean()), 0.0))
        else:
            features[f"{name}_top"] = best
            features[f"{name}_margin"] = best - float(pack.mean())
    features["agree"] = 1.0 if tops and len(set(tops)) == 1 else 0.0
    return features


@dataclass
class ScopeModel:
    """A logistic model over :func:`evidence_features`; ``score`` is P(in scope)."""

    feature_names: list[str]
    coef: list[float]
    intercept: float
    mean: list[float]
    scale: list[float]
    threshold: float
    fitted_on: dict = field(default_factory=dict)
    examples: ScopeExamples | None = field(default=None, repr=False, compare=False)

    def score(self, features: Mapping[str, float]) -> float:
        x = np.array([features.get(n, 0.0) for n in self.feature_names], dtype=np.float64)
        z = (x - np.array(self.mean)) / np.array(self.scale)
        logit = float(z @ np.array(self.coef) + self.intercept)
        return 1.0 / (1.0 + math.exp(-max(min(logit, 50.0), -50.0)))

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


def fit_scope_model(rows: Sequence[Mapping[str, float]], labels: Sequence[bool],
                    max_false_flag: float = 0.05, examples: ScopeExamples | None = None) -> ScopeModel:
    """Fit on dev questions (label True = in scope) and pick the decision threshold.

    The threshold is the highest one that still keeps flagged in-scope questions at or
    below ``max_false_flag``: it flags as many out-of-scope questions as that allows.
    """
    from sklearn.linear_model import LogisticRegression

    present = {k for row in rows for k in row}
    names = [n for n in SCOPE_FEATURES if n in present]
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
    return ScopeModel(
        feature_names=names, coef=model.coef_[0].tolist(), intercept=float(model.intercept_[0]),
        mean=mean.tolist(), scale=scale.tolist(), threshold=threshold, examples=examples,
        fitted_on={"questions": len(y), "out_of_scope": int((y == 0).sum()),
                   "dev_oos_recall": float(flagged[y == 0].mean()) if (y == 0).any() else None,
                   "dev_false_flag_rate": float(flagged[y == 1].mean())},
    )
