"""Build, persist and load the index under ``index/``.

Layout::

    index/current -> builds/<stamp>      (a symlink, swapped atomically)
    index/builds/<stamp>/manifest.json   embedders and versions, corpus sha256, file checksums
    index/builds/<stamp>/docstore.json   llama-index docstore of the units
    index/builds/<stamp>/dense/<name>.faiss + <name>.views.json
    index/builds/<stamp>/bm25/...

A build writes into ``builds/.tmp-*`` and publishes by replacing the ``current`` symlink
(``os.replace`` is atomic), so a build killed midway leaves the previous index untouched.
Loading verifies the manifest: a stale index (other corpus or embedders) or a corrupt one
(missing or altered files) is never used silently.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from llama_index.core.schema import TextNode
from llama_index.core.storage.docstore import SimpleDocumentStore
from llama_index.vector_stores.faiss import FaissVectorStore

from assistant.config import Settings
from assistant.index.analyzer import TextAnalyzer
from assistant.index.embedders import OfflineEmbedding, available_embedders
from assistant.index.manifest import (
    KNOWLEDGE_SUFFIX,
    IndexCorrupt,
    IndexMissing,
    IndexProblem,
    IndexStale,
    corpus_fingerprint,
    dense_channels,
    index_config,
    read_manifest,
    unit_knowledge,
    verify,
    write_manifest,
)
from assistant.index.sparse import SparseIndex
from assistant.index.units import domain_stopwords, knowledge_views, library_nodes, library_views, sparse_text
from assistant.ingest.knowledge import Knowledge
from assistant.ingest.library import Library, as_library, load_library
from assistant.ingest.models import Corpus
from assistant.ingest.vocabulary import Vocabulary, load_vocabulary

__all__ = ["KNOWLEDGE_SUFFIX", "DenseIndex", "IndexCorrupt", "IndexMissing", "IndexProblem", "IndexStale",
           "LoadedIndex", "build_index", "corpus_analyzer", "corpus_fingerprint", "current_build", "load_index",
           "read_manifest"]

log = logging.getLogger(__name__)

@dataclass
class DenseIndex:
    """One embedder's FAISS index over a channel's views (rows grouped by unit).

    Scoring reads the flat index's vectors once as a matrix: one matrix-vector product and a
    per-unit maximum over its contiguous rows (``np.maximum.reduceat``) score every unit, which for a
    few thousand views is cheaper than a FAISS top-k over all rows followed by a scatter.
    """

    embedder: OfflineEmbedding
    store: FaissVectorStore
    view_units: list[str]  # row -> unit id
    _matrix: np.ndarray = field(init=False, repr=False)
    _order: np.ndarray = field(init=False, repr=False)
    _starts: np.ndarray = field(init=False, repr=False)
    _units: list[str] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        index = self.store.client
        matrix = index.reconstruct_n(0, index.ntotal) if index.ntotal else np.zeros((0, index.d), np.float32)
        order = np.argsort(np.array(self.view_units), kind="stable")  # rows of one unit together
        units = [self.view_units[i] for i in order]
        starts = [i for i in range(len(units)) if i == 0 or units[i] != units[i - 1]]
        self._matrix = np.ascontiguousarray(matrix[order], dtype=np.float32)
        self._starts = np.array(starts, dtype=np.int64)
        self._units = [units[i] for i in starts]
        self._order = np.empty(0, dtype=np.int64)

    def unit_scores(self, query_vector: np.ndarray, unit_index: dict[str, int]) -> np.ndarray:
        """Best cosine similarity per unit (max over its views), in ``unit_index`` order."""
        sims = self._matrix @ query_vector.astype(np.float32).ravel()
        best_per_unit = np.maximum.reduceat(sims, self._starts) if sims.size else sims
        scores = np.full(len(unit_index), -1.0, dtype=np.float32)
        scores[self._positions(unit_index)] = best_per_unit
        return scores

    def _positions(self, unit_index: dict[str, int]) -> np.ndarray:
        """Unit position of each scored unit, computed once per unit order."""
        if self._order.size != len(self._units) or getattr(self, "_for", None) is not unit_index:
            self._order = np.array([unit_index[u] for u in self._units], dtype=np.int64)
            self._for = unit_index
        return self._order


@dataclass
class LoadedIndex:
    folder: Path
    manifest: dict
    nodes: list[TextNode]
    dense: dict[str, DenseIndex]
    sparse: SparseIndex | None
    sparse_knowledge: SparseIndex | None = None
    analyzer: TextAnalyzer | None = None
    vocabulary: Vocabulary | None = None
    knowledge: Knowledge | None = None
    library: Library | None = None  # the documents whose units these are
    unit_index: dict[str, int] = field(init=False)

    def __post_init__(self) -> None:
        self.unit_index = {node.node_id: i for i, node in enumerate(self.nodes)}

    def node(self, unit_id: str) -> TextNode | None:
        position = self.unit_index.get(unit_id)
        return None if position is None else self.nodes[position]




def corpus_analyzer(vocabulary: Vocabulary, corpus: Corpus) -> TextAnalyzer:
    """The one analyser of this corpus: the vocabulary's stop words plus the corpus's city."""
    return TextAnalyzer(vocabulary.stopwords, domain_stopwords(corpus))


def build_index(
    settings: Settings,
    corpus: Corpus | Library | None = None,
    embedders: dict[str, OfflineEmbedding] | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    before_publish: Callable[[Path], None] | None = None,
) -> Path:
    """Build every configured index into a temporary folder, then publish it atomically.

    Every document of the library gets text views and BM25; the task knowledge is the primary plan's."""
    library = as_library(corpus) if corpus is not None else load_library(settings)
    embedders = embedders if embedders is not None else available_embedders(settings)
    root = settings.index_path
    builds = root / "builds"
    builds.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S") + f"-{os.getpid()}-{time.monotonic_ns() % 10**6}"
    tmp = builds / f".tmp-{stamp}"
    tmp.mkdir()
    started = time.perf_counter()
    report = progress or (lambda stage, done, total: None)
    try:
        nodes = library_nodes(library)
        views = library_views(library)
        analyzer = corpus_analyzer(load_vocabulary(settings.annotations_path), library.corpus)
        knowledge = unit_knowledge(settings, library)
        channels = {"": views}
        if knowledge is not None:
            channels[KNOWLEDGE_SUFFIX] = knowledge_views(knowledge, [n.node_id for n in nodes])
        docstore = SimpleDocumentStore()
        docstore.add_documents(nodes)
        docstore.persist(str(tmp / "docstore.json"))
        (tmp / "dense").mkdir()
        embedder_info = []
        for step, (name, embedder) in enumerate(embedders.items()):
            report(f"embedding ({name})", step, len(embedders) + 1)
            for suffix, channel_views in channels.items():
                _write_dense(tmp / "dense", name + suffix, embedder, channel_views, settings.native_path)
            embedder_info.append(embedder.describe())
        report("bm25", len(embedders), len(embedders) + 1)
        if settings.bm25:
            SparseIndex.build([n.node_id for n in nodes], [sparse_text(n) for n in nodes],
                              analyzer).save(tmp / "bm25")
            if knowledge is not None:
                SparseIndex.build([n.node_id for n in nodes],
                                  [_knowledge_text(knowledge, n.node_id) for n in nodes],
                                  analyzer).save(tmp / f"bm25{KNOWLEDGE_SUFFIX}")
        report("done", len(embedders) + 1, len(embedders) + 1)

        manifest = {
            **index_config(settings, embedders),
            "built_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "build_seconds": round(time.perf_counter() - started, 3),
            "doc_number": library.corpus.meta.doc_number,
            "documents": library.numbers,
            "source_sha256": library.corpus.source_sha256,
            "corpus_sha256": corpus_fingerprint(library),
            "units": len(nodes),
            "views": {suffix or "text": len(v) for suffix, v in channels.items()},
            "knowledge_sha256": knowledge.sha256 if knowledge is not None else None,
            "embedder_info": embedder_info,
        }
        write_manifest(tmp, manifest)
        if before_publish is not None:
            before_publish(tmp)  # calibration writes scope files: checksum them with the rest
            write_manifest(tmp, manifest)
        final = builds / stamp
        tmp.rename(final)
        _publish(root, final)
        return final
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _knowledge_text(knowledge: Knowledge, unit_id: str) -> str:
    """A unit's knowledge field for BM25; empty for the units of documents without reviewed knowledge."""
    unit = knowledge.get(unit_id)
    return unit.sparse_text() if unit is not None else ""


