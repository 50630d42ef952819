"""The structured corpus: document metadata, body sections and annex tasks."""

from __future__ import annotations

from datetime import date

from pydantic import BaseModel, Field


class BasisDocument(BaseModel):
    """A document the plan rests on, e.g. 国函〔2025〕39号."""

    number: str
    title: str


class DocumentMeta(BaseModel):
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
    number: int
    ordinal: str
    title: str
    line: int
    title_en: str = ""

    @property
    def label(self) -> str:
        return f"{self.ordinal}、{self.title}"


class Task(BaseModel):
    number: int
    category_no: int
    category: str
    text: str
    line: int
    category_en: str = ""
    text_en: str = ""
    differentiated: bool = False


class Corpus(BaseModel):
    meta: DocumentMeta
    sections: list[Section]
    categories: list[Category]
    tasks: list[Task]
    source_sha256: str

    def task(self, number: int) -> Task | None:
        return next((t for t in self.tasks if t.number == number), None)

    def section(self, section_id: str) -> Section | None:
        return next((s for s in self.sections if s.id == section_id), None)

    def category(self, number: int) -> Category | None:
        return next((c for c in self.categories if c.number == number), None)
