"""Citation labels and cards: how a cited task or body passage is shown (rendering only)."""

from __future__ import annotations

import re

from assistant.answer.types import Citation
from assistant.ingest.models import Corpus, Section, Task
from assistant.retrieval.rerank import sentences
from assistant.retrieval.types import Hit

META_SECTIONS = ("notice", "preamble", "distribution")


# --- citation labels ----------------------------------------------------------------------


def task_tag(number: int, lang: str) -> str:
    """The inline citation of a task: [第17项] or [Task 17]."""
    return f"[第{number}项]" if lang == "zh" else f"[Task {number}]"


_SECTION_NAMES = {"notice": ("通知", "Notice"), "preamble": ("方案序言", "Preamble"),
                  "distribution": ("抄送", "Distribution")}


def section_tag(section: Section, lang: str) -> str:
    """The inline citation of a body passage: [正文六（二）] or [Section 6.2]."""
    if section.id in _SECTION_NAMES:
        zh, en = _SECTION_NAMES[section.id]
        return f"[{zh}]" if lang == "zh" else f"[{en}]"
    if lang == "en":
        return f"[Section {section.id}]"
    ordinals = [re.match(r"^(（?[一二三四五六七八九十]+[）、]?)", h) for h in section.heading_path[1:]]
    label = "".join(m.group(1).rstrip("、") for m in ordinals if m)
    return f"[正文{label or section.id}]"


def task_citation(task: Task) -> Citation:
    return Citation(task=task.number, section=task.category, text=task.text, text_en=task.text_en or None,
                    category_no=task.category_no, category_en=task.category_en or None)


def section_citation(section: Section) -> Citation:
    return Citation(task=None, section=" / ".join(section.heading_path), text=section.text,
                    text_en=section.text_en or None, section_id=section.id, linked_tasks=list(section.tasks))


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
    if lang == "zh":
        return zh
    return f"Category {task.category_no}: {task.category_en} ({zh})"


def task_card(task: Task, corpus: Corpus, lang: str) -> str:
    """Number, category, the Chinese original and (for English questions) the English rendering."""
    flag = ""
    if task.differentiated:
        flag = "（差异化试点任务）" if lang == "zh" else " (differentiated pilot task)"
    if lang == "zh":
        return f"**{task_tag(task.number, lang)}** {_category_label(task, corpus, lang)}{flag}\n\n> {task.text}"
    return (f"**{task_tag(task.number, lang)}** {_category_label(task, corpus, lang)}{flag}\n\n"
            f"> 原文：{task.text}\n\n> {task.text_en}")


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


def section_card(section: Section, lang: str) -> str:
    heading = " › ".join(section.heading_path)
    body = "\n\n".join(f"> {p}" for p in section.paragraphs)
    parts = [f"**{section_tag(section, lang)}** {heading}"]
    if lang == "en" and section.heading_en:
        parts[0] += f" ({section.heading_en})"
    parts.append(body)
    if lang == "en" and section.text_en:
        parts.append(f"> Summary: {section.text_en}")
    linked = _linked_line(section, lang)
    if linked:
        parts.append(linked)
    return "\n\n".join(parts)


def cite_units(support: list[Hit], corpus: Corpus, lang: str) -> tuple[list[Citation], list[str]]:
    citations: list[Citation] = []
    cards: list[str] = []
    for hit in support:
        if hit.task is not None and (task := corpus.task(hit.task)) is not None:
            citations.append(task_citation(task))
            cards.append(task_card(task, corpus, lang))
        elif hit.section_id and (section := corpus.section(hit.section_id)) is not None:
            citations.append(section_citation(section))
            cards.append(section_card(section, lang))
    return citations, cards