def encode_cached(embedder: OfflineEmbedding, texts: list[str], cache_dir: Path) -> np.ndarray:
    """Passage vectors, reusing those a previous build computed with the same model and engine.

    Most rebuilds (a code or vocabulary change, every test session) embed the same ~3,500 views
    again; the cache in ``var/native`` is keyed by the embedder's description and each text's sha256.
    """
    import hashlib

    key = hashlib.sha256(json.dumps(embedder.describe(), sort_keys=True).encode()).hexdigest()[:16]
    path = cache_dir / f"passages-{embedder.key}-{key}.npz"
    cache: dict[str, np.ndarray] = {}
    if path.is_file():
        try:
            with np.load(path) as data:
                cache = dict(zip(data["keys"].tolist(), data["vectors"], strict=True))
        except (OSError, ValueError, KeyError) as exc:
            log.warning("passage vector cache %s unreadable (%s); encoding afresh", path, exc)
    keys = [hashlib.sha256(t.encode("utf-8")).hexdigest() for t in texts]
    missing = {k: t for k, t in zip(keys, texts, strict=True) if k not in cache}
    if missing:
        vectors = embedder.encode_passages(list(missing.values()))
        cache.update(zip(missing, vectors, strict=True))
        try:
            cache_dir.mkdir(parents=True, exist_ok=True)
            staging = path.with_name(f".{path.name}.{os.getpid()}.npz")
            np.savez(staging, keys=np.array(list(cache)), vectors=np.stack(list(cache.values())))
            os.replace(staging, path)
        except OSError as exc:  # a read-only cache folder only costs time
            log.warning("passage vector cache %s not written (%s)", path, exc)
    return np.stack([cache[k] for k in keys]).astype(np.float32)


