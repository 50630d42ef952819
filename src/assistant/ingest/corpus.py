"""Load the project's own copy of the source, verify it, parse it and apply annotations."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

from pydantic import BaseModel, Field, ValidationError

from assistant.config import Settings, get_settings
from assistant.ingest.models import Corpus, Section
from assistant.ingest.parser import CorpusError, parse_document, sha256_text


class SourceManifest(BaseModel):
    """``ingest/sources/manifest.json``: what the source is and its checksum."""

    file: str
    title: str
    plan_title: str
    doc_number: str
    issuer: str
    approved_by: str
    printed: date
    disclosure: str
    annotations: str
    sha256: str
    origin: str = ""


class CategoryNote(BaseModel):
    no: int
    zh: str
    en: str = Field(min_length=1)


class TaskNote(BaseModel):
    task: int
    zh: str
    en: str = Field(min_length=1)


class Measure(BaseModel):
    zh: str = Field(min_length=1)
    tasks: list[int]


class SectionNote(BaseModel):
    id: str
    heading_en: str
    summary_en: str = Field(min_length=1)
    measures: list[Measure] = Field(default_factory=list)


class DocumentNote(BaseModel):
    title_en: str
    plan_title_en: str
    issuer_en: str
    annex_title_en: str = ""


class Annotations(BaseModel):
    """Reviewed English renderings and links beside the source (``ingest/annotations/``)."""

    doc_number: str
    document: DocumentNote
    glossary: dict[str, str]
    categories: list[CategoryNote]
    tasks: list[TaskNote]
    sections: list[SectionNote]
    differentiated_tasks: list[int]


def read_manifest(sources: Path) -> SourceManifest:
    path = sources / "manifest.json"
    try:
        return SourceManifest.model_validate_json(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise CorpusError(f"source manifest not found: {path}") from exc
    except ValidationError as exc:
        raise CorpusError(f"source manifest {path} is invalid: {exc}") from exc


def read_source(sources: Path, manifest: SourceManifest) -> str:
    path = sources / manifest.file
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise CorpusError(f"source document not found: {path}") from exc
    except UnicodeDecodeError as exc:
        raise CorpusError(f"source document {path} is not UTF-8 text: {exc}") from exc
    actual = sha256_text(text)
    if actual != manifest.sha256:
        raise CorpusError(
            f"source document {path} does not match its manifest (sha256 {actual[:12]}… != "
            f"{manifest.sha256[:12]}…); review the change and update manifest.json"
        )
    return text


def read_annotations(path: Path) -> Annotations:
    try:
        return Annotations.model_validate_json(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise CorpusError(f"annotations not found: {path}") from exc
    except ValidationError as exc:
        raise CorpusError(f"annotations {path} are invalid: {exc}") from exc


def _check_same(kind: str, annotated: set, parsed: set) -> None:
    missing, stale = sorted(parsed - annotated), sorted(annotated - parsed)
    if missing or stale:
        raise CorpusError(f"annotations do not cover the parsed {kind}: missing {missing}, stale {stale}")


def apply_annotations(corpus: Corpus, notes: Annotations) -> Corpus:
    """``corpus`` with the English renderings and measure links merged in, checking coverage exactly.

    Returns a new corpus; ``corpus`` itself is left as it was (the models are frozen)."""
    if notes.doc_number != corpus.meta.doc_number:
        raise CorpusError(f"annotations are for {notes.doc_number}, the source is {corpus.meta.doc_number}")
    tasks = {t.number: t for t in corpus.tasks}
    categories = {c.number: c for c in corpus.categories}
    sections = {s.id: s for s in corpus.sections}
    _check_same("tasks", {n.task for n in notes.tasks}, set(tasks))
    _check_same("categories", {n.no for n in notes.categories}, set(categories))
    _check_same("sections", {n.id for n in notes.sections}, set(sections))
    for note in notes.tasks:
        if note.zh != tasks[note.task].text:
            raise CorpusError(f"annotation of task {note.task} is stale: its Chinese text differs from the source")
    for note in notes.categories:
        if note.zh != categories[note.no].title:
            raise CorpusError(f"annotation of category {note.no} is stale: its title differs from the source")
    unknown = sorted(set(notes.differentiated_tasks) - set(tasks))
    if unknown:
        raise CorpusError(f"differentiated tasks {unknown} are not in the annex")

    for note in notes.sections:
        section = sections[note.id]
        for measure in note.measures:
            if measure.zh not in section.text:
                raise CorpusError(f"section {note.id}: measure {measure.zh[:20]!r} is not in the section text")
            bad = sorted(set(measure.tasks) - set(tasks))
            if bad:
                raise CorpusError(f"section {note.id}: measure {measure.zh[:20]!r} links unknown tasks {bad}")

    # The models are frozen: every annotated unit is a new object, and so is the corpus.
    category_en = {n.no: n.en for n in notes.categories}
    task_en = {n.task: n.en for n in notes.tasks}
    differentiated = set(notes.differentiated_tasks)
    section_notes = {n.id: n for n in notes.sections}
    return corpus.model_copy(update={
        "categories": [c.model_copy(update={"title_en": category_en[c.number]}) for c in corpus.categories],
        "tasks": [t.model_copy(update={"text_en": task_en[t.number], "category_en": category_en[t.category_no],
                                       "differentiated": t.number in differentiated}) for t in corpus.tasks],
        "sections": [_annotated_section(s, section_notes[s.id]) for s in corpus.sections],
        "meta": corpus.meta.model_copy(update={"title_en": notes.document.title_en,
                                               "plan_title_en": notes.document.plan_title_en,
                                               "issuer_en": notes.document.issuer_en}),
    })


def _annotated_section(section: Section, note: SectionNote) -> Section:
    return section.model_copy(update={
        "heading_en": note.heading_en, "text_en": note.summary_en,
        "measures": [(m.zh, list(m.tasks)) for m in note.measures],
        "tasks": sorted({n for m in note.measures for n in m.tasks}),
    })


def check_manifest_agrees(corpus: Corpus, manifest: SourceManifest) -> None:
    """The manifest's metadata is what the parser read from the text (a copy-paste slip stops the load)."""
    meta = corpus.meta
    for field, parsed in (("doc_number", meta.doc_number), ("issuer", meta.issuer), ("printed", meta.printed),
                          ("approved_by", meta.approved_by), ("disclosure", meta.disclosure),
                          ("plan_title", meta.plan_title)):
        expected = getattr(manifest, field)
        if parsed != expected:
            raise CorpusError(f"manifest says {field}={expected!r} but the source reads {parsed!r}")


