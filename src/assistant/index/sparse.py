"""BM25 over the shared analyser's tokens (jieba for Chinese, Snowball stems for English), with ``bm25s``.

llama-index's BM25 retriever splits on whitespace and so cannot index Chinese; the tokens come
from :class:`~assistant.index.analyzer.TextAnalyzer` and the scorer is a tiny wrapper over bm25s.
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

from assistant.index.analyzer import CJK_RUN, TextAnalyzer
from assistant.text import jieba_module

log = logging.getLogger(__name__)

_FORM_PIECE = re.compile(r"[a-zA-Z0-9]+(?:[-'][a-zA-Z0-9]+)*|[\u3400-\u9fff]+|\S")


def _bm25s() -> ModuleType:
    """bm25s with its numpy backend, imported without numba.

    bm25s imports numba whenever it is installed (ranx, used by the eval, installs it) only to
    offer a JIT backend that 125 units do not need; that import alone cost 0.23 s of every cold
    start. Hiding numba for the duration of the import makes bm25s take its numpy path; a process
    that has already imported numba keeps it.

    Why ``sys.modules``: bm25s's ``__init__`` runs ``from numba import njit`` unconditionally, with
    no argument or setting to skip it (``backend="numpy"`` only picks the scorer, after numba is
    imported), so a ``None`` entry for the length of this one import is the only switch; the entry
    is removed again, leaving ``sys.modules`` as a plain ``import bm25s`` would.
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

    def __init__(self, model, unit_ids: list[str], analyzer: TextAnalyzer) -> None:
        self._model = model
        self.unit_ids = unit_ids
        self.analyzer = analyzer
        self._vocab = set(model.vocab_dict)
        # memoised per index (it reads the vocabulary): a search asks twice, once per thread
        self.question_form = lru_cache(maxsize=4096)(self._question_form)  # type: ignore[method-assign]

    @classmethod
    def build(cls, unit_ids: list[str], texts: list[str], analyzer: TextAnalyzer) -> SparseIndex:
        model = _bm25s().BM25(method="lucene", k1=1.2, b=0.75)
        model.index([analyzer.tokens(t) or ["∅"] for t in texts], show_progress=False)
        return cls(model, unit_ids, analyzer)

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self._model.save(str(folder), show_progress=False)
        (folder / "unit_ids.json").write_text(json.dumps(self.unit_ids), encoding="utf-8")

    @classmethod
    def load(cls, folder: Path, analyzer: TextAnalyzer) -> SparseIndex:
        model = _bm25s().BM25.load(str(folder), show_progress=False, verbosity=0)
        unit_ids = json.loads((folder / "unit_ids.json").read_text(encoding="utf-8"))
        return cls(model, unit_ids, analyzer)

    def document_frequency(self, token: str) -> int:
        """Units holding ``token`` (0 when it is not indexed): the one DF every lexical feature reads."""
        postings = self._postings(token)
        return 0 if postings is None else len(postings)

    def knows(self, word: str) -> bool:
        """Whether any unit holds one of ``word``'s indexed forms (a stop word counts as known)."""
        return all(any(self.document_frequency(f) for f in forms) for forms in self.analyzer.words(word))

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
        words = self.analyzer.words(query)
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

    def held(self, query: str) -> tuple[np.ndarray, float]:
        """The IDF mass of the question's known content words each unit holds (by position), and
        the mass of them all (unknown words count in neither): their ratio is the share a unit holds."""
        total = len(self.unit_ids)
        found = np.zeros(total, dtype=np.float64)
        weight = 0.0
        for forms in self.analyzer.words(query):
            postings = [p for p in (self._postings(f) for f in forms) if p is not None]
            if not postings:
                continue
            idf = max(float(np.log1p(total / max(len(p), 1))) for p in postings)
            weight += idf
            found[np.unique(np.concatenate(postings))] += idf
        return found, weight

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
            if CJK_RUN.match(piece):
                jieba = jieba or jieba_module()
                kept += [w for w in jieba.cut(piece) if len(w) < 2 or w not in self._vocab]
            elif len(piece) <= 2 or self.analyzer.stem(piece.lower()) not in self._vocab:
                kept.append(piece)
        joiner = "" if CJK_RUN.search(query) else " "
        return " ".join(joiner.join(kept).split())

    def query_tokens(self, query: str) -> tuple[list[str], list[str]]:
        """The query's content tokens, and those of them the index knows."""
        tokens = self.analyzer.tokens(query)
        return tokens, [t for t in tokens if t in self._vocab]

    def scores(self, query: str) -> np.ndarray:
        """BM25 score of every unit for ``query`` (zeros when no query token is indexed)."""
        _, known = self.query_tokens(query)
        if not known:
            return np.zeros(len(self.unit_ids), dtype=np.float32)
        return np.asarray(self._model.get_scores(known), dtype=np.float32)
