"""Corpus facts answered from structure: counts and lists the annex states by its own layout.

"一共多少项任务？", "附件分几类？", "Which are the differentiated tasks?", "金融方面有哪些任务？": the
answer is the parsed corpus (111 tasks in 14 categories, the 5 differentiated tasks, the tasks of
a category), not whatever passages retrieval happens to rank. The question's form is read with the
``structure`` cues of ``ingest/annotations/vocabulary/question_cues.json``; which category a
"tasks of …" question means is the category most of the best-ranked tasks belong to (retrieval
chooses the category, the corpus gives its complete list).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Literal

from assistant.ingest.models import Corpus
from assistant.text import chinese_to_int

StructureKind = Literal["count", "categories", "differentiated", "category_tasks", "metadata"]
# What the document's metadata states, in the order an answer gives it, and the section each is printed in
METADATA_INTENTS = ("number", "issuer", "date", "meeting", "recipients", "basis")
METADATA_SECTIONS = {"number": "notice", "issuer": "distribution", "date": "distribution", "meeting": "notice",
                      "recipients": "notice", "basis": "preamble"}
META_SECTIONS = ("notice", "preamble", "distribution")  # where retrieval meets a question about the document
# A "tasks of …" question names a category when this many of the five best tasks belong to it.
CATEGORY_VOTES = 3


@dataclass(frozen=True)
class StructureFacts:
    """Stage output: which structural fact is asked, and the units that state it."""

    kind: StructureKind
    units: tuple[str, ...]  # what the answer cites, in order
    category: int | None = None
    document: str | None = None  # the number of the document whose annex it describes
    intents: tuple[str, ...] = ()  # metadata: what is asked of the document (``METADATA_INTENTS``)


class StructureReader:
    """Structural facts of one document's annex; ``prefix`` namespaces the unit ids it cites (none for
    the primary plan)."""

    def __init__(self, corpus: Corpus, cues: dict[str, str], tokens: Callable[[str], frozenset[str]],
                 prefix: str = "") -> None:
        self.corpus = corpus
        self.prefix = prefix
        self.p = {k: re.compile(v, re.IGNORECASE) for k, v in cues.items()}
        self.tokens = tokens
        # the words of each category's title in both languages, less those every title shares
        titles = {c.number: tokens(f"{c.title} {c.title_en}") for c in corpus.categories}
        common = {t for t in set().union(*titles.values()) if sum(t in w for w in titles.values()) > 2}
        self.titles = {n: words - common for n, words in titles.items()}

    def _category_by_title(self, text: str) -> int | None:
        """The one category whose title shares the most words with the question ("金融类" -> 3)."""
        words = self.tokens(text)
        scores = {n: len(words & title) for n, title in self.titles.items()}
        best = max(scores.values(), default=0)
        winners = [n for n, score in scores.items() if score == best]
        return winners[0] if best and len(winners) == 1 else None

    def _category_named(self, text: str, lang: str) -> int | None:
        match = self.p[f"category_number_{lang}"].search(text)
        if not match:
            return None
        token = match.group(1)
        number = int(token) if token.isdigit() else chinese_to_int(token)
        return number if self.corpus.category(number) is not None else None

    def _share(self, category: int) -> float:
        """The category's share of the annex's tasks (what a vote for it would be by chance)."""
        return sum(t.category_no == category for t in self.corpus.tasks) / len(self.corpus.tasks)

    def _tasks_of(self, category: int) -> tuple[str, ...]:
        """Local ids (``read`` namespaces them)."""
        return tuple(f"task:{t.number}" for t in self.corpus.tasks if t.category_no == category)

    def read(self, text: str, lang: str, wants_list: bool, ranked_tasks: Sequence[int],
             ranked_sections: Sequence[str] = ()) -> StructureFacts | None:
        """The structural fact ``text`` asks for, or None for an ordinary question. ``ranked_sections``:
        the body sections among the best-ranked units (a metadata question must meet one of the
        notice, preamble or distribution block there)."""
        facts = self._read(text, lang, wants_list, ranked_tasks) or self._metadata(text, lang, ranked_sections)
        if facts is None:
            return None
        body = {f"section:{s.id}" for s in self.corpus.sections}  # a plan without 二（一）/（二） cites none
        units = tuple(self.prefix + u for u in facts.units if not u.startswith("section:") or u in body)
        return replace(facts, units=units, document=self.corpus.meta.doc_number)

    def _metadata(self, text: str, lang: str, ranked_sections: Sequence[str]) -> StructureFacts | None:
        """"这个文件的文号是多少", "When was the plan issued?": facts the parsed metadata states. Read
        only when the question names the document, asks one of those facts in so many words, and
        retrieval meets a section that prints them."""
        lang = "zh" if lang == "zh" else "en"
        if not self.p[f"metadata_document_{lang}"].search(text) or not any(s in META_SECTIONS for s in ranked_sections):
            return None
        intents = tuple(i for i in METADATA_INTENTS if self.p[f"metadata_{i}_{lang}"].search(text))
        if not intents:
            return None
        units = tuple(dict.fromkeys(f"section:{METADATA_SECTIONS[i]}" for i in intents))
        return StructureFacts("metadata", units, intents=intents)

    def _read(self, text: str, lang: str, wants_list: bool, ranked_tasks: Sequence[int]) -> StructureFacts | None:
        lang = "zh" if lang == "zh" else "en"
        body = ("section:2.1", "section:2.2")
        asks_tasks = bool(self.p[f"tasks_{lang}"].search(text))
        common = bool(self.p[f"common_{lang}"].search(text))
        differentiated = bool(self.p[f"differentiated_{lang}"].search(text))
        if common and (wants_list or asks_tasks):  # "共性任务和差异化任务分别多少项": the numbers 2.1 and 2.2 state
            return StructureFacts("count", body if differentiated else ("section:2.1",))
        if differentiated and (wants_list or asks_tasks):
            units = tuple(f"task:{t.number}" for t in self.corpus.tasks if t.differentiated)
            return StructureFacts("differentiated", ("section:2.2", *units))
        named = self._category_named(text, lang)
        if named is not None:
            return StructureFacts("category_tasks", self._tasks_of(named), named)
        if self.p[f"categories_{lang}"].search(text):
            return StructureFacts("categories", body)
        names_category = bool(self.p[f"category_word_{lang}"].search(text))
        # "贸易投资便利化这一大类有几项": a count by classifier counts tasks when a category is named
        counting = bool(self.p[f"count_{lang}"].search(text)
                        or (names_category and self.p[f"count_unit_{lang}"].search(text)))
        # "金融方面有哪些任务" names a category; "what measures are there for visas" names a topic
        if counting or (wants_list and asks_tasks and names_category):
            votes = Counter(self.corpus.task(n).category_no for n in ranked_tasks[:5] if self.corpus.task(n))
            category, count = votes.most_common(1)[0] if votes else (None, 0)
            if category is not None and count / sum(votes.values()) <= self._share(category):
                count = 0  # a small annex: most of any five tasks share a category, which then says nothing
            if names_category:
                category, count = self._category_by_title(text) or category, CATEGORY_VOTES
            if category is not None and count >= CATEGORY_VOTES:
                return StructureFacts("category_tasks", self._tasks_of(category), category)
            if counting:
                return StructureFacts("count", body)
        return None
