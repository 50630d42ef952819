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

from assistant.answer.types import Citation
from assistant.ingest.models import Corpus, Section, Task
from assistant.retrieval.rerank import sentences
from assistant.retrieval.types import Hit, SearchResult


def _word_set(text: str) -> frozenset[str]:
    return frozenset(text.split())


META_SECTIONS = ("notice", "preamble", "distribution")
RELATED_SHOWN = 3

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


# --- rendering ----------------------------------------------------------------------------


def _strip_end(sentence: str) -> str:
    return sentence.rstrip("。.；;！!？? ")


def _lead_sentence(text: str, index: int = 0) -> str:
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


WEAK_ALIGNMENT = 0.4  # below: the cited text shares little with the question; say "closest", never "Yes"
YES_ALIGNMENT = 0.6


def _task_lead(task: Task, question: str, lang: str, quote: int = 0, alignment: float | None = None) -> str:
    """The direct first sentence; ``alignment`` None means the user named the task."""
    text = task.text if lang == "zh" else task.text_en
    sentence = _strip_end(_lead_sentence(text, quote))
    tag = task_tag(task.number, lang)
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


def _section_lead(section: Section, lang: str, quote: int = 0) -> str:
    tag = section_tag(section, lang)
    if lang == "en" and section.text_en:
        sentence = _strip_end(_lead_sentence(section.text_en, quote))
        name = section.heading_en or section.id
        return f"The plan body addresses this under “{name}”: {sentence} {tag}."
    sentence = _strip_end(_lead_sentence(section.text, quote))
    heading = section.heading_path[-1]
    if lang == "zh":
        return f"方案正文“{heading}”部分指出：{sentence}{tag}。"
    return f"The plan body addresses this under “{heading}”: {sentence} {tag}."


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _meeting_en(approved_by: str) -> str:
    match = re.search(r"第(\d+)次市政府常务会议", approved_by)
    if match:
        return f"the {_ordinal(int(match.group(1)))} executive meeting of the municipal government ({approved_by})"
    return approved_by


def meta_answer(corpus: Corpus, intents: list[str], lang: str, section: Section) -> str:
    """Facts about the document itself, straight from the parsed metadata."""
    meta = corpus.meta
    tag = section_tag(section, lang)
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


def _possibly_related(hits: list[Hit], corpus: Corpus, lang: str) -> str:
    """The nearest units, labelled as possibly related, without citation tags."""
    items = []
    for hit in hits[:RELATED_SHOWN]:
        if hit.task is not None:
            task = corpus.task(hit.task)
            if task is None:
                continue
            text = task.text if lang == "zh" else task.text_en
            label = f"第{task.number}项" if lang == "zh" else f"Task {task.number}"
            items.append(f"- {label}（{task.category}）：{text}" if lang == "zh"
                         else f"- {label} ({task.category_en}): {text}")
        elif hit.section_id:
            section = corpus.section(hit.section_id)
            if section is None:
                continue
            text = section.text_en if lang == "en" and section.text_en else section.text
            heading = section.heading_en if lang == "en" and section.heading_en else section.heading_path[-1]
            items.append(f"- {heading}: {_strip_end(sentences(text)[0]) if sentences(text) else text}")
    if not items:
        return ""
    title = ("可能相关的内容（仅供参考，并不回答这一问题）：" if lang == "zh"
             else "Possibly related (for reference only; these do not answer the question):")
    return title + "\n\n" + "\n".join(items)


def out_of_scope_answer(result: SearchResult, corpus: Corpus, lang: str) -> str:
    statement = (f"该方案（{corpus.meta.doc_number}）未涉及这一问题。" if lang == "zh"
                 else f"The plan ({corpus.meta.doc_number}) does not address this.")
    related = _possibly_related([h for h in result.hits if not h.lookup], corpus, lang)
    return statement + ("\n\n" + related if related else "")


def _no_such_task(numbers: list[int], corpus: Corpus, lang: str) -> str:
    last = max(t.number for t in corpus.tasks)
    if lang == "zh":
        listed = "、".join(f"第{n}项" for n in numbers)
        return f"附件中没有{listed}任务：附件共有第1–{last}项任务。"
    listed = ", ".join(f"Task {n}" for n in numbers)
    return f"There is no {listed} in the annex: the annex has tasks 1–{last}."


