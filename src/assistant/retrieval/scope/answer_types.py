"""Expected answer type: does the evidence hold the kind of fact the question asks for?

A classic question-answering check. "签证费多少钱？" asks for an amount of money, "最多停留几天？"
for a duration, "哪天开始？" for a date: when the best units contain no amount, duration or date,
the plan mentions the topic but does not answer the question. The same holds for questions
asking how or where to apply, what conditions must be met, what incentive is paid or what
penalty applies: a plan says what will be opened or piloted, rarely any of these. The patterns
are general interrogative forms, kept as data in ``ingest/annotations/vocabulary/answer_types.json``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from assistant.ingest.vocabulary import AnswerTypes

# More specific kinds make a general one redundant ("多少钱", "多少天" are more than "多少").
_SUBSUMES = {"quantity": ("money", "duration", "date")}


@dataclass(frozen=True)
class DetailType:
    name: str
    label_zh: str
    label_en: str
    question: re.Pattern[str]
    evidence: re.Pattern[str]


class AnswerTypeCheck:
    """Which kinds of fact a question asks for, and which of them a set of texts states."""

    def __init__(self, answer_types: AnswerTypes) -> None:
        self.types = {t.name: DetailType(t.name, t.label_zh, t.label_en, re.compile(t.question, re.IGNORECASE),
                                         re.compile(t.evidence, re.IGNORECASE)) for t in answer_types.types}

    def expected(self, question: str) -> set[str]:
        """The kinds of fact the question asks for (empty for yes/no and open questions)."""
        found = {name for name, kind in self.types.items() if kind.question.search(question)}
        for general, specific in _SUBSUMES.items():
            if found & set(specific):
                found.discard(general)
        return found

    def unmet(self, question: str, evidence: Iterable[str], asked: set[str] | None = None) -> set[str]:
        """Expected kinds of fact that none of the evidence texts contains."""
        texts = list(evidence)
        asked = self.expected(question) if asked is None else asked
        return {name for name in asked if not any(self.types[name].evidence.search(t) for t in texts)}

    def label(self, name: str, lang: str) -> str:
        kind = self.types[name]
        return kind.label_zh if lang == "zh" else kind.label_en
