"""Candidate retrieval from the PostgreSQL backend, with the ``unit_scores`` contract of ``candidates.py``.

:class:`PgDenseRetriever` and :class:`PgSparseRetriever` subclass :class:`DenseRetriever` and
:class:`SparseRetriever` (so they are llama-index ``BaseRetriever``s, share the snapshot's
:class:`QueryEncoder` per model, and the candidate stage treats them as it treats the embedded
ones). Each returns a full-length array over unit positions, like the embedded retrievers, but only
the ``depth`` best units (``ASSISTANT_CANDIDATES_PER_RETRIEVER``, the depth fusion reads) come from
SQL; every other unit gets a score fusion skips (≤ 0): 0 for BM25, as a unit without a query word
has embedded too, and -1 for dense, below any cosine. Features read only each list's head.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from llama_index.core import QueryBundle
from llama_index.core.schema import NodeWithScore
from llama_index.core.vector_stores.types import VectorStoreQuery

from assistant.index.pg_dense import PgDenseIndex
from assistant.index.pg_sparse import PgSparseIndex
from assistant.index.pg_store import PgLoadedIndex
from assistant.index.store import LoadedIndex
from assistant.retrieval.candidates import DenseRetriever, QueryEncoder, SparseRetriever
from assistant.retrieval.scope.model import ScopeModel

DENSE_UNSCORED = -1.0  # a unit outside the SQL top-N of a dense retriever (fusion skips scores <= 0)
SPARSE_UNSCORED = 0.0  # ... of BM25 (what a unit without a query word scores embedded too)


def _depth(index: LoadedIndex) -> int:
    return int(getattr(index, "depth", 30))


class PgDenseRetriever(DenseRetriever):
    """Best view per unit in a published pgvector channel: HNSW proposes, SQL scores the candidates exactly."""

    def __init__(self, name: str, index: LoadedIndex, encoder: QueryEncoder) -> None:
        super().__init__(name, index, encoder)
        if not isinstance(self._dense, PgDenseIndex):
            raise TypeError(f"{name} is not a published channel")
        self._pg: PgDenseIndex = self._dense

    def unit_scores(self, texts: Sequence[str], within: np.ndarray | None = None) -> np.ndarray:
        """Mean over ``texts`` of each candidate unit's best view score (candidates among the unit
        positions ``within`` only, when given: a document filter); the rest ``DENSE_UNSCORED``."""
        positions, values = self._pg.unit_scores(self.encoder.encode_many(texts), _depth(self._index), within)
        scores = np.full(len(self._index.nodes), DENSE_UNSCORED, dtype=np.float32)
        scores[positions] = values
        return scores

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        """The 10 best units through llama-index's ``PGVectorStore`` (nearest views, best per unit)."""
        vector = self.encoder.encode(query_bundle.query_str)
        result = self._pg.store().query(VectorStoreQuery(query_embedding=[float(x) for x in vector],
                                                         similarity_top_k=10 * self._pg.max_views))
        best: dict[int, float] = {}
        for node, similarity in zip(result.nodes, result.similarities or [], strict=False):
            position = int(node.metadata["unit_position"])
            best[position] = max(best.get(position, -1.0), float(similarity))
        ranked = sorted(best.items(), key=lambda item: (-item[1], item[0]))[:10]
        return [NodeWithScore(node=self._index.nodes[p], score=s) for p, s in ranked]


class PgSparseRetriever(SparseRetriever):
    """BM25 scored in SQL over a published channel's term tables (``bm25``, ``bm25_k``)."""

    def __init__(self, name: str, index: LoadedIndex, sparse: PgSparseIndex) -> None:  # type: ignore[override]
        super().__init__(name, index, sparse)
        self._pg = sparse
        self._to_nodes = np.argsort(self._to_units)  # sparse position -> unit position

    def unit_scores(self, texts: Sequence[str], within: np.ndarray | None = None) -> np.ndarray:
        """Mean BM25 over ``texts`` of the ``depth`` best units (of the unit positions ``within``, when
        given); the rest ``SPARSE_UNSCORED``."""
        kept = None if within is None else np.sort(self._to_units[within])  # as the channel's positions
        positions, values = self._pg.top_scores(texts, _depth(self._index), kept)
        scores = np.full(len(self._index.nodes), SPARSE_UNSCORED, dtype=np.float32)
        scores[self._to_nodes[positions]] = values
        return scores


def published_scope(index: PgLoadedIndex) -> ScopeModel | None:
    """The scope model published with the version (its files, as the build folder held them)."""
    if not index.files:
        return None
    with tempfile.TemporaryDirectory(prefix="assistant-scope-") as tmp:
        for name, data in index.files.items():
            (Path(tmp) / name).write_bytes(data)
        return ScopeModel.load(Path(tmp))
