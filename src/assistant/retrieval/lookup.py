"""Exact task references in a question: 第17项, 第十七项, 任务17, 第17条, task 17, item #17, No. 17.

Only explicit references count: "106项共性试点任务" or "第145次会议" are not lookups.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from assistant.text import CHINESE_NUMERAL_CHARS, chinese_to_int

_NUM = rf"(\d{{1,4}}|[{CHINESE_NUMERAL_CHARS}]{{1,6}})"
_LIST = rf"{_NUM}(?:\s*(?:[、，,/&和及与跟]|以及|到|至|-|~|\band\b|\bor\b|\bto\b)\s*(?:第\s*)?{_NUM})*"

_ZH_PATTERNS = [
    # 第17项 / 第十七条 / 第16、17项 / 第17个任务 / 第17号任务
    re.compile(rf"第\s*(?P<nums>{_LIST})\s*(?:项|条|个任务|号任务|号|款)"),
    # 任务17 / 试点任务第17 / 序号17 / 编号17
    re.compile(rf"(?:任务|序号|编号)\s*(?:第|编号|序号|号|#|＃)?\s*(?P<nums>{_LIST})(?!\s*[项年月日%％次个])"),
    # 73号任务 / 17号那项 (a number, 号, then the word for a task: "88号文" is a document number)
    re.compile(rf"(?<![\d第〕\]])(?P<nums>{_LIST})\s*号\s*(?:任务|试点任务|那项|那条|项|条)"),
]
# a number ends where no digit or Latin letter follows ("No.99是啥": CJK letters are word characters)
_END = r"(?![0-9A-Za-z])"
_EN_PATTERNS = [
    re.compile(rf"\b(?:tasks?|items?|measures?|entry|entries)\s*(?:no\.?|number|#)?\s*(?P<nums>{_LIST}){_END}",
               re.IGNORECASE),
    re.compile(rf"(?:\bno\.|\bnumber|#|＃)\s*(?P<nums>{_LIST}){_END}", re.IGNORECASE),
]
_NUMBER_IN_LIST = re.compile(_NUM)
_RANGE = re.compile(rf"{_NUM}\s*(?:到|至|-|~|\bto\b)\s*(?:第\s*)?{_NUM}")


def _to_int(token: str) -> int:
    return int(token) if token.isdigit() else chinese_to_int(token)


def _numbers(span: str) -> list[int]:
    numbers: list[int] = []
    for match in _RANGE.finditer(span):
        low, high = _to_int(match.group(1)), _to_int(match.group(2))
        if 0 <= high - low <= 20:
            numbers.extend(range(low, high + 1))
    for token in _NUMBER_IN_LIST.findall(span):
        value = _to_int(token)
        if value not in numbers:
            numbers.append(value)
    return numbers


@dataclass
class Lookup:
    """Task numbers named in a question, split into those the annex has and those it does not."""

    requested: list[int] = field(default_factory=list)
    valid: list[int] = field(default_factory=list)
    invalid: list[int] = field(default_factory=list)
    pure: bool = False  # the question is nothing but the reference ("第17项是什么", "task 17")

    def __bool__(self) -> bool:
        return bool(self.requested)


_FILLER = re.compile(
    r"第|项|条|号|任务|附件|的|是|什么|啥|内容|具体|说|说说|讲讲|讲|看看|一下|查|查询|请问|请|帮我|我|想|"
    r"详细|原文|全文|呢|吗|了|\?|？|。|！|!|,|，|:|：|\s|"
    r"\b(?:what|is|it|do|does|say|says|read|reads|mean|means|cover|covers|show|me|the|task|tasks|item|items|no|number|about|tell|text|of|please|full|"
    r"details?|in|annex|a|an|and|#)\b|\.",
    re.IGNORECASE,
)


def _word_boundaries(question: str) -> set[int]:
    from assistant.text import jieba_module

    boundaries, position = {0}, 0
    for word in jieba_module().cut(question):
        position += len(word)
        boundaries.add(position)
    return boundaries


def _numeral_is_a_word(question: str, match: re.Match[str]) -> bool:
    """After 任务/序号/编号 a Chinese numeral must stand as a word of its own: "任务十七是什么" is a
    lookup, "任务一共有多少项" (一共 = in total) is not. Digits need no check."""
    if not re.search(f"[{CHINESE_NUMERAL_CHARS}]", match.group("nums")):
        return True
    return match.end("nums") in _word_boundaries(question)  # the numeral does not run into a word


def find_task_references(question: str, max_task: int) -> Lookup:
    """Parse explicit task references; numbers outside 1..max_task are reported as invalid."""
    requested: list[int] = []
    spans: list[tuple[int, int]] = []
    for pattern in (*_ZH_PATTERNS, *_EN_PATTERNS):
        for match in pattern.finditer(question):
            if any(start <= match.start() < end for start, end in spans):
                continue
            if pattern is _ZH_PATTERNS[1] and not _numeral_is_a_word(question, match):
                continue
            spans.append(match.span())
            for number in _numbers(match.group("nums")):
                if number not in requested:
                    requested.append(number)
    lookup = Lookup(requested=requested,
                    valid=[n for n in requested if 1 <= n <= max_task],
                    invalid=[n for n in requested if not 1 <= n <= max_task])
    if requested:
        rest = question
        for start, end in sorted(spans, reverse=True):
            rest = rest[:start] + rest[end:]
        lookup.pure = not _FILLER.sub("", rest).strip()
    return lookup