def _write_dense(folder: Path, name: str, embedder: OfflineEmbedding, views: list, cache_dir: Path) -> None:
    """One FAISS inner-product index over ``views`` and its row -> unit map."""
    import faiss

    vectors = encode_cached(embedder, [v.text for v in views], cache_dir)
    store = FaissVectorStore(faiss_index=faiss.IndexFlatIP(vectors.shape[1]))
    store.add([TextNode(id_=f"{v.unit_id}#{v.lang}#{i}", text=v.text, embedding=vec.tolist())
               for i, (v, vec) in enumerate(zip(views, vectors, strict=True))])
    store.persist(str(folder / f"{name}.faiss"))
    (folder / f"{name}.views.json").write_text(json.dumps([v.unit_id for v in views]), encoding="utf-8")


def _publish(root: Path, build: Path) -> None:
    link = root / "current"
    staging = root / f".current-{os.getpid()}"
    if staging.is_symlink() or staging.exists():
        staging.unlink()
    staging.symlink_to(build.relative_to(root))
    os.replace(staging, link)
    _prune(root, keep={build.name})


def _prune(root: Path, keep: set[str]) -> None:
    """Remove older builds and dead temporaries, keeping the live one and its predecessor."""
    builds = sorted((p for p in (root / "builds").iterdir() if p.is_dir() and not p.name.startswith(".tmp-")),
                    key=lambda p: p.name)
    for old in builds[:-2]:
        if old.name not in keep:
            shutil.rmtree(old, ignore_errors=True)
    for tmp in (root / "builds").glob(".tmp-*"):
        # a temporary of a live build by another process is young; one left by a killed build is old
        if time.time() - tmp.stat().st_mtime > 3600:
            shutil.rmtree(tmp, ignore_errors=True)


def current_build(settings: Settings) -> Path:
    link = settings.index_path / "current"
    if not link.exists():
        raise IndexMissing(f"no index at {settings.index_path}; build it with `policy-assistant ingest`")
    return link.resolve()


def load_index(settings: Settings, corpus: Corpus | Library | None = None,
               embedders: dict[str, OfflineEmbedding] | None = None, folder: Path | None = None) -> LoadedIndex:
    """Load and verify the published index (or ``folder``); raises IndexMissing/Stale/Corrupt."""
    import faiss

    library = as_library(corpus) if corpus is not None else load_library(settings)
    folder = folder or current_build(settings)
    embedders = embedders if embedders is not None else available_embedders(settings)
    manifest = verify(folder, settings, library, set(embedders))
    try:
        docstore = SimpleDocumentStore.from_persist_path(str(folder / "docstore.json"))
        nodes = [docstore.get_node(uid) for uid in (n.node_id for n in library_nodes(library))]
        dense = {}
        for name, key in dense_channels(manifest, embedders):
            store = FaissVectorStore(faiss_index=faiss.read_index(str(folder / "dense" / f"{key}.faiss")))
            view_units = json.loads((folder / "dense" / f"{key}.views.json").read_text(encoding="utf-8"))
            if store.client.ntotal != len(view_units) or store.client.d != embedders[name].dim:
                raise IndexCorrupt(f"{key} vectors do not match the embedder; rebuild with "
                                   "`policy-assistant ingest`")
            dense[key] = DenseIndex(embedders[name], store, view_units)
        vocabulary = load_vocabulary(settings.annotations_path)
        analyzer = corpus_analyzer(vocabulary, library.corpus)
        sparse = SparseIndex.load(folder / "bm25", analyzer) if manifest.get("bm25") else None
        sparse_k = (SparseIndex.load(folder / f"bm25{KNOWLEDGE_SUFFIX}", analyzer)
                    if manifest.get("bm25") and manifest.get("knowledge") else None)
    except (ValueError, KeyError, RuntimeError, OSError) as exc:
        if isinstance(exc, IndexProblem):
            raise
        raise IndexCorrupt(f"index in {folder} cannot be read ({exc}); rebuild with `policy-assistant ingest`"
                           ) from exc
    return LoadedIndex(folder=folder, manifest=manifest, nodes=nodes, dense=dense, sparse=sparse,
                       sparse_knowledge=sparse_k, analyzer=analyzer, vocabulary=vocabulary,
                       knowledge=unit_knowledge(settings, library), library=library)
