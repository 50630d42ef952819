"""Index units: every annex task and every body section, as llama-index nodes.

A unit is what search returns and what answers cite. Headings are never units of their own
(short title units attract dense retrievers and push real answers down); they travel as
context inside their section. Each unit has a Chinese and an English *view*: dense
retrievers embed both and keep the better score per unit, so an English question can meet
the English rendering and a Chinese one the original wording.
"""

from __future__ import annotations

from dataclasses import dataclass

from llama_index.core.schema import TextNode

from assistant.ingest.knowledge import Knowledge
from assistant.ingest.library import Library, document_info
from assistant.ingest.models import Corpus, Section, Task

VIEWS = ("zh", "en")


@dataclass(frozen=True)
class View:
    unit_id: str
    lang: str
    text: str


def task_id(number: int, prefix: str = "") -> str:
    """``task:N``; ``prefix`` namespaces the units of a document other than the primary one."""
    return f"{prefix}task:{number}"


def section_id(section: str, prefix: str = "") -> str:
    return f"{prefix}section:{section}"


def _section_label(section: Section) -> str:
    return " / ".join(section.heading_path)


def task_views(task: Task, prefix: str = "") -> list[View]:
    """The task text in both languages (a document without English renderings has no English view).
    (Prefixing the category was measured on the dev split: no better for USE, clearly worse for e5 on
    English questions, so the views stay plain.)"""
    uid = task_id(task.number, prefix)
    return [View(uid, "zh", task.text)] + ([View(uid, "en", task.text_en)] if task.text_en else [])


def section_views(section: Section, prefix: str = "") -> list[View]:
    uid = section_id(section.id, prefix)
    headings = "，".join(section.heading_path[1:]) or section.heading_path[0]
    views = [View(uid, "zh", f"{headings}：{section.text}")]
    if section.text_en:
        views.append(View(uid, "en", f"{section.heading_en}: {section.text_en}"))
    return views


def unit_nodes(corpus: Corpus, prefix: str = "") -> list[TextNode]:
    """One llama-index node per unit, with the metadata answers and citations need (its document too)."""
    document = document_info(corpus.meta)
    nodes: list[TextNode] = []
    for task in corpus.tasks:
        nodes.append(TextNode(
            id_=task_id(task.number, prefix), text=task.text,
            metadata={"kind": "task", "task": task.number, "category_no": task.category_no,
                      "category": task.category, "category_en": task.category_en, "text_en": task.text_en,
                      "differentiated": task.differentiated, "section": task.category, "document": document},
        ))
    for section in corpus.sections:
        nodes.append(TextNode(
            id_=section_id(section.id, prefix), text=section.text,
            metadata={"kind": "section", "task": None, "section_id": section.id,
                      "heading_path": section.heading_path, "heading_en": section.heading_en,
                      "text_en": section.text_en or None, "tasks": section.tasks,
                      "section": _section_label(section), "document": document},
        ))
    return nodes


def library_nodes(library: Library) -> list[TextNode]:
    """The units of every document, the primary plan's first (their positions are as they always were)."""
    return [node for doc in library.documents for node in unit_nodes(doc.corpus, doc.prefix)]


def library_views(library: Library) -> list[View]:
    return [view for doc in library.documents for view in unit_views(doc.corpus, doc.prefix)]


def metadata_views(corpus: Corpus, prefix: str = "") -> list[View]:
    """The document's facts (number, issuer, meeting, dates) as extra views of the sections that
    carry them, so "这个文件什么时候印发的" meets the closing block, not a task about dates."""
    meta = corpus.meta
    views: list[View] = []
    if corpus.section("notice"):
        basis = "、".join(f"《{b.title}》（{b.number}）" for b in meta.basis)
        views.append(View(section_id("notice", prefix), "zh",
                          f"文件文号{meta.doc_number}，发文机关{meta.issuer}，标题{meta.title}，"
                          f"经{meta.approved_by or ''}研究通过，公开方式：{meta.disclosure or ''}。依据{basis}。"))
        if meta.title_en:  # a document without English annotations has no English rendering of its title
            views.append(View(section_id("notice", prefix), "en",
                              f"Document number {meta.doc_number}, issued by the {meta.issuer_en}: {meta.title_en}. "
                              f"Approved at the municipal government executive meeting ({meta.approved_by}); "
                              f"disclosure: {meta.disclosure}."))
    if corpus.section("distribution") and meta.printed:
        printed = meta.printed
        date_zh = f"{printed.year}年{printed.month}月{printed.day}日"
        views.append(View(section_id("distribution", prefix), "zh",
                          f"印发日期：{date_zh}，由{meta.issuing_office or ''}印发；"
                          f"抄送{'、'.join(meta.cc)}；发送有关单位。"))
        views.append(View(section_id("distribution", prefix), "en",
                          f"Date of issue: printed and issued on {printed:%d %B %Y} ({printed.isoformat()}); "
                          "copied to the units concerned."))
    return views


def unit_views(corpus: Corpus, prefix: str = "") -> list[View]:
    views = [v for task in corpus.tasks for v in task_views(task, prefix)]
    views += [v for section in corpus.sections for v in section_views(section, prefix)]
    return views + metadata_views(corpus, prefix)


def knowledge_views(knowledge: Knowledge, unit_ids: list[str]) -> list[View]:
    """The reviewed expansion of each unit as views of it: its explanation in both languages and
    every example question, each embedded on its own (a question meets the nearest way of asking)."""
    views: list[View] = []
    for uid in unit_ids:
        unit = knowledge.get(uid)
        if unit is None:
            continue
        views += [View(uid, "zh", unit.explain_zh), View(uid, "en", unit.explain_en)]
        views += [View(uid, lang, question) for lang, question in unit.questions()]
    return views


def domain_stopwords(corpus: Corpus) -> frozenset[str]:
    """Words every unit is implicitly about: the issuing city ("厦门", "厦门市", "xiamen").

    They match a few units literally (lists of local agencies) and so pull those units up for
    any question that names the city; in this corpus they carry no information.
    """
    place = corpus.meta.issuer.removesuffix("人民政府")  # 厦门市人民政府 -> 厦门市
    words = {place, place.removesuffix("市"), "本市", "我市"}
    english = corpus.meta.issuer_en.split()
    if english:
        words.add(english[0].lower())  # "Xiamen Municipal People's Government" -> xiamen
    return frozenset(w for w in words if w)


def sparse_text(node: TextNode) -> str:
    """What BM25 indexes for a unit: the Chinese text, its heading or category, and the English."""
    meta = node.metadata
    if meta["kind"] == "task":
        parts = [meta["category"], node.text, meta["category_en"], meta["text_en"]]
    else:
        parts = [*meta["heading_path"][1:], node.text, meta["heading_en"], meta["text_en"] or ""]
    return "\n".join(p for p in parts if p)
