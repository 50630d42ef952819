"""Expected answer type: does the evidence hold the kind of fact the question asks for?

A classic question-answering check. "签证费多少钱？" asks for an amount of money, "最多停留几天？"
for a duration, "哪天开始？" for a date: when the best units contain no amount, duration or date,
the plan mentions the topic but does not answer the question. The scope model uses the result
as one more piece of evidence. The patterns are general interrogative forms of Chinese and
English, not words of particular questions.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

_NUM = r"(?:\d+(?:\.\d+)?|[一二两三四五六七八九十百千万]+)"

QUESTION_PATTERNS: dict[str, re.Pattern[str]] = {
    "money": re.compile(
        r"多少钱|费用|收费|(?:交|缴|付|花)多少|多少(?:费|元|万)|补贴多少|奖励多少|贴息|价格|"
        r"\bhow much (?:does|do|is|will|would)?\s*(?:it )?(?:cost|charge|pay)|\bfees?\b|\bcosts?\b|"
        r"\bprice\b|\bsubsid(?:y|ies)\b|\bgrant amount", re.IGNORECASE),
    "duration": re.compile(
        r"多久|多长时间|几天|几个月|几年|多少天|多少个?工作日|多少年|期限多长|"
        r"\bhow long\b|\bhow many (?:days|weeks|months|years|working days)\b|\bprocessing time\b",
        re.IGNORECASE),
    "date": re.compile(
        r"哪天|哪一天|什么时候|何时|哪年|几月|日期|"
        r"\bwhen (?:exactly|will|does|did|was|is)\b|\bwhat date\b|\bwhich (?:day|date|year)\b",
        re.IGNORECASE),
    "quantity": re.compile(
        r"多少|几个|几家|几条|比例|上限|下限|最低|最高|限额|额度|配额|门槛|"
        r"\bhow many\b|\bhow much\b|\bwhat (?:percentage|share|ratio|rate)\b|\bcap\b|\blimit\b|"
        r"\bminimum\b|\bmaximum\b|\bquota\b|\bthreshold\b", re.IGNORECASE),
}

EVIDENCE_PATTERNS: dict[str, re.Pattern[str]] = {
    "money": re.compile(rf"{_NUM}\s*(?:元|万元|亿元|美元)|\b(?:rmb|yuan|usd|us\$)\b|[¥$]\s*\d", re.IGNORECASE),
    "duration": re.compile(
        rf"{_NUM}\s*(?:个)?(?:天|日|周|月|年)(?:以内|内|以上)?|\b\d+\s*(?:days?|weeks?|months?|years?)\b",
        re.IGNORECASE),
    "date": re.compile(r"\d{4}年\d{1,2}月(?:\d{1,2}日)?|\b\d{1,2} \w+ \d{4}\b|\b\w+ \d{1,2}, \d{4}\b"),
    "quantity": re.compile(rf"\d+(?:\.\d+)?\s*(?:%|％)|{_NUM}\s*(?:项|家|个|条|倍|次)|\b\d+(?:\.\d+)?\s*(?:%|percent)",
                           re.IGNORECASE),
}


def expected_types(question: str) -> set[str]:
    """The kinds of fact the question asks for (empty for yes/no and open questions)."""
    found = {kind for kind, pattern in QUESTION_PATTERNS.items() if pattern.search(question)}
    if found & {"money", "duration", "date"}:
        found.discard("quantity")  # "多少钱" and "多少天" are more specific than "多少"
    return found


def unmet_types(question: str, evidence: Iterable[str]) -> set[str]:
    """Expected kinds of fact that none of the evidence texts contains."""
    texts = list(evidence)
    return {kind for kind in expected_types(question)
            if not any(EVIDENCE_PATTERNS[kind].search(text) for text in texts)}
