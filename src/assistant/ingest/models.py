"""The structured corpus: document metadata, body sections and annex tasks.

Every model is frozen: the corpus is parsed once and then shared by the index, the retrievers
and the answers, so nothing may change it in place. A changed unit is a new object
(``model_copy(update=...)``), as :func:`assistant.ingest.corpus.apply_annotations` does.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

_FROZEN = ConfigDict(frozen=True)


class BasisDocument(BaseModel):
    """A document the plan rests on, e.g. 国函〔2025〕39号."""

    model_config = _FROZEN

    number: str
    title: str


class DocumentMeta(BaseModel):
    model_config = _FROZEN

    doc_number: str
    title: str
    plan_title: str
    issuer: str
    issuing_office: str | None = None
    printed: date | None = None
    approved_by: str | None = None
    disclosure: str | None = None
    addressees: list[str] = Field(default_factory=list)
    basis: list[BasisDocument] = Field(default_factory=list)
    related_units: list[str] = Field(default_factory=list)
    cc: list[str] = Field(default_factory=list)
    annex_title: str | None = None
    title_en: str = ""
    plan_title_en: str = ""
    issuer_en: str = ""


class Section(BaseModel):
    """A unit of the plan body under its heading path (一、 / （一）)."""

    model_config = _FROZEN

    id: str
    heading_path: list[str]
    paragraphs: list[str]
    line: int = Field(description="1-based source line where the section starts.")
    heading_en: str = ""
    text_en: str = Field("", description="English summary of the section (reviewed annotation).")
    tasks: list[int] = Field(default_factory=list, description="Annex tasks that implement its measures.")
    measures: list[tuple[str, list[int]]] = Field(default_factory=list)

    @property
    def text(self) -> str:
        return "\n".join(self.paragraphs)


class Category(BaseModel):
    model_config = _FROZEN

    number: int
    ordinal: str
    title: str
    line: int
    title_en: str = ""

    @property
    def label(self) -> str:
        return f"{self.ordinal}、{self.title}"


class Task(BaseModel):
    model_config = _FROZEN

    number: int
    category_no: int
    category: str
    text: str
    line: int
    category_en: str = ""
    text_en: str = ""
    differentiated: bool = False


class Corpus(BaseModel):
    """The whole document; ``task``, ``section`` and ``category`` look units up by key."""

    model_config = _FROZEN

    meta: DocumentMeta
    sections: list[Section]
    categories: list[Category]
    tasks: list[Task]
    source_sha256: str

    _tasks: dict[int, Task] = PrivateAttr(default_factory=dict)
    _sections: dict[str, Section] = PrivateAttr(default_factory=dict)
    _categories: dict[int, Category] = PrivateAttr(default_factory=dict)

    def model_post_init(self, context: Any, /) -> None:
        self._build_lookups()

    def _build_lookups(self) -> None:
        # the first of a repeated key wins, as the linear scans did
        self._tasks, self._sections, self._categories = {}, {}, {}
        for t in self.tasks:
            self._tasks.setdefault(t.number, t)
        for s in self.sections:
            self._sections.setdefault(s.id, s)
        for c in self.categories:
            self._categories.setdefault(c.number, c)

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Corpus:
        copy = super().model_copy(update=update, deep=deep)
        copy._build_lookups()  # the copied lookups would point at the replaced units
        return copy

    def task(self, number: int) -> Task | None:
        return self._tasks.get(number)

    def section(self, section_id: str) -> Section | None:
        return self._sections.get(section_id)

    def category(self, number: int) -> Category | None:
        return self._categories.get(number)
