"""The gated metrics of ``eval/floors.json`` and the check the regression gate runs.

``floors.json``::

    {"split": "blind", "floors": {"<metric>": {"min": 0.85, "measured": 0.87}, ...}, ...}

Each floor is a ``min`` (the metric must stay at or above it) or a ``max`` (at or below it).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from assistant.evaluation.results import AnswerResults, ConversationResults, RetrievalResults

# metric name -> direction ("min": higher is better, "max": lower is better) and meaning
GATED: dict[str, tuple[str, str]] = {
    "retrieval.zh.NDCG@10": ("min", "hybrid nDCG@10, Chinese questions"),
    "retrieval.en.NDCG@10": ("min", "hybrid nDCG@10, English questions"),
    "retrieval.zh.Recall@5": ("min", "hybrid Recall@5, Chinese questions"),
    "retrieval.en.Recall@5": ("min", "hybrid Recall@5, English questions"),
    "answers.top3_task": ("min", "answerable with task gold: a grade-2 gold task among the first 3 cited tasks"),
    "answers.answerable_none": ("max", "answerable questions answered none"),
    "answers.oos_full": ("max", "out-of-scope questions answered full"),
    "answers.near_miss_hedged": ("min", "near-miss questions answered partial or none"),
    "conversations.followup_top3": ("min", "follow-up turns: right task among the first 3 citations "
                                           "(ordinal: first citation = the referred unit)"),
}


def gated_values(retrieval: RetrievalResults, answers: AnswerResults,
                 conversations: ConversationResults) -> dict[str, float | None]:
    """The measured value of every gated metric (None when not measured in this run)."""
    by_lang = retrieval.breakdown.get("lang", {})
    values: dict[str, float | None] = {}
    for lang in ("zh", "en"):
        for metric in ("NDCG@10", "Recall@5"):
            group = by_lang.get(lang)
            values[f"retrieval.{lang}.{metric}"] = group.metrics.get(metric) if group else None
    floors = answers.floors
    values["answers.top3_task"] = floors.top3_task.rate if floors else None
    values["answers.answerable_none"] = floors.answerable_none.rate if floors else None
    values["answers.oos_full"] = floors.oos_full.rate if floors else None
    values["answers.near_miss_hedged"] = floors.near_miss_hedged.rate if floors else None
    followups = conversations.followups
    values["conversations.followup_top3"] = followups.top3.rate if followups else None
    return values


@dataclass(frozen=True)
class FloorCheck:
    name: str
    direction: str
    bound: float
    measured: float | None

    @property
    def ok(self) -> bool:
        if self.measured is None:
            return False
        return self.measured >= self.bound if self.direction == "min" else self.measured <= self.bound

    def line(self) -> str:
        measured = "not measured" if self.measured is None else f"{self.measured:.4f}"
        sign = ">=" if self.direction == "min" else "<="
        return f"{'ok  ' if self.ok else 'FAIL'} {self.name:<30} {measured:>12}  (must be {sign} {self.bound:.4f})"


def load_floors(path: Path) -> dict:
    """``floors.json``, checked for shape: every gated metric has exactly one bound in its direction."""
    data = json.loads(path.read_text(encoding="utf-8"))
    if data.get("split") not in ("dev", "blind", "all"):
        raise ValueError(f"{path.name}: split must be dev, blind or all")
    floors = data.get("floors", {})
    if set(floors) != set(GATED):
        raise ValueError(f"{path.name}: floors must be exactly {sorted(GATED)}")
    for name, entry in floors.items():
        direction = GATED[name][0]
        if not isinstance(entry.get(direction), int | float) or not 0.0 <= entry[direction] <= 1.0:
            raise ValueError(f"{path.name}: {name} needs a {direction!r} bound in [0, 1]")
    return data


def check_floors(values: dict[str, float | None], floors: dict) -> list[FloorCheck]:
    """One check per gated metric, in ``GATED`` order."""
    return [FloorCheck(name, GATED[name][0], float(floors["floors"][name][GATED[name][0]]), values.get(name))
            for name in GATED]
