"""Answers stated by the document's metadata and by the annex's structure (rendering only)."""

from __future__ import annotations

import re

from assistant.answer.cards import cite_units, section_tag, tag_name, task_tag
from assistant.answer.types import Citation
from assistant.ingest.library import Library, as_library
from assistant.ingest.models import Corpus, Section
from assistant.retrieval.structure import METADATA_SECTIONS
from assistant.retrieval.types import SearchResult

# Metadata intents: what a question about the document itself asks for.
_META_INTENTS: dict[str, tuple[str, str]] = {
    "date": (r"什么时候|何时|哪天|哪一天|日期|时间|哪年|几月|印发|发布|出台|成文",
             r"\bwhen\b|\bdate\b|\bissued\b|\bpublished\b|\breleased\b|\bdated\b"),
    "meeting": (r"会议|常务会|审议|研究通过|通过", r"\bmeeting\b|\bapproved\b|\badopted\b|\bpassed\b"),
    "number": (r"文号|字号|编号|几号文|发文号", r"document number|\bdoc(?:ument)? no\b|reference number|file number"),
    "issuer": (r"谁发|发文机关|发布机关|印发机关|哪个部门|发布单位|哪个单位|谁印发|谁制定|哪个机关|发文单位",
               r"\bwho issued\b|\bissuer\b|\bissued by\b|\bwhich (?:body|authority|government|department)\b"),
    "recipients": (r"主送|发给|下发给|抄送|哪些单位|有关单位|送达",
                   r"\baddressed\b|\brecipients?\b|\bsent to\b|\bcopied\b|\bcc\b|\bdistribut"),
    "basis": (r"依据|根据什么|批复|上位", r"\bbasis\b|\bbased on\b|\bgrounds\b|\blegal basis\b"),
}


_DOCUMENT_REFERENCE = (re.compile(r"方案|文件|通知|本文|该文|这份|此文|文号|发文"),
                       re.compile(r"\b(?:plan|document|notice|it|this)\b", re.IGNORECASE))


def refers_to_document(question: str, lang: str) -> bool:
    """The question is about the document itself ("这个方案…", "the plan…")."""
    return bool(_DOCUMENT_REFERENCE[0 if lang == "zh" else 1].search(question))


def meta_intents(question: str, lang: str) -> list[str]:
    index = 0 if lang == "zh" else 1
    return [name for name, patterns in _META_INTENTS.items()
            if re.search(patterns[index], question, re.IGNORECASE)]


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _meeting_en(approved_by: str) -> str:
    match = re.search(r"第(\d+)次市政府常务会议", approved_by)
    if match:
        return f"the {_ordinal(int(match.group(1)))} executive meeting of the municipal government ({approved_by})"
    return approved_by


