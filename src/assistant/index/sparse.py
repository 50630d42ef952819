"""BM25 over jieba tokens (Chinese) and word tokens (English renderings), with ``bm25s``.

llama-index's BM25 retriever splits on whitespace and so cannot index Chinese; this module
tokenises mixed Chinese/English text itself and keeps the scorer a tiny wrapper over bm25s.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from functools import lru_cache
from pathlib import Path
from types import ModuleType

import numpy as np

from assistant.text import jieba_module

log = logging.getLogger(__name__)

def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# Function words that carry no topic: dropping them keeps BM25 on what the question is about.
_ZH_STOP = _words("""
    的 了 和 与 及 或 等 在 对 为 是 把 被 将 于 以 及其 并 其 之 也 都 而 就 吗 呢 吧 啊 嘛 呀 么 我 你 他 她 它
    我们 你们 他们 这 那 这个 那个 哪 哪些 什么 怎么 怎样 如何 多少 是否 能 能否 可以 可不可以 会 要 想 请问 一下
    有 有没有 没有 还 又 个 些 啥 咋 哦 嗯 里 上 中 下 相关 有关 问 请 问下 知道 做 搞 弄 干
""")
_EN_STOP = _words("""
    a an the and or of to in on for with by at from as is are be can could do does did will would should may
    might must i we you it its they them their our your my this that these those what which who whom how when
    where why there here any some about into than then so if not no yes also just get got me us
