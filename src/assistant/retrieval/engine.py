"""``SearchEngine``: loads the index and models once, publishes them as one snapshot, runs the pipeline.

It is the one entry point the answer layer, the CLI, the API, the eval and the calibration use;
``search`` runs :func:`assistant.retrieval.pipeline.run` on the current snapshot. It is thread-safe
(each embedder is guarded by a lock, since the C and BLAS engines are not re-entrant) and caches
query vectors per embedder. It sets no process-global state: entry points tune the process.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal

from assistant.config import Settings, get_settings
from assistant.index.embedders import OfflineEmbedding, available_embedders
from assistant.index.store import (
    KNOWLEDGE_SUFFIX,
    IndexCorrupt,
    IndexMissing,
    IndexProblem,
    IndexStale,
    LoadedIndex,
    build_index,
    load_index,
)
from assistant.ingest.library import Library, UnknownDocument, load_library
from assistant.ingest.models import Corpus
from assistant.retrieval.analysis import QueryAnalyzer
from assistant.retrieval.candidates import DenseRetriever, QueryEncoder, Retriever, SparseRetriever
from assistant.retrieval.documents import document_scopes, positions_of
from assistant.retrieval.followup import FollowupResolver, PriorTurn, load_cues
from assistant.retrieval.pinyin import pinyin_reader
from assistant.retrieval.pipeline import NOT_CITED_FOR_TOPICS, RunOptions, Snapshot, run
from assistant.retrieval.rerank import ClauseRelevance
from assistant.retrieval.scope.answer_types import AnswerTypeCheck
from assistant.retrieval.scope.model import ScopeModel
from assistant.retrieval.scope.places import PlaceCheck
from assistant.retrieval.structure import StructureReader
from assistant.retrieval.types import Hit, SearchResult

__all__ = ["Hit", "SearchEngine", "SearchResult", "UnknownDocument", "calibrator"]

log = logging.getLogger(__name__)

RebuildPolicy = Literal["never", "if_needed", "always"]


class SearchEngine:
    """Loads the index and models once and answers ``search`` calls.

    ``corpus`` is the primary plan; ``library`` (default: the index's, else that plan alone) is every
    document the index holds."""

    def __init__(self, settings: Settings, corpus: Corpus, index: LoadedIndex,
                 scope: ScopeModel | None = None, library: Library | None = None) -> None:
        self.settings = settings
        self.corpus = corpus
        self.library = library or getattr(index, "library", None) or Library.single(corpus)
        self.max_task = max(t.number for t in corpus.tasks)
        self._encoders: dict[str, QueryEncoder] = {}
        self._snapshot = self._build_snapshot(index, scope)
        # e5 and USE release the GIL while they compute: on two cores they encode side by side.
        self._encode_pool = (ThreadPoolExecutor(max_workers=len(self._encoders), thread_name_prefix="encode")
                             if settings.parallel_encoders and len(self._encoders) > 1 else None)

    def _build_snapshot(self, index: LoadedIndex, scope: ScopeModel | None) -> Snapshot:
        """Retrievers and checks for ``index``, as one snapshot (published by a single assignment,
        so a search running during a swap sees either the old state or the new, never a mix)."""
        retrievers: dict[str, Retriever] = {}
        sparse_retriever, dense_retriever = SparseRetriever, DenseRetriever
        if _published(index):  # read from PostgreSQL: only the candidate stage differs
            from assistant.retrieval.pg_candidates import PgDenseRetriever, PgSparseRetriever, published_scope

            sparse_retriever, dense_retriever = PgSparseRetriever, PgDenseRetriever  # type: ignore[assignment]
            scope = scope if scope is not None else published_scope(index)  # type: ignore[arg-type]
        if index.sparse is not None:
            retrievers["bm25"] = sparse_retriever("bm25", index, index.sparse)
        if index.sparse_knowledge is not None:
            retrievers["bm25" + KNOWLEDGE_SUFFIX] = sparse_retriever("bm25" + KNOWLEDGE_SUFFIX, index,
                                                                    index.sparse_knowledge)
        for name, dense in sorted(index.dense.items(), key=lambda item: item[0].endswith(KNOWLEDGE_SUFFIX)):
            base = name.removesuffix(KNOWLEDGE_SUFFIX)  # use_k shares use's encoder and cached vectors
            encoder = self._encoders.get(base)
            if encoder is None or encoder.embedder is not dense.embedder:
                encoder = self._encoders[base] = QueryEncoder(dense.embedder, self.settings.max_query_chars)
            retrievers[name] = dense_retriever(name, index, encoder)
        vocabulary = index.vocabulary
        plan_texts = [t for node in index.nodes for t in (node.text, node.metadata.get("text_en") or "")]
        answer_types = AnswerTypeCheck(vocabulary.answer_types)
        followup = FollowupResolver(load_cues(vocabulary.followup_path, index.analyzer.domain_stopwords))
        refers_back = re.compile(f"{followup.p['zh_pronoun'].pattern}|{followup.p['en_pronoun'].pattern}",
                                 re.IGNORECASE)
        analyzer = QueryAnalyzer(self.settings.max_query_chars, self.max_task, vocabulary.question_cues,
                                 answer_types, PlaceCheck(vocabulary.gazetteer, plan_texts), self.settings.query_focus,
                                 topic_words=lambda text: len(index.analyzer.words(text)), refers_back=refers_back,
                                 pinyin=pinyin_reader(index) if self.settings.pinyin else None,
                                 home=index.analyzer.domain_stopwords)
        unit_texts = [f"{node.text}\n{node.metadata.get('text_en') or ''}" for node in index.nodes]
        thesaurus = index.knowledge.thesaurus if index.knowledge is not None else ()
        relevance = ClauseRelevance(index.analyzer, unit_texts, thesaurus)
        structure = StructureReader(self.corpus, vocabulary.question_cues.structure, index.analyzer.token_set)
        unit_ids = [node.node_id for node in index.nodes]
        documents = document_scopes(self.library, unit_ids, vocabulary.question_cues.structure,
                                    index.analyzer.token_set, index.knowledge)
        return Snapshot(index=index, retrievers=retrievers, followup=followup, structure=structure,
                        documents=documents, not_cited=positions_of(unit_ids, NOT_CITED_FOR_TOPICS),
                        scope=scope if scope is not None else ScopeModel.load(index.folder),
                        analyzer=analyzer, relevance=relevance, answer_types=answer_types,
                        encoders=dict(self._encoders), focus_embedders=frozenset(self.settings.focus_embedders))

    @property
    def snapshot(self) -> Snapshot:
        return self._snapshot

    @property
    def index(self) -> LoadedIndex:
        return self._snapshot.index

    @property
    def retrievers(self) -> dict[str, Retriever]:
        return self._snapshot.retrievers

    @property
    def scope(self) -> ScopeModel | None:
        return self._snapshot.scope

    @property
    def retriever_names(self) -> list[str]:
        return list(self.retrievers)

    @property
    def dense_names(self) -> list[str]:
        return list(self._encoders)

    # --- loading -------------------------------------------------------------------------
    @classmethod
    def load(cls, settings: Settings | None = None, rebuild: RebuildPolicy = "if_needed",
             progress: Callable[[str, int, int], None] | None = None) -> SearchEngine:
        """Load the published index; build it when missing or stale (``if_needed``).

        A corrupt index is refused (``IndexCorrupt``) unless ``rebuild="always"``.
        """
        settings = settings or get_settings()
        library = load_library(settings)
        corpus = library.corpus
        embedders = available_embedders(settings)
        load = load_index
        if settings.backend == "postgres":  # psycopg is imported only in this mode
            from assistant.index.pg_store import load_published, publish_build

            load = load_published  # type: ignore[assignment]

        def build() -> None:
            folder = build_index(settings, library, embedders, progress,
                                 before_publish=calibrator(settings, library, embedders))
            if settings.backend == "postgres":  # the embedded build, then copied in as a new version
                publish_build(settings, library, embedders, folder)

        if rebuild == "always":
            build()
        try:
            index = load(settings, library, embedders)
        except (IndexMissing, IndexStale) as exc:
            if rebuild == "never":
                raise
            log.warning("%s: building the index", exc)
            build()
            index = load(settings, library, embedders)
        return cls(settings, corpus, index, library=library)

    def reload(self) -> bool:
        """Swap in a newly published index (atomically for readers); True when it changed."""
        embedders = {n: e.embedder for n, e in self._encoders.items()}
        if _published(self.index):  # one query when the published version is still the same
            from assistant.index.pg_store import load_published

            index = load_published(self.settings, self.library, embedders, previous=self.index)
        else:
            index = load_index(self.settings, self.library, embedders)
        if index.folder == self.index.folder:
            return False
        self._snapshot = self._build_snapshot(index, None)
        return True

    def warm_up(self) -> None:
        """One Chinese and one English search, so the first user waits for no lazy load."""
        for text in ("外商投资服务业开放", "foreign investment in services"):
            self.search(text, top_k=1)

    def clear_query_cache(self) -> None:
        """Forget cached query vectors (for cold-latency measurements)."""
        for encoder in self._encoders.values():
            encoder.cache_clear()

    def close(self) -> None:
        if self._encode_pool is not None:
            self._encode_pool.shutdown(wait=False)
        if _published(self.index):
            self.index.db.close()  # type: ignore[attr-defined]

    # --- search --------------------------------------------------------------------------
    def search(self, query: str, top_k: int = 10, retrievers: Sequence[str] | None = None,
               use_lookup: bool | None = None, rerank: bool | None = None,
               context: Sequence[PriorTurn] = (), document: str | None = None) -> SearchResult:
        """Ranked tasks and passages for ``query``, best first, with the answerability decision.

        ``context`` is the conversation's earlier turns (oldest first): the follow-up stage resolves
        the question against them. ``document`` (a document number) restricts the search to that
        document's units; an unknown number raises :class:`UnknownDocument`.
        """
        if document is not None:
            document = self.library.require(document).number
        options = RunOptions(top_k=top_k, retrievers=retrievers,
                             use_lookup=self.settings.lookup if use_lookup is None else use_lookup,
                             rerank=self.settings.rerank if rerank is None else rerank, document=document)
        return run(self._snapshot, self.settings, self._encode_pool, query, options, context)


def _published(index: LoadedIndex) -> bool:
    """True for a version read from PostgreSQL (``pg_store.PgLoadedIndex``), told without importing psycopg."""
    return getattr(index, "backend", "embedded") == "postgres"


def calibrator(settings: Settings, corpus: Corpus | Library,
               embedders: dict[str, OfflineEmbedding]) -> Callable[[Path], None]:
    """A ``before_publish`` hook: calibrate the scope model into the new build (on the primary plan's
    questions, searched in the primary plan's units only: other documents do not change the model)."""
    library = corpus if isinstance(corpus, Library) else Library.single(corpus)

    def calibrate(folder: Path) -> None:
        from assistant.retrieval.scope.calibration import calibrate_scope

        try:
            index = load_index(settings, library, embedders, folder=folder)
        except IndexProblem as exc:  # pragma: no cover - just built
            raise IndexCorrupt(f"the new index does not load: {exc}") from exc
        engine = SearchEngine(settings, library.corpus, index, scope=None, library=library)
        try:
            model = calibrate_scope(engine, settings)
        finally:
            engine.close()
        if model is not None:
            model.save(folder)

    return calibrate