def meta_answer(corpus: Corpus, intents: list[str], lang: str, section: Section, document: str | None = None) -> str:
    """Facts about the document itself, straight from the parsed metadata (``document``: the tags name it)."""
    meta = corpus.meta
    tag = section_tag(section, lang, document)
    printed_zh = f"{meta.printed.year}年{meta.printed.month}月{meta.printed.day}日" if meta.printed else ""
    printed_en = f"{meta.printed.day} {meta.printed.strftime('%B')} {meta.printed.year}" if meta.printed else ""
    lines: list[str] = []
    wanted = intents or ["number", "issuer", "date", "meeting"]
    for intent in wanted:
        if intent == "date" and meta.printed:
            lines.append(f"《{meta.plan_title}》（{meta.doc_number}）的印发日期为{printed_zh}{tag}。" if lang == "zh"
                         else f"The plan ({meta.doc_number}) was issued on {printed_en} (印发日期 {printed_zh}) {tag}.")
        elif intent == "meeting" and meta.approved_by:
            lines.append(f"《{meta.plan_title}》已经{meta.approved_by}研究通过{tag}。" if lang == "zh"
                         else f"The plan was adopted at {_meeting_en(meta.approved_by)} {tag}.")
        elif intent == "number":
            lines.append(f"文号为{meta.doc_number}，标题为《{meta.title}》{tag}。" if lang == "zh"
                         else f"Its document number is {meta.doc_number}: “{meta.title_en}” ({meta.title}) {tag}.")
        elif intent == "issuer":
            office = f"（{meta.issuing_office}印发）" if meta.issuing_office else ""
            lines.append(f"发文机关为{meta.issuer}{office}{tag}。" if lang == "zh"
                         else f"It was issued by the {meta.issuer_en or meta.issuer} ({meta.issuer}) {tag}.")
        elif intent == "recipients":
            addressees, cc = "、".join(meta.addressees), "、".join(meta.cc)
            related = "、".join(meta.related_units)
            if lang == "zh":
                lines.append(f"主送：{addressees}{tag}。")
                if related:
                    lines.append(f"有关单位：{related}。")
                if cc:
                    lines.append(f"抄送：{cc}。")
            else:
                lines.append(f"It is addressed to: {addressees} {tag}.")
                if related:
                    lines.append(f"Also sent to the relevant units: {related}.")
                if cc:
                    lines.append(f"Copied to: {cc}.")
        elif intent == "basis" and meta.basis:
            docs = "；".join(f"《{b.title}》（{b.number}）" for b in meta.basis)
            lines.append(f"方案的依据是{docs}{tag}。" if lang == "zh"
                         else f"The plan is based on {docs} {tag}.")
    return "\n\n".join(lines)


def structure_answer(result: SearchResult, corpus: Corpus | Library, lang: str) -> tuple[str, list[Citation]]:
    """Counts and lists of the annex, from the parsed corpus itself (of the document the facts are about)."""
    library = as_library(corpus)
    facts = result.structure
    document = library.document(facts.document) or library.primary
    corpus = document.corpus
    name = tag_name(library, document)
    tasks = corpus.tasks
    differentiated = [t for t in tasks if t.differentiated]
    common = len(tasks) - len(differentiated)
    cited = [h for h in result.support]
    citations, cards = cite_units(cited, library, lang)
    if facts.kind == "metadata":  # the parsed metadata, each fact tagged with the section that prints it
        sections = {s.id: s for s in corpus.sections}
        parts = [meta_answer(corpus, [intent], lang, sections[printed], name) for intent in facts.intents
                 if (printed := METADATA_SECTIONS[intent]) in sections]
        return "\n\n".join(p for p in parts if p), citations
    if facts.kind in ("count", "categories"):
        names = "；".join(c.label for c in corpus.categories) if lang == "zh" else "; ".join(
            f"{c.number}. {c.title_en or c.title}" for c in corpus.categories)
        if lang == "zh":
            lead = (f"附件共列出{len(tasks)}项试点任务（第1–{tasks[-1].number}项），其中{common}项共性试点任务、"
                    f"{len(differentiated)}项差异化试点任务，分为{len(corpus.categories)}类：{names}。")
        else:
            lead = (f"The annex lists {len(tasks)} pilot tasks (Tasks 1–{tasks[-1].number}): {common} common and "
                    f"{len(differentiated)} differentiated pilot tasks, in {len(corpus.categories)} categories: "
                    f"{names}.")
        return lead, citations
    numbers = [h.task for h in cited if h.task is not None]
    tags = ("" if lang == "zh" else " ").join(task_tag(n, lang, name) for n in numbers)
    if facts.kind == "differentiated":
        lead = (f"差异化试点任务共{len(numbers)}项：{tags}。" if lang == "zh"
                else f"There are {len(numbers)} differentiated pilot tasks: {tags}.")
    else:
        category = corpus.category(facts.category)
        label = category.label if lang == "zh" else f"Category {category.number}: {category.title_en or category.title}"
        lead = (f"附件“{label}”类共有{len(numbers)}项任务：{tags}。" if lang == "zh"
                else f"{label} has {len(numbers)} tasks in the annex: {tags}.")
    return "\n\n".join([lead, *[c for c in cards if c]]), citations