""")
_TOKEN = re.compile(r"[a-z0-9]+(?:[-'][a-z0-9]+)*|[\u3400-\u9fff]+")
_CJK_RUN = re.compile(r"[\u3400-\u9fff]")
_FORM_PIECE = re.compile(r"[a-zA-Z0-9]+(?:[-'][a-zA-Z0-9]+)*|[\u3400-\u9fff]+|\S")


def _stem(word: str) -> str:
    """A light English stemmer (plural and common suffixes) so "homes" meets "home"."""
    for suffix, replacement in (("ies", "y"), ("sses", "ss"), ("ches", "ch"), ("shes", "sh"), ("s", "")):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3 and not word.endswith(("ss", "us", "is")):
            return word[: -len(suffix)] + replacement
    return word


def content_words(text: str, stopwords: frozenset[str] = frozenset()) -> list[list[str]]:
    """The content words of ``text``, each with the forms BM25 indexes for it (a fresh list).

    Memoised: a search reads a question's words twice (BM25 scores, coverage).
    """
    return [list(forms) for forms in _content_words(text, stopwords)]


@lru_cache(maxsize=4096)
def _content_words(text: str, stopwords: frozenset[str]) -> tuple[tuple[str, ...], ...]:
    """The content words of ``text``, each with the forms BM25 indexes for it.

    Chinese: each jieba word with its search-mode parts ("外国人" -> 外国, 外国人); English: the
    stemmed word, plus the parts of a hyphenated one ("ip-vpn" -> ip-vpn, ip, vpn). Function
    words and ``stopwords`` (corpus-specific, such as the city every unit is about) are dropped.
    """
    jieba = None
    words: list[tuple[str, ...]] = []
    for match in _TOKEN.finditer(text.lower()):
        piece = match.group(0)
        if _CJK_RUN.match(piece):
            jieba = jieba or jieba_module()
            for word in jieba.cut(piece):
                forms = [f for f in jieba.cut_for_search(word)
                         if f.strip() and f not in _ZH_STOP and f not in stopwords]
                if forms and word not in _ZH_STOP and word not in stopwords:
                    words.append(tuple(forms))
        elif piece not in _EN_STOP and piece not in stopwords:
            forms = [_stem(piece)]
            if "-" in piece:  # "ip-vpn" also meets "vpn", "cross-border" also "border"
                forms += [_stem(part) for part in piece.split("-") if len(part) > 1 and part not in _EN_STOP]
            words.append(tuple(forms))
    return tuple(words)


def tokenize(text: str, stopwords: frozenset[str] = frozenset()) -> list[str]:
    """Tokens for BM25: every indexed form of every content word."""
    return [form for forms in content_words(text, stopwords) for form in forms]


def _bm25s() -> ModuleType:
    """bm25s with its numpy backend, imported without numba.

    bm25s imports numba whenever it is installed (ranx, used by the eval, installs it) only to
    offer a JIT backend that 125 units do not need; that import alone cost 0.23 s of every cold
    start. Hiding numba for the duration of the import makes bm25s take its numpy path; a process
    that has already imported numba keeps it.
    """
    if "bm25s" in sys.modules:
        return sys.modules["bm25s"]
    if "numba" in sys.modules:
        import bm25s

        return bm25s
    sys.modules["numba"] = None  # type: ignore[assignment]  # "import numba" now raises ImportError
    try:
        import bm25s
    finally:
        del sys.modules["numba"]
    return bm25s


class SparseIndex:
    """BM25 scores for every unit of the corpus (a few hundred units: score them all)."""

    def __init__(self, model, unit_ids: list[str], stopwords: frozenset[str] = frozenset()) -> None:
        self._model = model
        self.unit_ids = unit_ids
        self.stopwords = stopwords
        self._vocab = set(model.vocab_dict)
        # memoised per index (it reads the vocabulary): a search asks twice, once per thread
        self.question_form = lru_cache(maxsize=4096)(self._question_form)  # type: ignore[method-assign]

    @classmethod
    def build(cls, unit_ids: list[str], texts: list[str], stopwords: frozenset[str] = frozenset()) -> SparseIndex:
        model = _bm25s().BM25(method="lucene", k1=1.2, b=0.75)
        model.index([tokenize(t, stopwords) or ["∅"] for t in texts], show_progress=False)
        return cls(model, unit_ids, stopwords)

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self._model.save(str(folder), show_progress=False)
        (folder / "unit_ids.json").write_text(json.dumps(self.unit_ids), encoding="utf-8")
        (folder / "stopwords.json").write_text(json.dumps(sorted(self.stopwords), ensure_ascii=False),
                                               encoding="utf-8")

    @classmethod
    def load(cls, folder: Path) -> SparseIndex:
        model = _bm25s().BM25.load(str(folder), show_progress=False, verbosity=0)
        unit_ids = json.loads((folder / "unit_ids.json").read_text(encoding="utf-8"))
        stopwords = frozenset(json.loads((folder / "stopwords.json").read_text(encoding="utf-8")))
        return cls(model, unit_ids, stopwords)

    def _postings(self, token: str) -> np.ndarray | None:
        token_id = self._model.vocab_dict.get(token)
        if token_id is None:
            return None
        matrix = self._model.scores
        return matrix["indices"][matrix["indptr"][token_id]:matrix["indptr"][token_id + 1]]

    def coverage(self, query: str, position: int) -> tuple[float, float]:
        """How much of the question the index knows, and how much the unit at ``position`` holds.

        Counted over content words (a word is known when any of its forms is indexed); the
        second figure weights words by IDF, an unknown word by the highest IDF.
        """
        words = content_words(query, self.stopwords)
        if not words:
            return 0.0, 0.0
        total = len(self.unit_ids)
        known = found = weight = 0.0
        for forms in words:
            postings = [p for p in (self._postings(f) for f in forms) if p is not None]
            if not postings:
                weight += float(np.log1p(total))
                continue
            known += 1
            idf = max(float(np.log1p(total / max(len(p), 1))) for p in postings)
            weight += idf
            found += idf if any(position in p for p in postings) else 0.0
        return known / len(words), found / weight

    def _question_form(self, query: str) -> str:
        """The question with the topic words the index knows taken out: what it *asks*.

        "外资护理学院一年学费多少？" keeps "一年学费多少？", "How do I apply for a foreign card
        binding?" keeps "How do I apply for a ?": near questions about the same task differ in
        what remains (a fee, a procedure), which the scope model's neighbour features compare.
        """
        jieba = None
        kept: list[str] = []
        for match in _FORM_PIECE.finditer(query):
            piece = match.group(0)
            if _CJK_RUN.match(piece):
                jieba = jieba or jieba_module()
                kept += [w for w in jieba.cut(piece) if len(w) < 2 or w not in self._vocab]
            elif len(piece) <= 2 or _stem(piece.lower()) not in self._vocab:
                kept.append(piece)
        joiner = "" if _CJK_RUN.search(query) else " "
        return " ".join(joiner.join(kept).split())

    def query_tokens(self, query: str) -> tuple[list[str], list[str]]:
        """The query's content tokens, and those of them the index knows."""
        tokens = tokenize(query, self.stopwords)
        return tokens, [t for t in tokens if t in self._vocab]

    def scores(self, query: str) -> np.ndarray:
        """BM25 score of every unit for ``query`` (zeros when no query token is indexed)."""
        _, known = self.query_tokens(query)
        if not known:
            return np.zeros(len(self.unit_ids), dtype=np.float32)
        return np.asarray(self._model.get_scores(known), dtype=np.float32)
