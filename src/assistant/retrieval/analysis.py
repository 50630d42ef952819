"""Stage 1, query analysis: normalisation, language, task references, focus, asked detail, places.

Everything later stages need to know about the question itself is computed once here and
passed on as one frozen :class:`QueryAnalysis`.

*Focus*: an enterprise often describes itself before it asks ("We're a Dutch studio making
mobile games, ten people, based in Rotterdam — could we run our overseas publishing from
Xiamen?"). The asking clause is the last clause that asks (by the question cues of
``ingest/annotations/vocabulary/question_cues.json``); retrieval weighs it above the context
clauses by scoring the whole question and the asking clause and averaging the two.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from assistant.ingest.vocabulary import QuestionCues
from assistant.retrieval.lookup import Lookup, find_task_references
from assistant.retrieval.pinyin import PinyinReader
from assistant.retrieval.scope.answer_types import AnswerTypeCheck
from assistant.retrieval.scope.places import PlaceCheck
from assistant.text import detect_language

_CLAUSE_END = re.compile(r"(?<=[，,；;。!?！？—:：])|(?<=\.)\s+|\s+-\s+")
# Shorter questions have no context to set aside.
FOCUS_MIN_CHARS = {"zh": 24, "en": 70}
FOCUS_MIN_TOPIC_WORDS = 3


@dataclass(frozen=True)
class QueryAnalysis:
    """What the question is, before any retrieval."""

    raw: str
    text: str  # normalised and cut to the retrieval limit
    lang: str
    lookup: Lookup
    focus: str | None = None  # the asking clause of a long question
    asked: frozenset[str] = field(default_factory=frozenset)  # detail types asked for (fee, date, …)
    places: frozenset[str] = field(default_factory=frozenset)  # places the plan never names
    wants_list: bool = False  # "哪些…", "all the visa measures": an answer may cite more units
    also: tuple[str, ...] = ()  # more texts the retrievers score (a follow-up's own words)
    pinyin: bool = False  # ``text`` is the question's pinyin read back as Chinese words

    @property
    def scope_text(self) -> str:
        """What the answerability evidence reads: the asking clause of a long question, else all of it
        (the business an enterprise describes is context, not something the plan must cover)."""
        return self.focus or self.text

    @property
    def retrieval_texts(self) -> list[str]:
        """The texts the retrievers score (the question, then its asking clause)."""
        texts = [self.text] if not self.focus else [self.text, self.focus]
        return texts + [t for t in self.also if t not in texts]


def normalise_query(query: str) -> str:
    """NFKC (full-width digits and letters to ASCII) and collapsed whitespace."""
    return " ".join(unicodedata.normalize("NFKC", query).split())


class QueryAnalyzer:
    """Analyses questions against one corpus's vocabulary (immutable; safe to share across threads)."""

    def __init__(self, max_chars: int, max_task: int, cues: QuestionCues, answer_types: AnswerTypeCheck,
                 places: PlaceCheck, focus: bool = True, topic_words: Callable[[str], int] | None = None,
                 refers_back: re.Pattern[str] | None = None, pinyin: PinyinReader | None = None,
                 home: frozenset[str] = frozenset()) -> None:
        self.pinyin = pinyin
        # the plan's own city ("厦门", "xiamen"): a question that names it is about it
        self._home = re.compile("|".join(re.escape(h) for h in sorted(home, key=len, reverse=True)),
                                re.IGNORECASE) if home else None
        self.use_focus = focus
        self.topic_words = topic_words  # how many topic (content) words a clause holds
        self.refers_back = refers_back  # a clause that points back ("its", "该试点") leans on the context
        self.max_chars = max_chars
        self.max_task = max_task
        self.answer_types = answer_types
        self.places = places
        self._zh_cue = re.compile("|".join(re.escape(c) for c in cues.zh))
        self._en_cue = re.compile(r"\b(?:" + "|".join(re.escape(c) for c in cues.en) + r")\b", re.IGNORECASE)
        self._list = {"zh": re.compile(cues.list_zh), "en": re.compile(cues.list_en, re.IGNORECASE)}
        # "方案里有几条相关的", "how many measures": counts the plan's own items, which the cited list answers
        self._counts_items = {lang: re.compile(cues.structure.get(f"plan_items_{lang}", "(?!)"), re.IGNORECASE)
                              for lang in ("zh", "en")}

    def analyse(self, query: str, use_lookup: bool = True, also: tuple[str, ...] = (),
                max_task: int | None = None, details: bool = True) -> QueryAnalysis:
        """``max_task``: the last task of the document a lookup reads in (default: the primary plan's).

        ``details=False`` leaves out what only the stages after retrieval read (asked detail types,
        unknown places, list questions): the pipeline adds them (:meth:`with_details`) while e5
        encodes, rather than before it starts.
        """
        text = normalise_query(query)[: self.max_chars]
        reading = self.read_pinyin(text)
        text = reading or text
        lang = detect_language(text)
        last = self.max_task if max_task is None else max_task
        lookup = find_task_references(text, last) if use_lookup and text else Lookup()
        focus = self.focus(text, lang) if self.use_focus else None
        analysis = QueryAnalysis(raw=query, text=text, lang=lang, lookup=lookup, focus=focus,
                                 also=tuple(self.read_pinyin(t) or t for t in
                                            (normalise_query(t)[: self.max_chars] for t in also)),
                                 pinyin=reading is not None)
        return self.with_details(analysis) if details else analysis

    def with_details(self, analysis: QueryAnalysis) -> QueryAnalysis:
        """``analysis`` with the asked detail types, the unknown places and whether it wants a list."""
        text = analysis.text
        asked = self.answer_types.expected(text)
        if self._counts_items["zh" if analysis.lang == "zh" else "en"].search(text):
            asked.discard("quantity")
        return replace(analysis, asked=frozenset(asked),
                       places=frozenset(self.asked_places(text, analysis.lang)),
                       wants_list=bool(self._list["zh" if analysis.lang == "zh" else "en"].search(text)))

    def asked_places(self, text: str, lang: str) -> set[str]:
        """Other places the question asks about. One named only in a clause that gives context, in a
        question about the plan's own city ("在高雄干了十几年，想在厦门开诊所，行不行？", "our parent is
        in Shenzhen; can we open a branch in Xiamen?"), is where the asker comes from, not what it asks."""
        places = self.places.unknown(text)
        if not places or self._home is None or not self._home.search(text):
            return places
        clauses = [c.strip() for c in _CLAUSE_END.split(text) if c and c.strip(" ，,；;。.!?！？—:：-")]
        if len(clauses) < 2:
            return places
        # the clauses that end in a question mark ask (else the last one): "十几年" or "is" do not
        asking = [c for c in clauses if c.endswith(("?", "？"))] or clauses[-1:]
        return {p for p in places if any(p in c.lower() for c in asking)}

    def read_pinyin(self, text: str) -> str | None:
        """``text`` with its pinyin runs read as Chinese words, or None (no reader, no pinyin)."""
        if self.pinyin is None or not text:
            return None
        reading = self.pinyin.read(text)
        return reading[: self.max_chars] if reading else None

    def asks(self, clause: str, lang: str) -> bool:
        if clause.rstrip().endswith(("?", "？")):
            return True
        cue = self._zh_cue if lang == "zh" else self._en_cue
        return bool(cue.search(clause))

    def focus(self, text: str, lang: str) -> str | None:
        """The last asking clause of a long question, or None when the question is one clause."""
        if len(text) < FOCUS_MIN_CHARS["zh" if lang == "zh" else "en"]:
            return None
        clauses = [c.strip() for c in _CLAUSE_END.split(text) if c and c.strip(" ，,；;。.!?！？—:：-")]
        if len(clauses) < 2:
            return None
        asking = [c for c in clauses if self.asks(c, lang)]
        if not asking:
            return None
        focus = asking[-1]
        # the asking clause must carry a topic of its own: "are antiques included?" or "该试点还会深化吗"
        # lean on the context, which then is the question
        if self.refers_back is not None and self.refers_back.search(focus):
            return None
        if self.topic_words is not None and self.topic_words(focus) < FOCUS_MIN_TOPIC_WORDS:
            return None
        return focus if focus != text else None
