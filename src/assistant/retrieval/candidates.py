"""Stage 2, candidate retrieval: every retriever scores every unit.

Retrievers are llama-index ``BaseRetriever``s (``retrieve`` gives their top nodes); the pipeline
reads their full score arrays through ``unit_scores`` because fusion and the answerability
features need every unit's score, not a top-k list (125 units: scoring all is cheaper than
building node lists). Dense retrievers of one embedder (``use`` over the plan's text, ``use_k`` over
the task knowledge) share one :class:`QueryEncoder`, so a question is encoded once per model.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from llama_index.core import QueryBundle
from llama_index.core.retrievers import BaseRetriever
from llama_index.core.schema import NodeWithScore

from assistant.index.embedders import OfflineEmbedding
from assistant.index.sparse import SparseIndex
from assistant.index.store import KNOWLEDGE_SUFFIX, LoadedIndex


class QueryEncoder:
    """One embedder's query side: a lock (the C and BLAS engines are not re-entrant) and an LRU
    cache of query vectors. It outlives index swaps, since query vectors do not depend on them."""

    def __init__(self, embedder: OfflineEmbedding, max_chars: int, cache_size: int = 4096) -> None:
        self.embedder = embedder
        self._lock = threading.Lock()
        self._max_chars = max_chars
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._cache_size = cache_size

    def _cached(self, text: str) -> np.ndarray | None:
        vector = self._cache.get(text)
        if vector is not None:
            self._cache.move_to_end(text)
        return vector

    def encode_many(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Vectors of ``texts``; the uncached ones are encoded in one batch (one pass over the weights)."""
        with self._lock:
            missing = [t for t in dict.fromkeys(texts) if self._cached(t) is None]
            if missing:
                vectors = self.embedder.encode_queries([t[: self._max_chars] for t in missing])
                for text, row in zip(missing, vectors, strict=True):
                    self._cache[text] = row
                    self._cache.move_to_end(text)
                while len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
            return [self._cache[t] for t in texts]

    def encode(self, query: str) -> np.ndarray:
        return self.encode_many([query])[0]

    def cache_clear(self) -> None:
        with self._lock:
            self._cache.clear()

    def __len__(self) -> int:
        return len(self._cache)


def _top_nodes(index: LoadedIndex, scores: np.ndarray, k: int) -> list[NodeWithScore]:
    order = np.argsort(-scores)[:k]
    return [NodeWithScore(node=index.nodes[i], score=float(scores[i])) for i in order]


class DenseRetriever(BaseRetriever):
    """Cosine similarity per unit (best of its views) in one embedder's FAISS index."""

    def __init__(self, name: str, index: LoadedIndex, encoder: QueryEncoder) -> None:
        super().__init__()
        self.name = name
        self._dense = index.dense[name]
        self._index = index
        self.encoder = encoder

    def unit_scores(self, texts: Sequence[str], within: np.ndarray | None = None) -> np.ndarray:
        """Mean over ``texts`` (the question and its asking clause) of each unit's best view score.

        ``within`` (the unit positions a document filter keeps) changes nothing here: every unit is
        scored exactly and the pipeline masks the others; a backend that returns only its best units
        returns the best of these."""
        vectors = self.encoder.encode_many(texts)
        rows = [self._dense.unit_scores(v, self._index.unit_index) for v in vectors]
        return rows[0] if len(rows) == 1 else np.mean(rows, axis=0)

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return _top_nodes(self._index, self.unit_scores([query_bundle.query_str]), 10)


class SparseRetriever(BaseRetriever):
    """BM25 over the units' text (``bm25``) or their reviewed knowledge (``bm25_k``)."""

    def __init__(self, name: str, index: LoadedIndex, sparse: SparseIndex) -> None:
        super().__init__()
        self.name = name
        self._index = index
        self.sparse = sparse
        order = {uid: i for i, uid in enumerate(sparse.unit_ids)}
        self._to_units = np.array([order[n.node_id] for n in index.nodes])

    def unit_scores(self, texts: Sequence[str], within: np.ndarray | None = None) -> np.ndarray:
        """Mean BM25 over ``texts`` of every unit (``within``: as :meth:`DenseRetriever.unit_scores`)."""
        rows = [self.sparse.scores(t)[self._to_units] for t in texts]
        return rows[0] if len(rows) == 1 else np.mean(rows, axis=0)

    def coverage(self, query: str, unit_position: int) -> tuple[float, float]:
        return self.sparse.coverage(query, int(self._to_units[unit_position]))

    def knows(self, word: str) -> bool:
        return self.sparse.knows(word)

    def held(self, query: str) -> tuple[np.ndarray, float]:
        """:meth:`SparseIndex.held` by unit position of the loaded index."""
        found, weight = self.sparse.held(query)
        return found[self._to_units], weight

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return _top_nodes(self._index, self.unit_scores([query_bundle.query_str]), 10)


