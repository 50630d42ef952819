"""Extractive, cited answers from a search result (no LLM).

Every sentence an answer states is the plan's own text (quoted or cut at a sentence
boundary), so qualifiers such as "non-profit", "by donation" or "not exceeding 50%" survive.
The only words the composer adds are framing ("Yes." / "可以。", "The plan addresses this in
Task N:") and labels. This module only renders: which units to cite (the pipeline's support
units, a subsequence of its ranking), which sentence of each to lead with and whether the plan
covers the question fully, partly or not at all all come from the :class:`SearchResult`.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from assistant.answer.cards import (
    META_SECTIONS,
    citation_document,
    cite_units,
    hit_unit,
    lead_sentence,
    section_citation,
    section_tag,
    strip_end,
    tag_name,
    task_card,
    task_citation,
    task_tag,
)
from assistant.answer.facts import meta_answer, meta_intents, refers_to_document, structure_answer
from assistant.answer.types import Citation
from assistant.ingest.library import Library, as_library
from assistant.ingest.models import Corpus, Section, Task
from assistant.retrieval.rerank import sentences
from assistant.retrieval.types import Hit, SearchResult


def _word_set(text: str) -> frozenset[str]:
    return frozenset(text.split())


RELATED_SHOWN = 3
RELATED_DEPTH = 6  # related units come from the head of the ranking only
SEE_ALSO_WIDTH = 60  # characters of a related unit's text under an answer
NOT_RELATED_SECTIONS = ("notice", "distribution")  # of any document


class Composed(NamedTuple):
    """What the composer rendered: the markdown, its citations, the mode, the units listed as related."""

    markdown: str
    citations: list[Citation]
    mode: str
    related: list[str]

# --- question shape -----------------------------------------------------------------------

_ZH_YES_NO = re.compile(r"(?:吗|么|嘛)\s*[？?]?\s*$|能不能|可不可以|是否|可否|能否|有没有|"
                        r"是不是|允不允许|行不行|可以不")
_EN_YES_NO = re.compile(r"^\s*(?:can|could|may|might|is|are|am|do|does|did|will|would|should|has|have|was|were|must)\b",
                        re.IGNORECASE)
_ZH_ENABLING = re.compile(r"^(?:允许|支持|向外资开放|开放|取消|放宽|鼓励)|取消.{0,30}限制")
_EN_ENABLING = re.compile(r"^(?:allow|support|open|remove|relax|permit|encourage)\b", re.IGNORECASE)
_EN_BASE_VERBS = _word_set(
    "allow support open remove relax permit encourage attract provide promote explore develop build "
    "expand strengthen improve optimize accelerate establish deepen create carry implement enrich "
    "make continue apply facilitate study guide take raise step simplify accept engage adhere "
    "formulate prevent consolidate set launch foster cultivate pilot advance ensure"
)
_EN_COORDINATED = re.compile(r"(?P<sep>(?:, and|;)\s+)(?P<verb>[a-z]+)\b")


def _third_person(verb: str) -> str:
    if verb.endswith(("s", "x", "z", "ch", "sh")):
        return verb + "es"
    if verb.endswith("y") and verb[-2:-1] not in "aeiou":
        return verb[:-1] + "ies"
    return verb + "s"


def _plan_does(sentence: str) -> str | None:
    """"Allow X …; attract Y" -> "allows X …; attracts Y" (None when it is not an imperative)."""
    first, _, rest = sentence.partition(" ")
    if first.lower() not in _EN_BASE_VERBS:
        return None

    def conjugate(match: re.Match[str]) -> str:
        verb = match.group("verb")
        return match.group("sep") + (_third_person(verb) if verb in _EN_BASE_VERBS else verb)

    return f"{_third_person(first.lower())} {_EN_COORDINATED.sub(conjugate, rest)}"


def is_yes_no(question: str, lang: str) -> bool:
    return bool(_ZH_YES_NO.search(question) if lang == "zh" else _EN_YES_NO.search(question))


def is_enabling(sentence: str, lang: str) -> bool:
    """A measure that permits or opens something (允许/支持/开放/取消…限制, Allow/Support/Open/Remove)."""
    return bool(_ZH_ENABLING.search(sentence) if lang == "zh" else _EN_ENABLING.search(sentence))


# --- rendering ----------------------------------------------------------------------------


WEAK_ALIGNMENT = 0.4  # below: the cited text shares little with the question; say "closest", never "Yes"
YES_ALIGNMENT = 0.6


def _task_lead(task: Task, question: str, lang: str, quote: int = 0, alignment: float | None = None,
               document: str | None = None) -> str:
    """The direct first sentence; ``alignment`` None means the user named the task."""
    text = task.text if lang == "zh" else task.text_en or task.text
    sentence = strip_end(lead_sentence(text, quote))
    tag = task_tag(task.number, lang, document)
    if alignment is not None and alignment < WEAK_ALIGNMENT:
        return (f"方案中与此最接近的规定是第{task.number}项：{sentence}{tag}。" if lang == "zh"
                else f"The closest provision in the plan is Task {task.number}: {sentence} {tag}.")
    strong = alignment is None or alignment >= YES_ALIGNMENT
    yes = strong and is_yes_no(question, lang) and is_enabling(sentence, lang)
    if lang == "zh":
        return f"{'可以。' if yes else ''}方案第{task.number}项规定：{sentence}{tag}。"
    if yes:
        does = _plan_does(sentence)
        if does:
            return f"Yes. The plan {does} {tag}."
        return f"Yes. The plan addresses this in Task {task.number}: {sentence} {tag}."
    return f"The plan addresses this in Task {task.number}: {sentence} {tag}."


def _section_lead(section: Section, lang: str, quote: int = 0, document: str | None = None) -> str:
    tag = section_tag(section, lang, document)
    if lang == "en" and section.text_en:
        sentence = strip_end(lead_sentence(section.text_en, quote))
        name = section.heading_en or section.id
        return f"The plan body addresses this under “{name}”: {sentence} {tag}."
    sentence = strip_end(lead_sentence(section.text, quote))
    heading = section.heading_path[-1]
    if lang == "zh":
        return f"方案正文“{heading}”部分指出：{sentence}{tag}。"
    return f"The plan body addresses this under “{heading}”: {sentence} {tag}."


def related_hits(result: SearchResult, cited: set[str]) -> list[Hit]:
    """The units an answer lists as related, in rank order: the best ones it does not cite
    (never the notice or the distribution list, which hold no measures)."""
    return [h for h in result.hits[:RELATED_DEPTH] if not h.lookup and h.unit_id not in cited
            and h.section_id not in NOT_RELATED_SECTIONS and (h.task is not None or h.section_id)][:RELATED_SHOWN]


def _listed(hits: list[Hit], library: Library, lang: str, width: int | None = None) -> list[str]:
    """One line per unit: its label and its text (cut to ``width`` characters when given)."""
    items = []
    for hit in hits:
        document, task, section = hit_unit(library, hit)
        name = f"{document.number} " if document is not None and library.multiple else ""
        if task is not None:
            text = _cut(task.text if lang == "zh" else task.text_en or task.text, width)
            label = f"{name}第{task.number}项" if lang == "zh" else f"{name}Task {task.number}"
            items.append(f"- {label}（{task.category}）：{text}" if lang == "zh"
                         else f"- {label} ({task.category_en or task.category}): {text}")
        elif section is not None:
            text = section.text_en if lang == "en" and section.text_en else section.text
            heading = section.heading_en if lang == "en" and section.heading_en else section.heading_path[-1]
            first = strip_end(sentences(text)[0]) if sentences(text) else text
            items.append(f"- {name}{heading}: {_cut(first, width)}")
    return items


def _cut(text: str, width: int | None) -> str:
    return text if width is None or len(text) <= width else text[:width].rstrip() + "…"


def _see_also(hits: list[Hit], library: Library, lang: str) -> str:
    """Related units under an answer, after its citations (an ordinal follow-up counts through both)."""
    items = _listed(hits, library, lang, width=SEE_ALSO_WIDTH)
    if not items:
        return ""
    title = "相关条目（供参考，未作为依据引用）：" if lang == "zh" else "See also (related, not cited as support):"
    return title + "\n\n" + "\n".join(items)


def out_of_scope_answer(hits: list[Hit], corpus: Corpus | Library, lang: str, document: str | None = None) -> str:
    """What the searched document (the filter's, else the primary plan or every one of a library) does not say."""
    library = as_library(corpus)
    if document is not None or not library.multiple:
        number = library.require(document).number
        statement = (f"该方案（{number}）未涉及这一问题。" if lang == "zh"
                     else f"The plan ({number}) does not address this.")
    else:
        numbers = "、".join(library.numbers) if lang == "zh" else ", ".join(library.numbers)
        statement = (f"所收录的文件（{numbers}）均未涉及这一问题。" if lang == "zh"
                     else f"None of the documents ({numbers}) addresses this.")
    items = _listed(hits, library, lang)
    if not items:
        return statement
    title = ("可能相关的内容（仅供参考，并不回答这一问题）：" if lang == "zh"
             else "Possibly related (for reference only; these do not answer the question):")
    return f"{statement}\n\n{title}\n\n" + "\n".join(items)


def _no_such_task(numbers: list[int], corpus: Corpus, lang: str) -> str:
    last = max(t.number for t in corpus.tasks)
    if lang == "zh":
        listed = "、".join(f"第{n}项" for n in numbers)
        return f"附件中没有{listed}任务：附件共有第1–{last}项任务。"
    listed = ", ".join(f"Task {n}" for n in numbers)
    return f"There is no {listed} in the annex: the annex has tasks 1–{last}."


def lookup_answer(result: SearchResult, corpus: Corpus | Library, question: str,
                  lang: str) -> tuple[str, list[Citation]]:
    """Task cards for the numbers the question names (in the filter's document, else the primary plan);
    a plain note for numbers that do not exist."""
    library = as_library(corpus)
    document = library.require(result.document)
    name = tag_name(library, document)
    wanted = {document.task_unit(n) for n in result.lookup.valid}
    hits = {h.task: h for h in result.support if h.task is not None and h.unit_id in wanted}
    tasks = [t for t in (document.corpus.task(n) for n in result.lookup.valid) if t is not None]
    parts: list[str] = []
    if len(tasks) == 1 and not result.lookup.pure:
        quote = hits[tasks[0].number].quote.get(lang, 0) if tasks[0].number in hits else 0
        parts.append(_task_lead(tasks[0], question, lang, quote, document=name))
    parts += [task_card(t, document.corpus, lang, name) for t in tasks]
    if result.lookup.invalid:
        parts.append(_no_such_task(result.lookup.invalid, document.corpus, lang))
    return "\n\n".join(parts), [task_citation(t, document) for t in tasks]


def _missing_line(result: SearchResult, lang: str) -> str:
    """What a partial answer says the plan does not state."""
    labels = result.decision.missing_labels.get(lang, ())
    if lang == "zh":
        if labels:
            return f"方案对此只作了上述规定，未写明{'、'.join(labels)}。"
        return "方案对此只作了上述原则性规定，未写明更具体的内容。"
    if labels:
        listed = ", ".join(labels[:-1]) + (" or " if len(labels) > 1 else "") + labels[-1]
        return f"The plan says no more than this; it does not state {listed}."
    return "The plan addresses this only in the general terms above; it states nothing more specific."


# --- entry point --------------------------------------------------------------------------


def compose_answer(result: SearchResult, corpus: Corpus | Library, question: str, lang: str) -> Composed:
    """Markdown answer, its citations, the mode (extractive, partial, lookup or out_of_scope) and
    the units it lists as related. ``corpus`` is the primary plan, or the library the index holds."""
    lang = "zh" if lang == "zh" else "en"
    library = as_library(corpus)
    if result.lookup.valid:
        markdown, citations = lookup_answer(result, library, question, lang)
        return Composed(markdown, citations, "lookup", [])
    if result.lookup.invalid:
        return Composed(_no_such_task(result.lookup.invalid, library.require(result.document).corpus, lang), [],
                        "lookup", [])
    if result.structure is not None:
        markdown, citations = structure_answer(result, library, lang)
        return Composed(markdown, citations, "extractive", [])
    # Questions about the document itself (date, meeting, number…) are answered from its metadata
    # when they name the document and the search meets its notice, preamble or distribution list.
    intents = meta_intents(question, lang)
    meta_hit = next((h for h in result.hits[:3] if h.section_id in META_SECTIONS), None)
    if intents and meta_hit is not None and (result.in_scope or refers_to_document(question, lang)):
        document, _, section = hit_unit(library, meta_hit)
        if document is not None and section is not None:
            return Composed(meta_answer(document.corpus, intents, lang, section, tag_name(library, document)),
                            [section_citation(section, document)], "extractive", [])

    support = result.support
    if not result.in_scope or not support:
        related = related_hits(result, set())
        return Composed(out_of_scope_answer(related, library, lang, result.document), [], "out_of_scope",
                        [h.unit_id for h in related])

    citations, cards = cite_units(support, library, lang)
    parts = [_lead(result, library, question, lang, citations), *cards]
    if result.coverage == "partial":
        parts.insert(1, _missing_line(result, lang))
    related = related_hits(result, {h.unit_id for h in support})
    see_also = _see_also(related, library, lang)
    if see_also:
        parts.append(see_also)
    return Composed("\n\n".join(parts), citations, "extractive" if result.coverage == "full" else "partial",
                    [h.unit_id for h in related])


def _citation_tag(library: Library, citation: Citation, lang: str) -> str:
    document = citation_document(library, citation)
    name = tag_name(library, document)
    if citation.task is not None:
        return task_tag(citation.task, lang, name)
    return section_tag(document.corpus.section(citation.section_id), lang, name)


def _lead(result: SearchResult, library: Library, question: str, lang: str, citations: list[Citation]) -> str:
    """The answer's first paragraph: what the plan says (and "Yes" when it clearly answers)."""
    lead_hit = result.support[0]
    if len(citations) > 1 and result.analysis.wants_list:
        tags = [_citation_tag(library, c, lang) for c in citations]
        return (f"方案中有{len(tags)}处内容与此相关：{''.join(tags)}。" if lang == "zh"
                else f"The plan addresses this in {len(tags)} places: {' '.join(tags)}.")
    if lead_hit.task is not None:
        alignment = lead_hit.alignment
        if result.coverage == "partial":  # never "Yes": name what the plan says, then what it does not
            alignment = min(alignment or 0.0, YES_ALIGNMENT - 0.01) if result.decision.missing else 0.0
        elif alignment is not None and alignment >= WEAK_ALIGNMENT:
            # the calibrated decision says the plan answers it: a clearly aligned lead may say "Yes"
            alignment = max(alignment, YES_ALIGNMENT)
    document, task, section = hit_unit(library, lead_hit)
    name = tag_name(library, document) if document is not None else None
    if task is not None:
        return _task_lead(task, question, lang, lead_hit.quote.get(lang, 0), alignment, name)
    return _section_lead(section, lang, lead_hit.quote.get(lang, 0), name)
