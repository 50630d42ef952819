"""The pipeline's result: ranked units with per-stage provenance, the decision, timings."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from assistant.retrieval.analysis import QueryAnalysis
from assistant.retrieval.lookup import Lookup
from assistant.retrieval.scope.decision import Decision
from assistant.retrieval.structure import StructureFacts


@dataclass
class Hit:
    """One ranked unit: a task or a body section."""

    unit_id: str
    task: int | None
    section: str  # the task's category, or the section's heading path
    text: str
    text_en: str | None
    score: float
    retrievers: dict[str, int] = field(default_factory=dict)  # retriever -> rank where it found the unit
    kind: str = "task"
    category_no: int | None = None
    section_id: str | None = None
    linked_tasks: list[int] = field(default_factory=list)
    lookup: bool = False
    fused_rank: int | None = None  # rank after fusion, before reranking (1-based)
    alignment: float | None = None  # clause-level alignment with the question (reranked head only)
    support: bool = False  # an answer cites it
    quote: dict[str, int] = field(default_factory=dict)  # support units: lang -> index of the sentence to lead with
    document: dict[str, Any] | None = None  # the unit's document: number, title, issuer, date

    def to_json(self) -> dict[str, Any]:
        return {"task": self.task, "section": self.section, "text": self.text, "text_en": self.text_en,
                "score": round(float(self.score), 6), "unit_id": self.unit_id, "kind": self.kind,
                "category_no": self.category_no, "section_id": self.section_id,
                "retrievers": self.retrievers, "linked_tasks": self.linked_tasks,
                "fused_rank": self.fused_rank,
                "alignment": None if self.alignment is None else round(self.alignment, 4),
                "support": self.support, "document": self.document}


@dataclass
class SearchResult:
    """What the pipeline returns for one question; search, ask, the eval and calibration all read it."""

    query: str
    analysis: QueryAnalysis
    decision: Decision
    hits: list[Hit]
    timings_ms: dict[str, float]
    resolved_query: str | None = None  # the follow-up stage's rewrite, when it made one
    followup: str = "none"  # how the follow-up stage read it: none, ordinal, substitution, attachment, narrowing
    structure: StructureFacts | None = None  # a question about the annex's own structure (counts, lists)
    document: str | None = None  # the document filter it ran with (a document number), if any

    @property
    def lang(self) -> str:
        return self.analysis.lang

    @property
    def lookup(self) -> Lookup:
        return self.analysis.lookup

    @property
    def coverage(self) -> str:
        return self.decision.coverage

    @property
    def in_scope(self) -> bool:
        return self.decision.in_scope

    @property
    def confidence(self) -> float:
        return self.decision.confidence

    @property
    def features(self) -> dict[str, float]:
        return self.decision.features

    @property
    def support(self) -> list[Hit]:
        """The units an answer cites, in ranking order (a subsequence of ``hits``)."""
        return [h for h in self.hits if h.support]

    @property
    def message(self) -> str | None:
        """A plain statement for lookups of numbers the annex does not have."""
        if self.lookup.invalid and not self.lookup.valid:
            numbers = "、".join(str(n) for n in self.lookup.invalid)
            return (f"没有第{numbers}项任务 / There is no task {', '.join(map(str, self.lookup.invalid))} "
                    "in the annex.")
        return None

    def to_json(self) -> dict[str, Any]:
        data = {"query": self.query, "in_scope": self.in_scope, "coverage": self.coverage, "lang": self.lang,
                "confidence": round(self.confidence, 4), "decision": self.decision.to_json(),
                "results": [h.to_json() for h in self.hits]}
        if self.resolved_query:
            data["resolved_query"] = self.resolved_query
        if self.followup != "none":
            data["followup"] = self.followup
        if self.structure is not None:
            data["structure"] = {"kind": self.structure.kind, "category": self.structure.category}
        if self.lookup:
            data["lookup"] = {"requested": self.lookup.requested, "invalid": self.lookup.invalid}
        if self.message:
            data["message"] = self.message
        if self.document is not None:
            data["document"] = self.document
        return data
