"""Parse a pilot-plan document (notice + plan body + annex task table) into a corpus.

The shape is the one Chinese municipal governments use for 服务业扩大开放综合试点 plans:
a 文件 header, a document number, a 关于印发…的通知 notice, the plan body with 一、/（一）
headings, an 附件 table of numbered tasks grouped under 一、 category rows, and a
closing block (有关单位, 抄送, office, printing date). Nothing here knows how many tasks
or categories a plan has; it validates what it reads and stops with the source line
when numbering is broken, never dropping content silently.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date

from assistant.ingest.models import BasisDocument, Category, Corpus, DocumentMeta, Section, Task
from assistant.text import CHINESE_NUMERAL_CHARS, chinese_to_int, squeeze_cjk_spaces


class CorpusError(ValueError):
    """The source does not have the expected shape; the message names the problem and line."""

    def __init__(self, message: str, line: int | None = None) -> None:
        self.line = line
        super().__init__(f"line {line}: {message}" if line else message)


# --- patterns ------------------------------------------------------------------------
_N = f"[{CHINESE_NUMERAL_CHARS}]+"
TOP_HEADING = re.compile(f"^({_N})、(.+)$")
SUB_HEADING = re.compile(f"^[（(]({_N})[）)](.+)$")
DOC_NUMBER = re.compile(r"^\S{1,8}〔\d{4}〕\d+号$")
TASK_ROW = re.compile(r"^(\d+)(?:\s+(.*))?$")
TABLE_HEADER = re.compile(r"^序号\s+\S+")
ANNEX_MARK = re.compile(r"^附件\s*\d*$")
ANNEX_REFERENCE = re.compile(r"^附件\s*\d*[：:]\s*(.+)$")
DISCLOSURE = re.compile(r"^[（(]此件(.+?)[）)]$")
PRINTED = re.compile(r"^(\d{4})年(\d{1,2})月(\d{1,2})日印发$")
RELATED_UNITS = re.compile(r"^有关单位[：:]")
CC = re.compile(r"^抄送[：:]")
MEETING = re.compile(r"(第\d+次[^，。,；;]{0,20}?会议)")
BASIS = re.compile(r"《([^《》]+?(?:〈[^〈〉]*〉[^《》]*?)*)》[（(]([^（）()]*?〔\d{4}〕\d+号)[）)]")
QUOTED_TITLE = re.compile(r"《([^《》]+)》")

# A paragraph that ends in one of these is complete; anything else was cut by a page break.
TERMINAL = tuple("。！？；：…!?;:")
CLOSERS = tuple("”’」』")


@dataclass(frozen=True)
class Line:
    number: int  # 1-based in the source
    text: str


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def ends_sentence(text: str) -> bool:
    """True when ``text`` ends a sentence (or a self-contained bracketed note)."""
    stripped = text.rstrip()
    while stripped.endswith(CLOSERS):
        stripped = stripped[:-1]
    if stripped.endswith(TERMINAL):
        return True
    # "（此件主动公开）" style notes are complete; a clause ending in ")" inside prose is not.
    return text.startswith(("（", "(")) and text.endswith(("）", ")"))


def join_fragments(left: str, right: str) -> str:
    """Join two pieces of one sentence cut by a page break; Latin words keep a space."""
    if left and right and left[-1].isascii() and left[-1].isalnum() and right[0].isascii() and right[0].isalnum():
        return f"{left} {right}"
    return left + right


def is_heading(text: str) -> bool:
    return bool(TOP_HEADING.match(text) or SUB_HEADING.match(text))


def repair_paragraphs(pieces: Sequence[Line]) -> list[Line]:
    """Merge pieces cut by page breaks: a non-heading piece that does not end a sentence
    continues into the next non-heading piece. Complete paragraphs are never merged."""
    repaired: list[Line] = []
    for piece in pieces:
        previous = repaired[-1] if repaired else None
        if (
            previous is not None
            and not is_heading(previous.text)
            and not is_heading(piece.text)
            and not ends_sentence(previous.text)
        ):
            repaired[-1] = Line(previous.number, join_fragments(previous.text, piece.text))
        else:
            repaired.append(piece)
    return repaired


def _clean_lines(text: str) -> list[Line]:
    text = text.replace("\r\n", "\n").replace("\r", "\n").lstrip("\ufeff")
    return [Line(i, line.rstrip()) for i, line in enumerate(text.split("\n"), start=1)]


def _non_blank(lines: Iterable[Line]) -> list[Line]:
    return [Line(ln.number, ln.text.strip()) for ln in lines if ln.text.strip()]


def _split_list(text: str, separators: str = "、，,") -> list[str]:
    return [item.strip(" 。.") for item in re.split(f"[{separators}]", text) if item.strip(" 。.")]


# --- front matter ---------------------------------------------------------------------
def _parse_front(lines: list[Line]) -> tuple[dict, int]:
    """Read header, number, notice title, addressees, notice and disclosure.

    Returns the partial metadata and the index (into ``lines``) of the plan title line.
    """
    meta: dict = {"notice": []}
    idx = 0
    while idx < len(lines):
        line = lines[idx]
        text = squeeze_cjk_spaces(line.text)
        if "issuer" not in meta and text.endswith("文件") and len(text) <= 30:
            meta["issuer"] = text.removesuffix("文件")
        elif "doc_number" not in meta and DOC_NUMBER.match(text):
            meta["doc_number"] = text
        elif "title" not in meta and "印发" in text and text.endswith("通知"):
            meta["title"] = text
        elif DISCLOSURE.match(text):
            meta["disclosure"] = DISCLOSURE.match(text).group(1)
            meta["disclosure_line"] = line
            idx += 1
            break
        elif "title" in meta:
            meta["notice"].append(line)
            if is_heading(text):
                raise CorpusError("plan body heading found before the notice ended (no （此件…） line)", line.number)
        idx += 1
    else:
        raise CorpusError("no disclosure line such as （此件主动公开） closing the notice")
    for key, what in (("issuer", "issuing body header (…文件)"), ("doc_number", "document number (…〔YYYY〕N号)"),
                      ("title", "notice title (…关于印发…的通知)")):
        if key not in meta:
            raise CorpusError(f"missing {what} before the plan")
    if idx >= len(lines):
        raise CorpusError("document ends after the notice: no plan body")
    return meta, idx


# --- annex ------------------------------------------------------------------------------
def _task_row(row: re.Match[str], line: Line, tasks: list[Task], categories: list[Category]) -> Task:
    """One numbered task row, checked against the numbering so far."""
    number = int(row.group(1))
    expected = tasks[-1].number + 1 if tasks else 1
    if number != expected:
        seen = next((t for t in tasks if t.number == number), None)
        if seen:
            raise CorpusError(f"duplicate task number {number} (first at line {seen.line})", line.number)
        raise CorpusError(f"gap in task numbering: expected {expected}, found {number}", line.number)
    if not categories:
        raise CorpusError(f"task {number} appears before any category row", line.number)
    category_row = categories[-1]
    return Task(number=number, category_no=category_row.number, category=category_row.title,
                text=(row.group(2) or "").strip(), line=line.number)


def _parse_annex(lines: list[Line]) -> tuple[list[Category], list[Task], str | None]:
    categories: list[Category] = []
    tasks: list[Task] = []
    title: str | None = None
    for line in lines:
        text = line.text.strip()
        if not text or ANNEX_MARK.match(text) or TABLE_HEADER.match(text):
            continue
        if category := TOP_HEADING.match(text):
            number = len(categories) + 1
            ordinal_value = chinese_to_int(category.group(1))
            if ordinal_value != number:
                kind = "duplicate" if ordinal_value < number else "gap in"
                raise CorpusError(
                    f"{kind} category numbering: expected {number}, found {category.group(1)}、", line.number
                )
            categories.append(Category(number=number, ordinal=category.group(1),
                                       title=category.group(2).strip(), line=line.number))
            continue
        if row := TASK_ROW.match(text):
            tasks.append(_task_row(row, line, tasks, categories))
            continue
        if not tasks and not categories and title is None:
            title = squeeze_cjk_spaces(text)
            continue
        if tasks and tasks[-1].category_no == len(categories):
            # A page break cut the task: the text continues on this line.
            last = tasks[-1]
            tasks[-1] = last.model_copy(update={"text": join_fragments(last.text, text)})
            continue
        raise CorpusError(f"unexpected line in the annex: {text[:40]!r}", line.number)

    if not tasks:
        raise CorpusError("the annex has no numbered tasks")
    for task in tasks:
        if not task.text:
            raise CorpusError(f"task {task.number} has no text", task.line)
    used = {t.category_no for t in tasks}
    for category_row in categories:
        if category_row.number not in used:
            raise CorpusError(f"category {category_row.label} has no tasks", category_row.line)
    return categories, tasks, title


# --- closing block --------------------------------------------------------------------------
def wrapped_blocks(lines: Sequence[Line]) -> list[Line]:
    """Consecutive non-blank lines are one paragraph wrapped by layout; blank lines separate."""
    blocks: list[Line] = []
    open_block = False
    for line in lines:
        text = line.text.strip()
        if not text:
            open_block = False
        elif open_block:
            blocks[-1] = Line(blocks[-1].number, join_fragments(blocks[-1].text, text))
        else:
            blocks.append(Line(line.number, text))
            open_block = True
    return blocks


def _parse_closing(blocks: Sequence[Line]) -> dict:
    """Read 有关单位 / 抄送 / issuing office / printing date from the closing paragraphs."""
    meta: dict = {}
    for block in blocks:
        text = block.text
        if RELATED_UNITS.match(text):
            meta["related_units"] = _split_list(re.split(r"[：:]", text, maxsplit=1)[1])
        elif CC.match(text):
            meta["cc"] = _split_list(re.split(r"[：:]", text, maxsplit=1)[1])
        elif printed := PRINTED.match(text):
            meta["printed"] = date(*(int(g) for g in printed.groups()))
        else:
            meta.setdefault("issuing_office", squeeze_cjk_spaces(text))
    return meta


def _split_document(lines: list[Line]) -> tuple[list[Line], list[Line], list[Line]]:
    """Cut the lines into body (before 附件), annex and closing block."""
    annex_start = next((i for i, ln in enumerate(lines) if ANNEX_MARK.match(ln.text.strip())), None)
    if annex_start is None:
        raise CorpusError("no annex (a line reading 附件) with the task table")
    closing_start = next(
        (i for i in range(annex_start, len(lines))
         if RELATED_UNITS.match(lines[i].text.strip()) or CC.match(lines[i].text.strip())
         or PRINTED.match(lines[i].text.strip())),
        len(lines),
    )
    return lines[:annex_start], lines[annex_start:closing_start], lines[closing_start:]


# --- body ----------------------------------------------------------------------------------
def _parse_body(pieces: list[Line], plan_title: str) -> tuple[list[Section], str | None]:
    sections: list[Section] = []
    annex_reference: str | None = None
    top: tuple[int, str] | None = None
    sub: tuple[int, str] | None = None
    current: Section | None = None

    def open_section(section_id: str, path: list[str], line: int) -> Section:
        section = Section(id=section_id, heading_path=path, paragraphs=[], line=line)
        sections.append(section)
        return section

    current = open_section("preamble", [plan_title], pieces[0].number if pieces else 0)
    for piece in repair_paragraphs(pieces):
        text = piece.text
        if ref := ANNEX_REFERENCE.match(text):
            annex_reference = squeeze_cjk_spaces(ref.group(1))
            continue
        if match := TOP_HEADING.match(text):
            top, sub = (chinese_to_int(match.group(1)), text), None
            current = open_section(str(top[0]), [plan_title, text], piece.number)
        elif match := SUB_HEADING.match(text):
            if top is None:
                raise CorpusError(f"sub-heading {text[:20]!r} before any top-level heading", piece.number)
            sub = (chinese_to_int(match.group(1)), text)
            section_id = f"{top[0]}.{sub[0]}"
            if current.id == str(top[0]) and not current.paragraphs:
                sections.remove(current)  # the top heading only introduces its sub-sections
            current = open_section(section_id, [plan_title, top[1], text], piece.number)
        else:
            current.paragraphs.append(text)
    sections = [s for s in sections if s.paragraphs or s.id != "preamble"]
    seen: dict[str, Section] = {}
    for section in sections:
        if section.id in seen:
            raise CorpusError(f"duplicate heading number for section {section.id}", section.line)
        seen[section.id] = section
        if not section.paragraphs and section.id != "preamble":
            raise CorpusError(f"section {' / '.join(section.heading_path[1:])} has no text", section.line)
    return sections, annex_reference


def parse_document(text: str) -> Corpus:
    """Parse the whole source text into a validated :class:`Corpus`."""
    lines = _clean_lines(text)
    body_lines, annex_lines, closing_lines = _split_document(lines)
    non_blank_body = _non_blank(body_lines)
    front, title_idx = _parse_front(non_blank_body)

    notice_text = repair_paragraphs(front["notice"])
    quoted = QUOTED_TITLE.search(" ".join(ln.text for ln in notice_text))
    plan_title = squeeze_cjk_spaces(non_blank_body[title_idx].text)
    if quoted and squeeze_cjk_spaces(quoted.group(1)) != plan_title:
        raise CorpusError(
            f"expected the plan title 《{quoted.group(1)}》 after the notice, found {plan_title[:30]!r}",
            non_blank_body[title_idx].number,
        )
    body_pieces = non_blank_body[title_idx + 1:]
    if not body_pieces:
        raise CorpusError("the plan has no body text", non_blank_body[title_idx].number)
    sections, annex_reference = _parse_body(body_pieces, plan_title)

    notice_paragraphs = [ln.text for ln in notice_text] + [front["disclosure_line"].text]
    notice = Section(id="notice", heading_path=[front["title"]], paragraphs=notice_paragraphs,
                     line=notice_text[0].number if notice_text else front["disclosure_line"].number)
    categories, tasks, annex_title = _parse_annex(annex_lines)

    closing = wrapped_blocks(closing_lines)
    meta_fields = _parse_closing(closing)
    all_sections = [notice, *sections]
    if closing:
        all_sections.append(Section(id="distribution", heading_path=["有关单位及抄送"],
                                    paragraphs=[b.text for b in closing], line=closing[0].number))

    notice_body = " ".join(notice_paragraphs)
    preamble = next((s.text for s in sections if s.id == "preamble"), "")
    meeting = MEETING.search(notice_body)
    addressee_line = next((p for p in notice_paragraphs if p.endswith(("：", ":"))), None)
    meta = DocumentMeta(
        doc_number=front["doc_number"],
        title=front["title"],
        plan_title=plan_title,
        issuer=front["issuer"],
        disclosure=front.get("disclosure"),
        approved_by=meeting.group(1) if meeting else None,
        addressees=_split_list(addressee_line.rstrip("：:"), "，,") if addressee_line else [],
        basis=[BasisDocument(number=n, title=t) for t, n in BASIS.findall(preamble)],
        annex_title=annex_title or annex_reference,
        **meta_fields,
    )
    return Corpus(meta=meta, sections=all_sections, categories=categories, tasks=tasks,
                  source_sha256=sha256_text(text))
