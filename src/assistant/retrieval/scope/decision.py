"""The last stage: does the plan answer the question fully, partly, or not at all?

- **full**: the plan answers it; cite and quote.
- **partial**: the plan addresses the topic, but not the detail asked for (a fee, a rate, a
  deadline, an office …), or the evidence is only good enough to say what the plan says nearby;
  the answer says what the plan does say and names what it does not.
- **none**: no task or section addresses it; the nearest units are shown as related only.

``in_scope`` (kept for older clients) is ``coverage != "none"``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from assistant.retrieval.scope.model import ScopeModel

Coverage = Literal["full", "partial", "none"]
COVERAGES: tuple[str, ...] = ("full", "partial", "none")


@dataclass(frozen=True)
class Decision:
    """The answerability decision with the evidence it rests on."""

    coverage: Coverage
    confidence: float  # P(in scope) from the scope model (1.0 for a lookup)
    missing: tuple[str, ...] = ()  # detail types asked for that the cited units do not state
    reason: str = ""
    features: dict[str, float] = field(default_factory=dict)
    missing_labels: dict[str, tuple[str, ...]] = field(default_factory=dict)  # lang -> names of the missing details

    @property
    def in_scope(self) -> bool:
        return self.coverage != "none"

    def to_json(self) -> dict:
        return {"coverage": self.coverage, "confidence": round(self.confidence, 4), "missing": list(self.missing),
                "missing_labels": {k: list(v) for k, v in self.missing_labels.items()}, "reason": self.reason}


def decide(model: ScopeModel | None, features: dict[str, float], unmet_cited: set[str],
           has_candidates: bool) -> Decision:
    """Three-way answerability from the scope model's probability and the asked-detail check."""
    if not has_candidates:
        return Decision("none", 0.0, reason="nothing retrieved", features=features)
    if model is None:
        return Decision("partial" if unmet_cited else "full", 0.5, tuple(sorted(unmet_cited)),
                        "no calibrated scope model", features)
    probability = model.score(features)
    missing = tuple(sorted(unmet_cited))
    if probability < model.threshold:
        if model.topic_score(features) >= model.topic_threshold:
            return Decision("partial", probability, missing, "the plan addresses the topic, not the question asked",
                            features)
        return Decision("none", probability, reason="below the calibrated scope threshold", features=features)
    if missing:
        return Decision("partial", probability, missing, "the cited units do not state the detail asked for",
                        features)
    full_at = model.full_threshold if model.full_threshold is not None else model.threshold
    if probability < full_at:
        return Decision("partial", probability, reason="in scope, but below the calibrated full-answer threshold",
                        features=features)
    return Decision("full", probability, reason="calibrated in scope", features=features)


def lookup_decision(valid: bool) -> Decision:
    """A task named by number: the plan answers it when the task exists."""
    if valid:
        return Decision("full", 1.0, reason="task named by number")
    return Decision("none", 1.0, reason="no task with that number")
