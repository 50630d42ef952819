"""What the answer layer returns: plain data the surfaces render (no HTTP, no UI here)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal


@dataclass
class Citation:
    """A cited unit: an annex task (``task`` set) or a body passage (``task`` None)."""

    task: int | None
    section: str  # the task's category, or the passage's heading path
    text: str  # original Chinese
    text_en: str | None  # English rendering (tasks) or summary (passages)
    category_no: int | None = None
    category_en: str | None = None
    section_id: str | None = None
    linked_tasks: list[int] = field(default_factory=list)
    document: dict[str, Any] | None = None  # number, title, issuer, date of the document it is from

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Answer:
    answer: str  # markdown, in the language of the question, citations inline as [第17项] / [Task 17]
    citations: list[Citation]
    in_scope: bool
    lang: Literal["zh", "en"]
    conversation_id: str
    mode: Literal["extractive", "partial", "generative", "lookup", "out_of_scope", "fallback"] = "extractive"
    coverage: Literal["full", "partial", "none"] = "full"  # the pipeline's answerability decision
    notice: str | None = None  # e.g. "generative answer unavailable; extractive answer shown"
    resolved_query: str | None = None  # the stand-alone query a follow-up was resolved to
    conversation_reset: bool = False  # the given conversation id was unknown or expired: a fresh one
    timings_ms: dict[str, float] = field(default_factory=dict)
    related: list[str] = field(default_factory=list)  # unit ids listed as related (not support), in order

    def to_json(self) -> dict[str, Any]:
        return {"answer": self.answer, "citations": [c.to_json() for c in self.citations],
                "in_scope": self.in_scope, "coverage": self.coverage, "lang": self.lang,
                "conversation_id": self.conversation_id,
                "mode": self.mode, "notice": self.notice, "resolved_query": self.resolved_query,
                "conversation_reset": self.conversation_reset, "related": list(self.related)}
