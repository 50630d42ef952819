"""Stage 4, rerank and support: which of the best fused units actually answer the question.

Fused scores (RRF) rank well but say little about *which* of several similar tasks carries the
answer: "外资能办医院吗" finds the nursing-college task and the medical-institution task side by
side. This stage re-checks the head of the ranking against the question's own terms:

- a question word that names one of the plan's terms in everyday language (from the reviewed
  task knowledge: 医院 for 医疗机构, care home for 养老机构) counts with all that term's forms;
- every term is weighted by its rarity in the plan (IDF over the units, the shared analyser's tokens);
- a unit scores by its best clause (terms that meet in one clause belong together) plus half of
  all terms it holds anywhere.

The head is re-ordered by that alignment plus the fused score, and the units that clearly answer
are marked as support (what an answer cites); ``rerank=False`` skips the re-ordering (an ablation).
"""

from __future__ import annotations

import bisect
import math
import re
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from assistant.index.analyzer import CJK_RUN, TextAnalyzer

_CLAUSE = re.compile(r"[，,；;。.!?！？:：、（）()]")
_SENTENCE_END = re.compile(r"(?<=[。!?！？])|(?<=\.)\s+(?=[A-Z“\"(])")
# a form in more groups than this is too general to stand for any one of them (外资, foreign investment)
MAX_GROUPS_PER_FORM = 3
QUESTION_CACHE = 4096


@dataclass(frozen=True)
class Term:
    """One question term: the surface forms that count as it (Chinese substrings, English stem phrases)."""

    zh: tuple[str, ...]
    en: tuple[tuple[str, ...], ...]
    key: str


@dataclass(frozen=True)
class QuestionTerms:
    """A question's terms with their IDF weights: computed once per question, before the ranking
    exists (the pipeline does it while the dense encoders run)."""

    terms: tuple[Term, ...]
    weights: tuple[float, ...]

    @property
    def total(self) -> float:
        return sum(self.weights) or 1.0


def sentences(text: str) -> list[str]:
    """Split into sentences, keeping the end punctuation."""
    return [s.strip() for s in _SENTENCE_END.split(text) if s and s.strip()]


class _Text:
    """A text prepared for term matching: lower-cased, and its English stems."""

    __slots__ = ("lower", "stems")

    def __init__(self, text: str, analyzer: TextAnalyzer) -> None:
        self.lower = text.lower()
        self.stems = analyzer.token_set(text) if re.search(r"[a-z]", self.lower) else frozenset()


def _holds(term: Term, text: _Text) -> bool:
    return any(form in text.lower for form in term.zh) or any(all(s in text.stems for s in phrase)
                                                           for phrase in term.en)


class _UnitPostings:
    """Which units hold a term, for its IDF: ``_holds`` over every unit, answered from one joined
    text (a C substring search per Chinese form) and a bit set of units per English stem (an AND
    per phrase), since a question brings new terms and a Python loop over every unit for each cost
    ~1 ms a term."""

    _GAP = "\x00"  # joins the units' texts: no form holds it, so no match spans two units

    def __init__(self, units: Sequence[_Text]) -> None:
        self._size = len(units)
        self._plain = units if any(self._GAP in u.lower for u in units) else None  # then: the loop
        self._joined = self._GAP.join(u.lower for u in units)
        self._starts: list[int] = []
        offset = 0
        for unit in units:
            self._starts.append(offset)
            offset += len(unit.lower) + 1
        self._stems: dict[str, int] = {}  # stem -> bit set of the units holding it
        for number, unit in enumerate(units):
            for stem in unit.stems:
                self._stems[stem] = self._stems.get(stem, 0) | 1 << number

    def holding(self, term: Term) -> int:
        """How many units hold ``term`` (``_holds``)."""
        if self._plain is not None:
            return sum(1 for unit in self._plain if _holds(term, unit))
        everything = (1 << self._size) - 1
        found = 0
        for form in term.zh:
            found |= self._containing(form) if form else everything
        for phrase in term.en:
            held = everything
            for stem in phrase:
                held &= self._stems.get(stem, 0)
            found |= held
        return found.bit_count()

    def _containing(self, form: str) -> int:
        units = 0
        start = self._joined.find(form)
        while start >= 0:
            number = bisect.bisect_right(self._starts, start) - 1
            units |= 1 << number
            start = self._joined.find(form, self._starts[number + 1]) if number + 1 < self._size else -1
        return units


