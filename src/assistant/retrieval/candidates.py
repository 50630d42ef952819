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
                     pool: ThreadPoolExecutor | None, extra: dict[str, Sequence[str]] | None = None,
                     meanwhile: Callable[[], object] | None = None,
                     within: Mapping[str, np.ndarray] | None = None) -> CandidateScores:
    """Run each retriever named in ``texts`` on its texts (the question, maybe its asking clause);
    ``within`` names, per retriever, the unit positions a document filter keeps.

    An embedder encodes the texts of all its retrievers and its ``extra`` texts (the scope model's
    question form) in one batch. With a pool, every embedder but the last (in retriever order: e5)
    encodes in a pool thread while this thread encodes with the last one (USE) — both engines
    release the GIL, so on two cores they run side by side — and then, while the pool still works,
    scores that embedder's retrievers and the sparse ones and runs ``meanwhile`` (query-side work of
    later stages): the slow encoder's time hides everything that does not need its vectors.
    """
    unknown = [n for n in texts if n not in retrievers]
    if unknown:
        raise ValueError(f"unknown retrievers {unknown}; available: {list(retrievers)}")
    extra = extra or {}
    within = within or {}
    batches: dict[int, tuple[str, QueryEncoder, list[str]]] = {}
    for name in texts:
        encoder = encoder_of(retrievers[name])
        if encoder is not None:
            base = name.removesuffix(KNOWLEDGE_SUFFIX)
            batch = batches.setdefault(id(encoder), (base, encoder, list(extra.get(base, ()))))[2]
            batch.extend(texts[name])
    timings: dict[str, float] = {}

    def encode(name: str, encoder: QueryEncoder, batch: list[str]) -> None:
        started = time.perf_counter()
        encoder.encode_many(list(dict.fromkeys(batch)))
        timings[f"encode_{name}"] = (time.perf_counter() - started) * 1000

    queued = list(batches.values())[:-1] if pool is not None else []
    pending = {id(batch[1]): pool.submit(encode, *batch) for batch in queued} if pool is not None else {}
    for key, batch in batches.items():
        if key not in pending:
            encode(*batch)
    results = {n: _timed(retrievers[n], t, within.get(n)) for n, t in texts.items()
               if id(encoder_of(retrievers[n])) not in pending}  # sparse ones and the encoded dense ones
    if meanwhile is not None:
        meanwhile()
    for future in pending.values():
        future.result()  # vectors now cached: the dense retrievers below only score
    results.update({n: _timed(retrievers[n], t, within.get(n)) for n, t in texts.items() if n not in results})
    results = {n: results[n] for n in texts}
    timings.update({n: r[1] for n, r in results.items()})
    return CandidateScores({n: r[0] for n, r in results.items()}, timings)