def load_corpus(settings: Settings | None = None) -> Corpus:
    """The verified, annotated corpus, read from ``settings``' sources and annotations.

    Parsed at each call (about 4 ms; the engine loads it once and shares it), so there is no
    process-wide cache to go stale when the sources change; the result is immutable (frozen).
    """
    settings = settings or get_settings()
    sources = settings.sources_path
    manifest = read_manifest(sources)
    corpus = parse_document(read_source(sources, manifest))
    check_manifest_agrees(corpus, manifest)
    return apply_annotations(corpus, read_annotations(settings.annotations_path / manifest.annotations))


def load_glossary(settings: Settings | None = None) -> dict[str, str]:
    settings = settings or get_settings()
    manifest = read_manifest(settings.sources_path)
    return read_annotations(settings.annotations_path / manifest.annotations).glossary


def corpus_records(corpus: Corpus) -> list[dict]:
    """The JSON Lines records of ``policy-assistant corpus``: meta, sections, tasks."""
    records: list[dict] = [{"kind": "meta", **json.loads(corpus.meta.model_dump_json()),
                            "source_sha256": corpus.source_sha256}]
    for s in corpus.sections:
        records.append({"kind": "section", "id": s.id, "heading_path": s.heading_path, "text": s.text,
                        "heading_en": s.heading_en, "text_en": s.text_en, "tasks": s.tasks})
    for t in corpus.tasks:
        records.append({"kind": "task", "task": t.number, "category_no": t.category_no, "category": t.category,
                        "category_en": t.category_en, "text": t.text, "text_en": t.text_en,
                        "differentiated": t.differentiated})
    return records