class ClauseRelevance:
    """IDF-weighted clause-level alignment between a question and unit texts (one per index)."""

    def __init__(self, analyzer: TextAnalyzer, unit_texts: Sequence[str],
                 thesaurus: Sequence[tuple[str, ...]] = ()) -> None:
        self.analyzer = analyzer
        self._units = [_Text(t, analyzer) for t in unit_texts]
        self._postings = _UnitPostings(self._units)
        self._idf: dict[str, float] = {}
        self._prepared: dict[str, tuple[_Text, list[_Text]]] = {}  # unit texts and sentences: a fixed set
        self._questions: OrderedDict[str, QuestionTerms] = OrderedDict()  # recent questions (LRU)
        self._lock = threading.Lock()
        groups_of: dict[str, list[int]] = {}
        for number, group in enumerate(thesaurus):
            for form in group:
                groups_of.setdefault(form, []).append(number)
        self._groups = [tuple(g) for g in thesaurus]
        self._groups_of = {f: g for f, g in groups_of.items() if len(g) <= MAX_GROUPS_PER_FORM}
        zh_forms = sorted((f for f in self._groups_of if CJK_RUN.search(f)), key=len, reverse=True)
        self._head_index: dict[str, dict[str, list[int]]] = {}
        for form, numbers in groups_of.items():
            if CJK_RUN.search(form):
                for cut in range(1, len(form) - 1):  # every proper suffix of two characters or more
                    self._head_index.setdefault(form[cut:], {})[form] = numbers
        self._zh_pattern = re.compile("|".join(map(re.escape, zh_forms))) if zh_forms else None
        self._en_phrases: dict[str, list[tuple[tuple[str, ...], str]]] = {}
        for form in self._groups_of:
            if not CJK_RUN.search(form):
                phrase = analyzer.phrase(form)
                if phrase:
                    self._en_phrases.setdefault(phrase[0], []).append((phrase, form))

    def _term(self, forms: set[str], key: str) -> Term:
        zh = tuple(sorted((f for f in forms if CJK_RUN.search(f)), key=len, reverse=True))
        en = tuple(dict.fromkeys(p for f in forms if not CJK_RUN.search(f) and (p := self.analyzer.phrase(f))))
        return Term(zh, en, key)

    def _head_groups(self, word: str) -> set[str]:
        """Forms of the groups with a Chinese form that ends in ``word`` (compounds are head-final:
        公益医院 is a kind of 医院), when the word is specific enough to name few groups."""
        if len(word) < 2:
            return set()
        groups = {g for form, numbers in self._head_index.get(word, {}).items() for g in numbers}
        if not groups or len(groups) > MAX_GROUPS_PER_FORM:
            return set()
        return {f for g in groups for f in self._groups[g]}

    def _expand(self, form: str) -> set[str]:
        return {f for g in self._groups_of.get(form, ()) for f in self._groups[g]} | {form}

    def terms(self, question: str) -> list[Term]:
        """The question's content terms: thesaurus matches (with all their forms), then other words."""
        lowered = question.lower()
        terms: list[Term] = []
        if self._zh_pattern is not None:
            terms += [self._term(self._expand(m.group()), m.group()) for m in self._zh_pattern.finditer(lowered)]
            lowered = self._zh_pattern.sub(" ", lowered)
        words = self.analyzer.words(lowered)
        heads = [forms[0] for forms in words]
        skip: set[int] = set()
        for i, forms in enumerate(words):
            head = forms[0]
            if i in skip:
                continue
            if CJK_RUN.search(head):
                kept = tuple(f for f in forms if len(f) >= 2)
                if kept:
                    named = self._head_groups(head)  # 医院 is the head of 公益医院: a name of 医疗机构
                    terms.append(self._term(named | set(kept), head) if named else Term(kept, (), head))
                continue
            phrase_form = next((form for phrase, form in self._en_phrases.get(head, ())
                                if tuple(heads[i:i + len(phrase)]) == phrase), None)
            if phrase_form is not None:
                terms.append(self._term(self._expand(phrase_form), phrase_form))
                skip.update(range(i, i + len(self.analyzer.phrase(phrase_form))))
            elif len(head) >= 3:
                terms.append(Term((), ((head,),), head))
        return list({t.key: t for t in terms}.values())

    def question_terms(self, question: str) -> QuestionTerms:
        """The question's terms and weights, memoised for recent questions."""
        with self._lock:
            cached = self._questions.get(question)
            if cached is not None:
                self._questions.move_to_end(question)
                return cached
        terms = tuple(self.terms(question))
        prepared = QuestionTerms(terms, tuple(self.idf(t) for t in terms))
        with self._lock:
            self._questions[question] = prepared
            while len(self._questions) > QUESTION_CACHE:
                self._questions.popitem(last=False)
        return prepared

    def idf(self, term: Term) -> float:
        with self._lock:
            cached = self._idf.get(term.key)
        if cached is None:
            df = self._postings.holding(term)
            cached = math.log(1 + len(self._units) / (1 + df))
            with self._lock:
                self._idf[term.key] = cached
        return cached

    def score(self, question: QuestionTerms, text: str) -> float:
        """0..1.5: best clause coverage plus half the coverage over the whole text."""
        if not question.terms:
            return 0.0
        whole, clauses = self._prepare(text)
        # a clause is part of the text: only the terms the whole text holds can hold in a clause
        held = [(t, w) for t, w in zip(question.terms, question.weights, strict=True) if _holds(t, whole)]
        if not held:
            return 0.0
        anywhere = sum(w for _, w in held)
        best_clause = anywhere if len(clauses) == 1 else max(
            (sum(w for t, w in held if _holds(t, clause)) for clause in clauses), default=0.0)
        return (best_clause + 0.5 * anywhere) / question.total

    def _prepare(self, text: str) -> tuple[_Text, list[_Text]]:
        """A text and its clauses ready for matching, memoised (units and their sentences recur)."""
        prepared = self._prepared.get(text)
        if prepared is None:
            prepared = (_Text(text, self.analyzer),
                        [_Text(c, self.analyzer) for c in _CLAUSE.split(text) if c.strip()])
            with self._lock:
                if len(self._prepared) < 20_000:
                    self._prepared[text] = prepared
        return prepared

    def best_sentence(self, question: QuestionTerms, text: str) -> int:
        """Index of the sentence that aligns best with the question (0 when none does clearly)."""
        parts = sentences(text)
        if not question.terms or len(parts) < 2:
            return 0
        scores = [self.score(question, s) for s in parts]
        best = max(range(len(parts)), key=lambda i: (scores[i], -i))
        # the first sentence states the measure; a later one must be clearly closer to the question
        return best if scores[0] < 0.6 * scores[best] else 0


