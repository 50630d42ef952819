"""Hybrid search: dense (USE, e5, sentence-transformers) + BM25, fused, with lookup and scope.

``SearchEngine`` is the one entry point the answer layer, the CLI, the API and the eval use.
It loads models and the index once; ``search`` is thread-safe (each embedder is guarded by
a lock, since the C and BLAS engines are not re-entrant) and caches query embeddings.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
import unicodedata
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from llama_index.core import QueryBundle
from llama_index.core.retrievers import BaseRetriever
from llama_index.core.schema import NodeWithScore

from assistant.config import Settings, get_settings
from assistant.index.embedders import OfflineEmbedding, available_embedders
from assistant.index.store import (
    IndexCorrupt,
    IndexMissing,
    IndexProblem,
    IndexStale,
    LoadedIndex,
    build_index,
    load_index,
)
from assistant.ingest.corpus import load_corpus
from assistant.ingest.models import Corpus
from assistant.retrieval.answer_type import expected_types, unmet_types
from assistant.retrieval.fusion import fuse
from assistant.retrieval.lookup import Lookup, find_task_references
from assistant.retrieval.places import PlaceCheck
from assistant.retrieval.scope import ScopeModel, evidence_features
from assistant.text import detect_language

log = logging.getLogger(__name__)

RebuildPolicy = Literal["never", "if_needed", "always"]
# The embedder of question forms for the scope model: USE, the cheap one (~2 ms a query). 5-fold CV on the
# calibration pool: with its form neighbours 0.914 OOS flagged at 3.3% false flags, without 0.905 at 3.5%.
FORM_EMBEDDER = "use"


@dataclass
class Hit:
    """One ranked unit: a task or a body section."""

    unit_id: str
    task: int | None
    section: str  # the task's category, or the section's heading path
    text: str
    text_en: str | None
    score: float
    retrievers: dict[str, int] = field(default_factory=dict)  # retriever -> rank where it found the unit
    kind: str = "task"
    category_no: int | None = None
    section_id: str | None = None
    linked_tasks: list[int] = field(default_factory=list)
    lookup: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"task": self.task, "section": self.section, "text": self.text, "text_en": self.text_en,
                "score": round(float(self.score), 6), "unit_id": self.unit_id, "kind": self.kind,
                "category_no": self.category_no, "section_id": self.section_id,
                "retrievers": self.retrievers, "linked_tasks": self.linked_tasks}


@dataclass
class SearchResult:
    query: str
    lang: str
    in_scope: bool
    confidence: float
    hits: list[Hit]
    lookup: Lookup
    timings_ms: dict[str, float]
    features: dict[str, float] = field(default_factory=dict)

    @property
    def message(self) -> str | None:
        """A plain statement for lookups of numbers the annex does not have."""
        if self.lookup.invalid and not self.lookup.valid:
            numbers = "、".join(str(n) for n in self.lookup.invalid)
            return (f"没有第{numbers}项任务 / There is no task {', '.join(map(str, self.lookup.invalid))} "
                    "in the annex.")
        return None

    def to_json(self) -> dict[str, Any]:
        data = {"query": self.query, "in_scope": self.in_scope, "lang": self.lang,
                "confidence": round(self.confidence, 4), "results": [h.to_json() for h in self.hits]}
        if self.lookup:
            data["lookup"] = {"requested": self.lookup.requested, "invalid": self.lookup.invalid}
        if self.message:
            data["message"] = self.message
        return data


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

    def encode(self, query: str, also: Sequence[str] = ()) -> np.ndarray:
        """The vector of ``query``; texts in ``also`` are encoded in the same batch and cached
        (one call streams the model's weights once, cheaper than a call per text)."""
        with self._lock:
            vector = self._cached(query)
            missing = [t for t in dict.fromkeys([query, *also]) if self._cached(t) is None]
            if not missing:
                return vector
            vectors = self.embedder.encode_queries([t[: self._max_chars] for t in missing])
            for text, row in zip(missing, vectors, strict=True):
                self._cache[text] = row
                self._cache.move_to_end(text)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
            return self._cache[query]

    def cache_clear(self) -> None:
        with self._lock:
            self._cache.clear()

    def __len__(self) -> int:
        return len(self._cache)


class DenseRetriever(BaseRetriever):
    """llama-index retriever over one embedder's FAISS index (best view per unit)."""

    def __init__(self, name: str, index: LoadedIndex, encoder: QueryEncoder) -> None:
        super().__init__()
        self.name = name
        self._dense = index.dense[name]
        self._index = index
        self._encoder = encoder

    @property
    def embedder(self) -> OfflineEmbedding:
        return self._dense.embedder

    def unit_scores(self, query: str, also: Sequence[str] = ()) -> np.ndarray:
        return self._dense.unit_scores(self._encoder.encode(query, also), self._index.unit_index)

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return _top_nodes(self._index, self.unit_scores(query_bundle.query_str), 10)


class SparseRetriever(BaseRetriever):
    """llama-index retriever over the bm25s index (jieba + English word tokens)."""

    name = "bm25"

    def __init__(self, index: LoadedIndex) -> None:
        super().__init__()
        self._index = index
        self._sparse = index.sparse
        order = {uid: i for i, uid in enumerate(index.sparse.unit_ids)}
        self._to_units = np.array([order[n.node_id] for n in index.nodes])

    def unit_scores(self, query: str) -> np.ndarray:
        return self._sparse.scores(query)[self._to_units]

    def coverage(self, query: str, unit_position: int) -> tuple[float, float]:
        return self._sparse.coverage(query, int(self._to_units[unit_position]))

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return _top_nodes(self._index, self.unit_scores(query_bundle.query_str), 10)


def _timed_scores(retriever: DenseRetriever | SparseRetriever, query: str,
                  also: Callable[[], list[str]] | None = None) -> tuple[np.ndarray, float]:
    started = time.perf_counter()
    if also is not None and isinstance(retriever, DenseRetriever):
        scores = retriever.unit_scores(query, also())
    else:
        scores = retriever.unit_scores(query)
    return scores, (time.perf_counter() - started) * 1000


def _top_nodes(index: LoadedIndex, scores: np.ndarray, k: int) -> list[NodeWithScore]:
    order = np.argsort(-scores)[:k]
    return [NodeWithScore(node=index.nodes[i], score=float(scores[i])) for i in order]


class Reranker:
    """Optional sentence-transformers CrossEncoder from a local folder."""

    def __init__(self, path: Path) -> None:
        from sentence_transformers import CrossEncoder  # lazy: torch only when configured

        self._model = CrossEncoder(str(path), device="cpu", local_files_only=True)
        self._lock = threading.Lock()

    def scores(self, query: str, texts: Sequence[str]) -> np.ndarray:
        with self._lock:
            return np.asarray(self._model.predict([(query, t) for t in texts], show_progress_bar=False))


def normalise_query(query: str) -> str:
    """NFKC (full-width digits and letters to ASCII) and collapsed whitespace."""
    return " ".join(unicodedata.normalize("NFKC", query).split())


@dataclass(frozen=True)
class _Snapshot:
    index: LoadedIndex
    retrievers: dict[str, Any]
    scope: ScopeModel | None
    places: PlaceCheck


class SearchEngine:
    """Loads the index and models once and answers ``search`` calls."""

    def __init__(self, settings: Settings, corpus: Corpus, index: LoadedIndex,
                 scope: ScopeModel | None = None, reranker: Reranker | None = None) -> None:
        self.settings = settings
        self.corpus = corpus
        self.max_task = max(t.number for t in corpus.tasks)
        self.reranker = reranker
        self._encoders: dict[str, QueryEncoder] = {}
        self._install(index, scope)
        # Both engines release the GIL while they compute, so on two cores e5 and USE run side
        # by side and a query costs about its slowest encoder instead of the sum.
        self._encode_pool = (ThreadPoolExecutor(max_workers=len(self._encoders), thread_name_prefix="encode")
                             if settings.parallel_encoders and len(self._encoders) > 1 else None)
        if self._encode_pool is not None and settings.gil_switch_interval_ms > 0:
            sys.setswitchinterval(settings.gil_switch_interval_ms / 1000)

    def _install(self, index: LoadedIndex, scope: ScopeModel | None) -> None:
        """Build retrievers for ``index`` and publish them as one snapshot (a single assignment,
        so a search running during a swap sees either the old state or the new, never a mix)."""
        retrievers: dict[str, Any] = {}
        if index.sparse is not None:
            retrievers["bm25"] = SparseRetriever(index)
        for name, dense in index.dense.items():
            encoder = self._encoders.get(name)
            if encoder is None or encoder.embedder is not dense.embedder:
                encoder = self._encoders[name] = QueryEncoder(dense.embedder, self.settings.max_query_chars)
            retrievers[name] = DenseRetriever(name, index, encoder)
        places = PlaceCheck(t for node in index.nodes for t in (node.text, node.metadata.get("text_en") or ""))
        self._snapshot = _Snapshot(index, retrievers, scope if scope is not None else ScopeModel.load(index.folder),
                                   places)

    @property
    def index(self) -> LoadedIndex:
        return self._snapshot.index

    @property
    def retrievers(self) -> dict[str, Any]:
        return self._snapshot.retrievers

    @property
    def scope(self) -> ScopeModel | None:
        return self._snapshot.scope

    # --- loading -------------------------------------------------------------------------
    @classmethod
    def load(cls, settings: Settings | None = None, rebuild: RebuildPolicy = "if_needed",
             progress: Callable[[str, int, int], None] | None = None) -> SearchEngine:
        """Load the published index; build it when missing or stale (``if_needed``).

        A corrupt index is refused (``IndexCorrupt``) unless ``rebuild="always"``.
        """
        settings = settings or get_settings()
        corpus = load_corpus(settings)
        embedders = available_embedders(settings)
        if rebuild == "always":
            build_index(settings, corpus, embedders, progress, before_publish=calibrator(settings, corpus, embedders))
        try:
            index = load_index(settings, corpus, embedders)
        except (IndexMissing, IndexStale) as exc:
            if rebuild == "never":
                raise
            log.warning("%s: building the index", exc)
            build_index(settings, corpus, embedders, progress, before_publish=calibrator(settings, corpus, embedders))
            index = load_index(settings, corpus, embedders)
        reranker = Reranker(settings.reranker_path) if settings.reranker_path else None
        return cls(settings, corpus, index, reranker=reranker)

    def reload(self) -> bool:
        """Swap in a newly published index (atomically for readers); True when it changed."""
        index = load_index(self.settings, self.corpus, {n: e.embedder for n, e in self._encoders.items()})
        if index.folder == self.index.folder:
            return False
        self._install(index, None)
        return True

    @property
    def dense_names(self) -> list[str]:
        return list(self._encoders)

    def query_vectors(self, text: str) -> dict[str, np.ndarray]:
        """The (cached) query vector of every dense embedder."""
        return {name: encoder.encode(text) for name, encoder in self._encoders.items()}

    def warm_up(self) -> None:
        """One Chinese and one English search, so the first user waits for no lazy load."""
        for text in ("外商投资服务业开放", "foreign investment in services"):
            self.search(text, top_k=1)

    def scope_vectors(self, text: str, snapshot: _Snapshot | None = None) -> dict[str, np.ndarray]:
        """The vectors the scope model's neighbour features compare: the query's, per embedder,
        and (``form_<embedder>``) that of its question form, the question minus the topic words
        the index knows (see ``SparseIndex.question_form``)."""
        vectors = self.query_vectors(text)
        form = self._form_vector(text, snapshot or self._snapshot)
        if form is not None:
            vectors[f"form_{FORM_EMBEDDER}"] = form
        return vectors

    def _form_vector(self, text: str, snapshot: _Snapshot) -> np.ndarray | None:
        sparse = snapshot.index.sparse
        if sparse is None or FORM_EMBEDDER not in self._encoders:
            return None
        return self._encoders[FORM_EMBEDDER].encode(sparse.question_form(text) or "?")

    def clear_query_cache(self) -> None:
        """Forget cached query vectors (for cold-latency measurements)."""
        for encoder in self._encoders.values():
            encoder.cache_clear()

    @property
    def retriever_names(self) -> list[str]:
        return list(self.retrievers)

    # --- search --------------------------------------------------------------------------
    def unit_scores(self, query: str, retrievers: Sequence[str] | None = None, snapshot: _Snapshot | None = None,
                    also: Mapping[str, Callable[[], list[str]]] | None = None,
                    ) -> tuple[dict[str, np.ndarray], dict[str, float]]:
        """Scores of every unit per retriever, and the time each took (ms).

        ``also`` gives a dense retriever more texts to encode in the same batch as the query
        (computed in its own thread), so the scope model's extra vectors cost no extra pass.
        """
        also = also or {}
        active = (snapshot or self._snapshot).retrievers
        names = list(retrievers) if retrievers is not None else list(active)
        unknown = [n for n in names if n not in active]
        if unknown:
            raise ValueError(f"unknown retrievers {unknown}; available: {list(active)}")
        pending: dict[str, Future] = {}
        if self._encode_pool is not None:
            dense = [n for n in names if isinstance(active[n], DenseRetriever)]
            if len(dense) > 1:
                pending = {n: self._encode_pool.submit(_timed_scores, active[n], query, also.get(n)) for n in dense}
        results = {n: _timed_scores(active[n], query, also.get(n)) for n in names if n not in pending}
        results.update({n: future.result() for n, future in pending.items()})
        scores = {n: results[n][0] for n in names}
        timings = {n: results[n][1] for n in names}
        return scores, timings

    def fuse(self, scores: dict[str, np.ndarray]) -> tuple[list[tuple[int, float]], dict[int, dict[str, int]]]:
        weights = {name: self.settings.fusion_weights.get(name, 1.0) for name in scores}
        return fuse(scores, weights, method=self.settings.fusion, k=self.settings.rrf_k,
                    depth=self.settings.candidates_per_retriever)

    def evidence(self, text: str, scores: dict[str, np.ndarray], lang: str,
                 fused: list[tuple[int, float]] | None = None, snapshot: _Snapshot | None = None
                 ) -> dict[str, float]:
        """Scope features: retrieval evidence plus how much of the question the index knows."""
        snapshot = snapshot or self._snapshot
        fused = fused if fused is not None else self.fuse(scores)[0]
        features = evidence_features(scores, lang, fused)
        top_nodes = [snapshot.index.nodes[position] for position, _ in fused[:3]]
        top_texts = [t for node in top_nodes for t in (node.text, node.metadata.get("text_en") or "")]
        features["detail_unmet"] = float(bool(unmet_types(text, top_texts)))
        # The question asks for a figure, a date, a condition … and the best unit itself states one:
        # the opposite evidence to detail_unmet, weighed by how much of the question that unit holds.
        asked = expected_types(text)
        met_top = bool(asked) and bool(top_nodes) and not unmet_types(text, top_texts[:2])
        features["other_place"] = float(bool(snapshot.places.unknown(text)))
        sparse = snapshot.retrievers.get("bm25")
        if sparse is not None and fused:
            features["coverage"], features["top_support"] = sparse.coverage(text, fused[0][0])
        features["detail_met_support"] = float(met_top) * features.get("top_support", 0.0)
        if snapshot.scope is not None and snapshot.scope.examples is not None:
            features.update(snapshot.scope.examples.features(self.scope_vectors(text, snapshot)))
        return features

    def search(self, query: str, top_k: int = 10, retrievers: Sequence[str] | None = None,
               use_lookup: bool | None = None) -> SearchResult:
        """Ranked tasks and passages for ``query``, best first, with an in-scope decision."""
        started = time.perf_counter()
        snapshot = self._snapshot  # one consistent state, even while a new index is swapped in
        index, scope = snapshot.index, snapshot.scope
        text = normalise_query(query)[: self.settings.max_query_chars]
        lang = detect_language(text)
        use_lookup = self.settings.lookup if use_lookup is None else use_lookup
        lookup = find_task_references(text, self.max_task) if use_lookup else Lookup()

        also = {}
        if scope is not None and scope.examples is not None and index.sparse is not None:
            sparse = index.sparse  # the scope model's question-form vector, batched with the query's
            also[FORM_EMBEDDER] = lambda: [sparse.question_form(text) or "?"]
        scores, timings = self.unit_scores(text, retrievers, snapshot, also=also) if text else ({}, {})
        fusion_started = time.perf_counter()
        fused, ranks = self.fuse(scores)
        features = self.evidence(text, scores, lang, fused, snapshot) if scores else {}
        if self.reranker is not None and fused:
            fused = self._rerank(text, fused, index)
        timings["fusion"] = (time.perf_counter() - fusion_started) * 1000

        head = fused[: top_k + len(lookup.valid)]  # enough to fill top_k after lookups move up
        hits = [self._hit(index, position, score, ranks.get(position, {})) for position, score in head]
        if lookup.valid:
            wanted = [f"task:{n}" for n in lookup.valid]
            top = max((h.score for h in hits), default=1.0)
            first = [self._hit(index, index.unit_index[uid], top + len(wanted) - i, {}, is_lookup=True)
                     for i, uid in enumerate(wanted)]
            hits = first + [h for h in hits if h.unit_id not in wanted]

        if lookup:
            in_scope, confidence = bool(lookup.valid), 1.0
        elif not scores:
            in_scope, confidence = False, 0.0
        elif scope is not None:
            in_scope, confidence = scope.in_scope(features)
        else:
            in_scope, confidence = True, 0.5
        timings["total"] = (time.perf_counter() - started) * 1000
        return SearchResult(query=query, lang=lang, in_scope=in_scope, confidence=confidence,
                            hits=hits[:top_k], lookup=lookup, timings_ms=timings, features=features)

    def _rerank(self, query: str, fused: list[tuple[int, float]], index: LoadedIndex) -> list[tuple[int, float]]:
        head = fused[:20]
        texts = [_display_text(index.nodes[p], "en" if detect_language(query) == "en" else "zh") for p, _ in head]
        scores = self.reranker.scores(query, texts)
        reranked = sorted(zip([p for p, _ in head], scores.tolist(), strict=True), key=lambda x: -x[1])
        return reranked + fused[20:]

    @staticmethod
    def _hit(index: LoadedIndex, position: int, score: float, ranks: dict[str, int],
             is_lookup: bool = False) -> Hit:
        node = index.nodes[position]
        meta = node.metadata
        return Hit(unit_id=node.node_id, task=meta.get("task"), section=meta["section"], text=node.text,
                   text_en=meta.get("text_en"), score=float(score), retrievers=dict(ranks), kind=meta["kind"],
                   category_no=meta.get("category_no"), section_id=meta.get("section_id"),
                   linked_tasks=list(meta.get("tasks") or []), lookup=is_lookup)


def _display_text(node, lang: str) -> str:
    meta = node.metadata
    if lang == "en" and meta.get("text_en"):
        return meta["text_en"]
    return node.text


def calibrator(settings: Settings, corpus: Corpus,
               embedders: dict[str, OfflineEmbedding]) -> Callable[[Path], None]:
    """A ``before_publish`` hook: calibrate the scope model on the dev split into the new build."""

    def calibrate(folder: Path) -> None:
        from assistant.retrieval.calibration import calibrate_scope

        try:
            index = load_index(settings, corpus, embedders, folder=folder)
        except IndexProblem as exc:  # pragma: no cover - just built
            raise IndexCorrupt(f"the new index does not load: {exc}") from exc
        engine = SearchEngine(settings, corpus, index, scope=None)
        model = calibrate_scope(engine, settings)
        if model is not None:
            model.save(folder)

    return calibrate
