"""Questions typed in pinyin, read back into the plan's Chinese words (part of query analysis).

A hotline agent without a Chinese keyboard, or a foreign enterprise, types "shuju biaozhu chanye"
for 数据标注产业. Neither BM25 nor the dense encoders can match toneless pinyin against Chinese text,
so query analysis reads such a run of Latin words back into Chinese before retrieval.

How, without a word list: every Chinese word of the corpus (the units' text and the reviewed
task knowledge's terms) is transliterated once by ``pypinyin`` (a maintained library with its
own dictionary); a run of Latin words that are not English (not in the corpus's English text,
not English stop words) is split, letters only and spaces ignored (so "shu ju", "shuju" and
"shujubiaozhu" read alike), into the longest corpus words by dynamic programming. The run counts
as pinyin only when nearly all its letters are valid pinyin syllables and corpus words cover a
good share of it, and only in a question at least half of whose Latin words are pinyin (an
English question that names "Fujian" stays English). Each matched word is replaced by its
Chinese: every corpus word with that reading at least half as frequent as the most frequent.
Words only one character long are never matched: too many English words ("can", "he", "an")
are also one-syllable pinyin.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from assistant.text import jieba_module

if TYPE_CHECKING:
    from assistant.index.store import LoadedIndex

_LATIN_WORD = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)?")
_CJK_WORD = re.compile(r"^[\u3400-\u9fff]{2,8}$")
MIN_PINYIN_SHARE = 0.9  # of a run's letters inside valid syllables (leaves room for one typo)
MIN_WORD_SHARE = 0.4  # of a run's letters inside matched corpus words
MAX_READINGS = 3  # Chinese words kept for one ambiguous reading
MIN_RUN_LETTERS = 4
MIN_PINYIN_WORD_SHARE = 0.5  # of a question's Latin words that are not English


@dataclass(frozen=True)
class Piece:
    """One stretch of a run: a corpus word's reading (``words`` set), a bare syllable, or a stray letter."""

    letters: str
    words: tuple[str, ...] = ()
    syllable: bool = False


def _toneless(reading: str) -> str:
    bare = "".join(c for c in unicodedata.normalize("NFD", reading) if not unicodedata.combining(c))
    return bare.replace("ü", "v").lower()


def valid_syllables() -> frozenset[str]:
    """Every toneless syllable of pypinyin's character dictionary (about 420)."""
    from pypinyin.pinyin_dict import pinyin_dict

    return frozenset(_toneless(p) for value in pinyin_dict.values() for p in value.split(","))