# --- the stage --------------------------------------------------------------------------------

RERANK_WINDOW = 10  # the head re-checked: deeper units are rarely an answer and cost time
# Support rules (which re-checked units an answer cites besides the lead):
MAX_SUPPORT, MAX_SUPPORT_LIST = 3, 8
SHARE_OF_LEAD = 0.75  # a further unit must align at least this well relative to the lead …
SHARE_OF_LEAD_LIST = 0.5  # … or half as well when the question asks for a list
MIN_ALIGNMENT = 0.3  # … and hold at least this share of the question's weighted terms
# … and be this close to the best fused score (list questions: any score). benchmarks/support_rules.py on the
# dev split: 0.85 gave top-3 0.9595 / citation precision 0.927 / multi-task recall 0.747, 0.7 0.9628 / 0.884 / 0.813
CLOSE_SCORE = 0.7
TIE_SCORE = 0.97  # when nothing aligns, only a near-tie in fused score earns a second citation


@dataclass(frozen=True)
class RerankResult:
    """Stage output: the re-ordered head, each unit's alignment, and the support (cited) units."""

    order: list[tuple[int, float]]  # (unit position, fused score) best first, the whole ranking
    alignment: dict[int, float]
    support: list[int]  # positions, in ranking order


def rerank(relevance: ClauseRelevance, question: QuestionTerms, fused: list[tuple[int, float]], text_of,
           eligible, list_question: bool, reorder: bool = True) -> RerankResult:
    """Re-order the head of ``fused`` by alignment + normalised fused score and choose the support.

    ``text_of(position)`` is the unit text in the question's language; ``eligible(position)`` says
    whether a unit may be cited for a topical question (not the notice or distribution list).
    """
    # without re-ordering only the support candidates need their alignment
    window = RERANK_WINDOW if reorder or list_question else MAX_SUPPORT + 2
    head = [(p, s) for p, s in fused[:window] if eligible(p)]
    if not head:
        return RerankResult(list(fused), {}, [])
    top = max(s for _, s in head) or 1.0
    alignment = {p: relevance.score(question, text_of(p)) for p, _ in head}
    if reorder:
        ranked_head = sorted(head, key=lambda ps: -(alignment[ps[0]] + ps[1] / top))
        moved = {p for p, _ in ranked_head}
        order = ranked_head + [(p, s) for p, s in fused if p not in moved]
    else:
        ranked_head, order = head, list(fused)
    return RerankResult(order, alignment, _support(ranked_head, alignment, top, list_question))


def _support(head: list[tuple[int, float]], alignment: dict[int, float], top: float,
             list_question: bool) -> list[int]:
    lead_position, _ = head[0]
    lead = alignment[lead_position]
    chosen = [lead_position]
    limit = MAX_SUPPORT_LIST if list_question else MAX_SUPPORT
    for position, score in head[1:]:
        if len(chosen) >= limit:
            break
        if lead > 0:
            share = SHARE_OF_LEAD_LIST if list_question else SHARE_OF_LEAD
            close = list_question or score >= CLOSE_SCORE * top
            if alignment[position] >= share * lead and alignment[position] >= MIN_ALIGNMENT and close:
                chosen.append(position)
        elif score >= TIE_SCORE * top and len(chosen) < 2:
            chosen.append(position)
    return chosen