Retriever = DenseRetriever | SparseRetriever


@dataclass(frozen=True)
class CandidateScores:
    """Stage output: every unit's score per retriever, and what each retriever cost."""

    scores: dict[str, np.ndarray]
    timings_ms: dict[str, float]


def encoder_of(retriever: BaseRetriever) -> QueryEncoder | None:
    """The query encoder of a dense retriever (any backend's), None for a lexical one."""
    encoder = getattr(retriever, "encoder", None)
    return encoder if isinstance(encoder, QueryEncoder) else None


def _timed(retriever: Retriever, texts: Sequence[str], within: np.ndarray | None) -> tuple[np.ndarray, float]:
    started = time.perf_counter()
    scores = retriever.unit_scores(texts) if within is None else retriever.unit_scores(texts, within=within)
    return scores, (time.perf_counter() - started) * 1000


def score_candidates(retrievers: dict[str, Retriever], texts: dict[str, Sequence[str]],
                     pool: ThreadPoolExecutor | None,
                     extra: Mapping[str, Callable[[], Sequence[str]]] | None = None,
                     meanwhile: Callable[[Mapping[str, np.ndarray]], object] | None = None,
                     encoded: Callable[[str], object] | None = None,
                     within: Mapping[str, np.ndarray] | None = None) -> CandidateScores:
    """Run each retriever named in ``texts`` on its texts (the question, maybe its asking clause);
    ``within`` names, per retriever, the unit positions a document filter keeps.

    An embedder encodes the texts of all its retrievers and its ``extra`` texts (the scope model's
    question form, made in the thread that encodes) in one batch. With a pool, this thread encodes
    with the first embedder (in retriever order: e5, the slow one) while a pool thread encodes with
    the others (USE), scores their retrievers and the sparse ones and runs ``meanwhile`` on those
    scores (query-side work of later stages) — both engines release the GIL, so on two cores they
    run side by side. The slow encoder's time hides everything that does not need its vectors, and
    the search goes on from the thread that was on its critical path: it waits for no other thread
    to wake up unless the pool's work took longer. ``encoded(embedder)`` runs in this thread as soon
    as an embedder it encodes with has its vectors, before they are scored.
    """
    unknown = [n for n in texts if n not in retrievers]
    if unknown:
        raise ValueError(f"unknown retrievers {unknown}; available: {list(retrievers)}")
    within = within or {}
    batches: dict[int, tuple[str, QueryEncoder, list[str]]] = {}
    for name in texts:
        encoder = encoder_of(retrievers[name])
        if encoder is not None:
            base = name.removesuffix(KNOWLEDGE_SUFFIX)
            batches.setdefault(id(encoder), (base, encoder, []))[2].extend(texts[name])
    timings: dict[str, float] = {}

    def encode(name: str, encoder: QueryEncoder, batch: list[str]) -> None:
        started = time.perf_counter()
        made = extra[name]() if extra is not None and name in extra else ()
        encoder.encode_many(list(dict.fromkeys([*made, *batch])))
        timings[f"encode_{name}"] = (time.perf_counter() - started) * 1000

    def encode_and_score(keys: Sequence[int], names: Sequence[str], then: bool,
                         mine: bool = True) -> dict[str, tuple[np.ndarray, float]]:
        """Encode with the embedders of ``keys``, score the retrievers ``names``, maybe run ``meanwhile``."""
        for key in keys:
            encode(*batches[key])
            if mine and encoded is not None:
                encoded(batches[key][0])
        done = {n: _timed(retrievers[n], texts[n], within.get(n)) for n in names}
        if then and meanwhile is not None:
            meanwhile({n: r[0] for n, r in done.items()})
        return done

    keys = list(batches)
    if pool is None or len(keys) < 2:
        results = encode_and_score(keys, list(texts), True)
    else:
        mine = [n for n in texts if id(encoder_of(retrievers[n])) == keys[0]]
        side = pool.submit(encode_and_score, keys[1:], [n for n in texts if n not in mine], True, False)
        results = encode_and_score(keys[:1], mine, False)
        results.update(side.result())
    results = {n: results[n] for n in texts}
    timings.update({n: r[1] for n, r in results.items()})
    return CandidateScores({n: r[0] for n, r in results.items()}, timings)