class PinyinReader:
    """Reads pinyin runs of a question as corpus words; immutable once built."""

    def __init__(self, readings: dict[str, tuple[str, ...]], syllables: frozenset[str],
                 english: frozenset[str]) -> None:
        self.readings = readings  # "shuju" -> ("数据",)
        self.syllables = syllables
        self.english = english  # lower-cased English words of the corpus and the stop list
        self._longest = max((len(k) for k in readings), default=0)

    @classmethod
    def from_texts(cls, chinese: Iterable[str], english: Iterable[str]) -> PinyinReader:
        """``chinese``: texts whose words the reader may return; ``english``: the corpus's English
        words (and stop words), which are never read as pinyin."""
        from pypinyin import Style, lazy_pinyin

        jieba = jieba_module()
        counts: Counter[str] = Counter()
        for text in chinese:
            counts.update(w for w in jieba.cut(text) if _CJK_WORD.match(w))
            if _CJK_WORD.match(text):  # a glossary term is a word even where jieba cuts it
                counts[text] += 1
        grouped: dict[str, list[str]] = {}
        for word, _ in counts.most_common():
            reading = "".join(_toneless(s) for s in lazy_pinyin(word, style=Style.NORMAL))
            grouped.setdefault(re.sub(r"[^a-z]", "", reading), []).append(word)
        # a rare homophone (保水 beside 保税) only adds noise: keep readings at least half as frequent
        readings = {k: tuple(w for w in v[:MAX_READINGS] if 2 * counts[w] >= counts[v[0]])
                    for k, v in grouped.items() if k}
        return cls(readings, valid_syllables(), frozenset(w.lower() for w in english))

    def is_english(self, word: str) -> bool:
        lower = word.lower()
        return lower in self.english or lower.rstrip("s") in self.english or not lower.isascii()

    def pinyin_like(self, word: str) -> bool:
        """Whether ``word`` is a string of valid syllables (one stray letter allowed from five letters on)."""
        letters = word.lower()
        in_syllables = sum(len(p.letters) for p in self.segment(letters) if p.words or p.syllable)
        return in_syllables >= len(letters) - (1 if len(letters) >= 5 else 0)

    def segment(self, letters: str) -> list[Piece]:
        """Split ``letters`` into corpus words, bare syllables and stray letters: most letters in
        corpus words first, then most letters in syllables, then fewest pieces."""
        n = len(letters)
        best: list[tuple[int, int, int, list[Piece]] | None] = [None] * (n + 1)
        best[0] = (0, 0, 0, [])
        for end in range(1, n + 1):
            for start in range(max(0, end - max(self._longest, 6)), end):
                previous = best[start]
                if previous is None:
                    continue
                chunk = letters[start:end]
                words = self.readings.get(chunk, ())
                if words:
                    piece = Piece(chunk, words=words)
                elif chunk in self.syllables:
                    piece = Piece(chunk, syllable=True)
                elif end - start == 1:
                    piece = Piece(chunk)
                else:
                    continue
                in_words, in_syllables, pieces, path = previous
                score = (in_words + (len(chunk) if words else 0),
                         in_syllables + (len(chunk) if words or piece.syllable else 0), pieces - 1)
                current = best[end]
                if current is None or score > current[:3]:
                    best[end] = (*score, [*path, piece])
        result = best[n]
        return result[3] if result is not None else []

    def read_run(self, run: str) -> str | None:
        """The Chinese reading of one run of Latin words, or None when it is not pinyin."""
        letters = re.sub(r"[^a-z]", "", run.lower())
        if len(letters) < MIN_RUN_LETTERS:
            return None
        pieces = self.segment(letters)
        in_words = sum(len(p.letters) for p in pieces if p.words)
        in_syllables = sum(len(p.letters) for p in pieces if p.words or p.syllable)
        if in_syllables < MIN_PINYIN_SHARE * len(letters) or in_words < MIN_WORD_SHARE * len(letters):
            return None
        return " ".join(" ".join(p.words) for p in pieces if p.words)

    def read(self, text: str) -> str | None:
        """``text`` with each pinyin run replaced by its Chinese words, or None when it has none."""
        runs: list[tuple[int, int]] = []
        latin = list(_LATIN_WORD.finditer(text))
        candidates = [m for m in latin if not self.is_english(m.group(0))]
        # an English question naming "Fujian" stays English: most of its Latin words must be pinyin
        if sum(self.pinyin_like(m.group(0)) for m in candidates) < MIN_PINYIN_WORD_SHARE * len(latin):
            return None
        for match in candidates:
            if runs and not text[runs[-1][1]:match.start()].strip(" -,，"):
                runs[-1] = (runs[-1][0], match.end())
            else:
                runs.append((match.start(), match.end()))
        out, last, changed = [], 0, False
        for start, end in runs:
            reading = self.read_run(text[start:end])
            if reading is None:
                continue
            out += [text[last:start], f" {reading} "]
            last, changed = end, True
        if not changed:
            return None
        return " ".join("".join([*out, text[last:]]).split())


def pinyin_reader(index: LoadedIndex) -> PinyinReader:
    """The reader of one index: its units' Chinese and its task knowledge's Chinese words; English
    words from the units' English text, the knowledge's English and the stop list."""
    chinese = [node.text for node in index.nodes]
    english_texts = [node.metadata.get("text_en") or "" for node in index.nodes]
    if index.knowledge is not None:
        for unit in index.knowledge.units.values():
            chinese += [unit.explain_zh, *unit.askers_zh, *unit.questions_zh]
            chinese += [form for term in unit.terms for form in (term.plan, *term.zh)]
            english_texts += [unit.explain_en, *unit.askers_en, *(f for term in unit.terms for f in term.en)]
    english = {w.lower() for text in english_texts for w in _LATIN_WORD.findall(text)}
    if index.analyzer is not None:
        english |= index.analyzer.en_stop
    return PinyinReader.from_texts(chinese, english)
