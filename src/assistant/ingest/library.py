"""A library of plans: the project's own plan first, then the folders ``ASSISTANT_LIBRARY`` names.

Each further folder is shaped like ``ingest/sources/``: a source text the parser reads and a
``manifest.json`` that checks it. The primary plan keeps its unit ids exactly (``task:17``,
``section:2.1``: the eval gold, the task knowledge and the tests use them); the units of another
document are namespaced by its number (``厦府〔2026〕99号/task:17``), so one index holds them all
and a unit id alone says which document it belongs to.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from assistant.config import Settings, get_settings
from assistant.ingest.corpus import (
    apply_annotations,
    check_manifest_agrees,
    load_corpus,
    read_annotations,
    read_manifest,
    read_source,
)
from assistant.ingest.models import Corpus, DocumentMeta
from assistant.ingest.parser import CorpusError, parse_document

NAMESPACE = "/"  # between a document's number and a unit's own id; local ids never contain it


class UnknownDocument(ValueError):
    """A document filter names no document of the library; the message lists the ones it holds."""


def document_info(meta: DocumentMeta) -> dict[str, Any]:
    """What a hit or citation says about its document: number, title, issuer, date (ISO or None)."""
    return {"number": meta.doc_number, "title": meta.plan_title, "issuer": meta.issuer,
            "date": meta.printed.isoformat() if meta.printed else None}


def split_unit_id(unit_id: str) -> tuple[str, str]:
    """``("厦府〔2026〕99号", "task:17")`` for a namespaced id, ``("", "task:17")`` for the primary's."""
    key, _, local = unit_id.rpartition(NAMESPACE)
    return key, local


@dataclass(frozen=True)
class LibraryDocument:
    """One parsed plan of the library and how its unit ids are written."""

    corpus: Corpus
    primary: bool = False
    folder: Path | None = None

    @property
    def number(self) -> str:
        return self.corpus.meta.doc_number

    @property
    def prefix(self) -> str:
        """``""`` for the primary plan (ids as they always were), ``"<number>/"`` for the others."""
        return "" if self.primary else f"{self.number}{NAMESPACE}"

    def unit_id(self, local: str) -> str:
        return self.prefix + local

    def task_unit(self, number: int) -> str:
        return self.unit_id(f"task:{number}")

    def info(self) -> dict[str, Any]:
        return document_info(self.corpus.meta)


@dataclass(frozen=True)
class Library:
    """The documents one index holds, primary first; looked up by number or by unit id."""

    documents: tuple[LibraryDocument, ...]

    def __post_init__(self) -> None:
        if not self.documents or not self.documents[0].primary or sum(d.primary for d in self.documents) != 1:
            raise CorpusError("a library holds exactly one primary document, first")
        numbers = [d.number for d in self.documents]
        repeated = sorted({n for n in numbers if numbers.count(n) > 1})
        if repeated:
            raise CorpusError(f"the library holds document number(s) {repeated} more than once")

    @classmethod
    def single(cls, corpus: Corpus) -> Library:
        return cls((LibraryDocument(corpus, primary=True),))

    @property
    def primary(self) -> LibraryDocument:
        return self.documents[0]

    @property
    def corpus(self) -> Corpus:
        """The primary plan's corpus (what a one-document project always used)."""
        return self.primary.corpus

    @property
    def multiple(self) -> bool:
        """More than one document: citations then name their document."""
        return len(self.documents) > 1

    @property
    def numbers(self) -> list[str]:
        return [d.number for d in self.documents]

    def document(self, number: str | None) -> LibraryDocument | None:
        """The document with this number (None: the primary one); None when there is none."""
        if number is None:
            return self.primary
        return next((d for d in self.documents if d.number == number.strip()), None)

    def require(self, number: str | None) -> LibraryDocument:
        """:meth:`document`, or :class:`UnknownDocument` naming the documents there are."""
        found = self.document(number)
        if found is None:
            raise UnknownDocument(f"unknown document {number!r}: the library holds {', '.join(self.numbers)}")
        return found

    def of_unit(self, unit_id: str) -> tuple[LibraryDocument, str]:
        """The document a unit id belongs to, and the unit's id within it (``task:17``)."""
        key, local = split_unit_id(unit_id)
        if not key:
            return self.primary, local
        found = self.document(key)
        if found is None or found.primary:
            raise UnknownDocument(f"unit {unit_id!r} names no document of the library")
        return found, local


def as_library(source: Corpus | Library) -> Library:
    """Callers that still hold one corpus get the one-document library of it."""
    return source if isinstance(source, Library) else Library.single(source)


def load_document(folder: Path) -> LibraryDocument:
    """One further plan: its manifest, the checked source, the parse; English annotations if it names any."""
    if not folder.is_dir():
        raise CorpusError(f"library folder not found: {folder} (set in ASSISTANT_LIBRARY)")
    manifest = read_manifest(folder)
    corpus = parse_document(read_source(folder, manifest))
    check_manifest_agrees(corpus, manifest)
    if manifest.annotations:
        corpus = apply_annotations(corpus, read_annotations(folder / manifest.annotations))
    return LibraryDocument(corpus, primary=False, folder=folder)


def load_library(settings: Settings | None = None) -> Library:
    """The project's own plan, then every folder of ``settings.library`` (in order), all verified."""
    settings = settings or get_settings()
    primary = LibraryDocument(load_corpus(settings), primary=True, folder=settings.sources_path)
    return Library((primary, *(load_document(folder) for folder in settings.library_paths)))
