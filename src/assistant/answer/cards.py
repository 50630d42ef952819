"""Citation labels and cards: how a cited task or body passage is shown (rendering only).

With one document the tags read [第17项] / [Task 17]; when the library holds several, every tag
names its document ([厦府〔2026〕99号 第17项] / [Doc No. 厦府〔2026〕99号 Task 17]), so a reader can
tell two plans' task 17 apart.
"""

from __future__ import annotations

import re

from assistant.answer.types import Citation
from assistant.ingest.library import Library, LibraryDocument, UnknownDocument, as_library
from assistant.ingest.models import Corpus, Section, Task
from assistant.retrieval.rerank import sentences
from assistant.retrieval.structure import META_SECTIONS  # noqa: F401  (re-exported for compose)
from assistant.retrieval.types import Hit

# --- citation labels ----------------------------------------------------------------------


def task_tag(number: int, lang: str, document: str | None = None) -> str:
    """The inline citation of a task: [第17项] or [Task 17]; ``document`` (a number) names its plan."""
    if document:
        return f"[{document} 第{number}项]" if lang == "zh" else f"[Doc No. {document} Task {number}]"
    return f"[第{number}项]" if lang == "zh" else f"[Task {number}]"


def _named(tag: str, lang: str, document: str | None) -> str:
    if not document:
        return tag
    return f"[{document} {tag[1:]}" if lang == "zh" else f"[Doc No. {document} {tag[1:]}"


_SECTION_NAMES = {"notice": ("通知", "Notice"), "preamble": ("方案序言", "Preamble"),
                  "distribution": ("抄送", "Distribution")}


def section_tag(section: Section, lang: str, document: str | None = None) -> str:
    """The inline citation of a body passage: [正文六（二）] or [Section 6.2] (``document`` names its plan)."""
    if section.id in _SECTION_NAMES:
        zh, en = _SECTION_NAMES[section.id]
        return _named(f"[{zh}]" if lang == "zh" else f"[{en}]", lang, document)
    if lang == "en":
        return _named(f"[Section {section.id}]", lang, document)
    ordinals = [re.match(r"^(（?[一二三四五六七八九十]+[）、]?)", h) for h in section.heading_path[1:]]
    label = "".join(m.group(1).rstrip("、") for m in ordinals if m)
    return _named(f"[正文{label or section.id}]", lang, document)


def task_citation(task: Task, document: LibraryDocument | None = None) -> Citation:
    return Citation(task=task.number, section=task.category, text=task.text, text_en=task.text_en or None,
                    category_no=task.category_no, category_en=task.category_en or None,
                    document=document.info() if document is not None else None)


def section_citation(section: Section, document: LibraryDocument | None = None) -> Citation:
    return Citation(task=None, section=" / ".join(section.heading_path), text=section.text,
                    text_en=section.text_en or None, section_id=section.id, linked_tasks=list(section.tasks),
                    document=document.info() if document is not None else None)


# --- which document a unit belongs to -------------------------------------------------------


def tag_name(library: Library, document: LibraryDocument) -> str | None:
    """The number a tag names: only when the library holds more than one document."""
    return document.number if library.multiple else None


def hit_document(library: Library, hit: Hit) -> LibraryDocument | None:
    """The document of a ranked unit (by its id, never by number alone), None for a unit of no document here."""
    try:
        return library.of_unit(hit.unit_id)[0]
    except UnknownDocument:
        return None


def hit_unit(library: Library, hit: Hit) -> tuple[LibraryDocument | None, Task | None, Section | None]:
    """A hit's document and its task or section in that document."""
    document = hit_document(library, hit)
    if document is None:
        return None, None, None
    if hit.task is not None:
        return document, document.corpus.task(hit.task), None
    return document, None, document.corpus.section(hit.section_id) if hit.section_id else None


def citation_document(library: Library, citation: Citation) -> LibraryDocument:
    """The document a citation names (the primary plan when it names none)."""
    number = (citation.document or {}).get("number")
    return library.document(number) or library.primary


def strip_end(sentence: str) -> str:
    return sentence.rstrip("。.；;！!？? ")


def lead_sentence(text: str, index: int = 0) -> str:
    parts = sentences(text)
    if not parts:
        return text
    return parts[index] if index < len(parts) else parts[0]


def _category_label(task: Task, corpus: Corpus, lang: str) -> str:
    category = corpus.category(task.category_no)
    zh = category.label if category else task.category
    if lang == "zh" or not task.category_en:  # a plan without English renderings shows its own words
        return zh
    return f"Category {task.category_no}: {task.category_en} ({zh})"


def task_card(task: Task, corpus: Corpus, lang: str, document: str | None = None) -> str:
    """Number, category, the Chinese original and (for English questions) the English rendering."""
    flag = ""
    if task.differentiated:
        flag = "（差异化试点任务）" if lang == "zh" else " (differentiated pilot task)"
    tag = task_tag(task.number, lang, document)
    if lang == "zh":
        return f"**{tag}** {_category_label(task, corpus, lang)}{flag}\n\n> {task.text}"
    english = f"\n\n> {task.text_en}" if task.text_en else ""
    return f"**{tag}** {_category_label(task, corpus, lang)}{flag}\n\n> 原文：{task.text}{english}"


def _linked_line(section: Section, lang: str, shown: int = 12) -> str:
    if not section.tasks:
        return ""
    numbers = section.tasks[:shown]
    more = len(section.tasks) - len(numbers)
    if lang == "zh":
        listed = "、".join(str(n) for n in numbers)
        tail = f"等，共{len(section.tasks)}项" if more else ""
        return f"落实这一部分的附件任务：第{listed}项{tail}。"
    listed = ", ".join(str(n) for n in numbers)
    tail = f" and {more} more" if more else ""
    return f"Annex tasks that implement this part: {listed}{tail}."


def section_card(section: Section, lang: str, document: str | None = None) -> str:
    heading = " › ".join(section.heading_path)
    body = "\n\n".join(f"> {p}" for p in section.paragraphs)
    parts = [f"**{section_tag(section, lang, document)}** {heading}"]
    if lang == "en" and section.heading_en:
        parts[0] += f" ({section.heading_en})"
    parts.append(body)
    if lang == "en" and section.text_en:
        parts.append(f"> Summary: {section.text_en}")
    linked = _linked_line(section, lang)
    if linked:
        parts.append(linked)
    return "\n\n".join(parts)


def cite_units(support: list[Hit], corpus: Corpus | Library, lang: str) -> tuple[list[Citation], list[str]]:
    """Citations and cards of ``support``, each resolved in its own document."""
    library = as_library(corpus)
    citations: list[Citation] = []
    cards: list[str] = []
    for hit in support:
        document, task, section = hit_unit(library, hit)
        if document is None:
            continue
        name = tag_name(library, document)
        if task is not None:
            citations.append(task_citation(task, document))
            cards.append(task_card(task, document.corpus, lang, name))
        elif section is not None:
            citations.append(section_citation(section, document))
            cards.append(section_card(section, lang, name))
    return citations, cards