def lookup_answer(result: SearchResult, corpus: Corpus, question: str, lang: str) -> tuple[str, list[Citation]]:
    """Task cards for the numbers the question names; a plain note for numbers that do not exist."""
    hits = {h.task: h for h in result.support if h.task is not None}
    tasks = [t for t in (corpus.task(n) for n in result.lookup.valid) if t is not None]
    parts: list[str] = []
    if len(tasks) == 1 and not result.lookup.pure:
        quote = hits[tasks[0].number].quote.get(lang, 0) if tasks[0].number in hits else 0
        parts.append(_task_lead(tasks[0], question, lang, quote))
    parts += [task_card(t, corpus, lang) for t in tasks]
    if result.lookup.invalid:
        parts.append(_no_such_task(result.lookup.invalid, corpus, lang))
    return "\n\n".join(parts), [task_citation(t) for t in tasks]


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


def _cards(support: list[Hit], corpus: Corpus, lang: str) -> tuple[list[Citation], list[str]]:
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


def structure_answer(result: SearchResult, corpus: Corpus, lang: str) -> tuple[str, list[Citation]]:
    """Counts and lists of the annex, from the parsed corpus itself."""
    facts = result.structure
    tasks = corpus.tasks
    differentiated = [t for t in tasks if t.differentiated]
    common = len(tasks) - len(differentiated)
    cited = [h for h in result.support]
    citations, cards = _cards(cited, corpus, lang)
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
    tags = "".join(task_tag(n, lang) for n in numbers) if lang == "zh" else " ".join(task_tag(n, lang) for n in numbers)
    if facts.kind == "differentiated":
        lead = (f"差异化试点任务共{len(numbers)}项：{tags}。" if lang == "zh"
                else f"There are {len(numbers)} differentiated pilot tasks: {tags}.")
    else:
        category = corpus.category(facts.category)
        label = category.label if lang == "zh" else f"Category {category.number}: {category.title_en or category.title}"
        lead = (f"附件“{label}”类共有{len(numbers)}项任务：{tags}。" if lang == "zh"
                else f"{label} has {len(numbers)} tasks in the annex: {tags}.")
    return "\n\n".join([lead, *[c for c in cards if c]]), citations


# --- entry point --------------------------------------------------------------------------


def compose_answer(result: SearchResult, corpus: Corpus, question: str, lang: str
                   ) -> tuple[str, list[Citation], str]:
    """Markdown answer, its citations and the mode (extractive, lookup or out_of_scope)."""
    lang = "zh" if lang == "zh" else "en"
    if result.lookup.valid:
        markdown, citations = lookup_answer(result, corpus, question, lang)
        return markdown, citations, "lookup"
    if result.lookup.invalid:
        return _no_such_task(result.lookup.invalid, corpus, lang), [], "lookup"
    if result.structure is not None:
        markdown, citations = structure_answer(result, corpus, lang)
        return markdown, citations, "extractive"
    # Questions about the document itself (date, meeting, number…) are answered from its metadata
    # when they name the document and the search meets its notice, preamble or distribution list.
    intents = meta_intents(question, lang)
    meta_hit = next((h for h in result.hits[:3] if h.section_id in META_SECTIONS), None)
    if intents and meta_hit is not None and (result.in_scope or refers_to_document(question, lang)):
        section = corpus.section(meta_hit.section_id)
        if section is not None:
            return meta_answer(corpus, intents, lang, section), [section_citation(section)], "extractive"

    support = result.support
    if not result.in_scope or not support:
        return out_of_scope_answer(result, corpus, lang), [], "out_of_scope"

    citations, cards = _cards(support, corpus, lang)
    lead_hit = support[0]
    if len(citations) > 1 and result.analysis.wants_list:
        tags = [task_tag(c.task, lang) if c.task is not None else section_tag(corpus.section(c.section_id), lang)
                for c in citations]
        lead = (f"方案中有{len(tags)}处内容与此相关：{''.join(tags)}。" if lang == "zh"
                else f"The plan addresses this in {len(tags)} places: {' '.join(tags)}.")
    elif lead_hit.task is not None:
        alignment = lead_hit.alignment
        if result.coverage == "partial":  # never "Yes": name what the plan says, then what it does not
            alignment = min(alignment or 0.0, YES_ALIGNMENT - 0.01) if result.decision.missing else 0.0
        lead = _task_lead(corpus.task(lead_hit.task), question, lang, lead_hit.quote.get(lang, 0), alignment)
    else:
        lead = _section_lead(corpus.section(lead_hit.section_id), lang, lead_hit.quote.get(lang, 0))
    parts = [lead, *cards]
    if result.coverage == "partial":
        parts.insert(1, _missing_line(result, lang))
    return "\n\n".join(parts), citations, "extractive" if result.coverage == "full" else "partial"
