"""Publish an index into PostgreSQL as versions, and load the published one (``ASSISTANT_BACKEND=postgres``).

The embedded build (FAISS + bm25s files, calibrated) stays the one way to build; publishing copies
a loaded build into schema ``assistant_index`` (or another)::

    versions (version, build, state, manifest)   one row per version ('writing' until complete)
    published (version, previous)                the ONE row readers follow
    v<N>_units, v<N>_files, v<N>_channels         units (position, node id, text, metadata), the scope
                                                  model's files, per-channel statistics
    data_v<N>_<emb>[_k]                           view vectors (pg_dense: PGVectorStore layout + HNSW)
    v<N>_postings|lengths|terms_bm25[_k]          BM25 term statistics (pg_sparse)

A version's tables are written in one transaction and never change afterwards; it becomes visible
when one transaction moves the ``published`` row to it. A reader reads ``published`` once per
snapshot and then only that version's tables, so it never sees a half-written or mixed index.
Publishers queue on an advisory lock; after switching, every version but the published one and its
predecessor is dropped (a reader still on the predecessor keeps working until it reloads).
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import psycopg
from llama_index.core.schema import TextNode
from psycopg.types.json import Json, Jsonb

from assistant.index.manifest import (
    KNOWLEDGE_SUFFIX,
    IndexCorrupt,
    IndexMissing,
    dense_channels,
    unit_knowledge,
    verify,
)
from assistant.index.pg_db import TRANSIENT, IndexDatabase, IndexUnavailable
from assistant.index.pg_dense import PgDenseIndex, write_dense
from assistant.index.pg_sparse import PgSparseIndex, SparseTables, TermStats, write_sparse
from assistant.index.store import LoadedIndex, corpus_analyzer, load_index
from assistant.index.units import library_nodes, sparse_text
from assistant.ingest.library import as_library
from assistant.ingest.vocabulary import load_vocabulary

if TYPE_CHECKING:
    from assistant.config import Settings
    from assistant.index.embedders import OfflineEmbedding
    from assistant.ingest.library import Library
    from assistant.ingest.models import Corpus

__all__ = ["IndexUnavailable", "PgLoadedIndex", "load_published", "prune", "publish", "publish_build",
           "publish_version"]

log = logging.getLogger(__name__)

STORED_FILES = ("scope.json", "scope_examples.npz")  # what the snapshot needs besides tables (the scope model)


@dataclass
class PgLoadedIndex(LoadedIndex):
    """A published version, with :class:`LoadedIndex`'s fields; ``dense`` holds :class:`PgDenseIndex`es and
    ``sparse``/``sparse_knowledge`` :class:`PgSparseIndex`es. ``folder`` only names it (no files)."""

    backend: ClassVar[str] = "postgres"
    version: int = 0
    db: Any = None  # the IndexDatabase this version is read from (shared with the next reload)
    files: dict[str, bytes] = field(default_factory=dict)
    depth: int = 30  # candidates each retriever returns (ASSISTANT_CANDIDATES_PER_RETRIEVER)


# --- publishing ----------------------------------------------------------------------------------
def publish(loaded: LoadedIndex, dsn: str, schema: str = "assistant_index") -> int:
    """Copy ``loaded`` (an embedded build) into PostgreSQL as a new version, publish it, prune; its number."""
    db = IndexDatabase(dsn, schema, pool_size=1)
    try:
        conn = db.connect()
        try:
            return _publish(db, conn, loaded)
        except psycopg.Error as exc:
            if isinstance(exc, TRANSIENT):
                raise IndexUnavailable(f"{db.where} unavailable while publishing: {exc}") from exc
            raise IndexUnavailable(f"{db.where}: publishing failed ({exc})") from exc
        finally:
            conn.close()  # also releases the publisher lock
    finally:
        db.close()


def publish_build(settings: Settings, corpus: Corpus | Library, embedders: dict[str, OfflineEmbedding],
                  folder: Path | None = None) -> int:
    """Publish the embedded build ``folder`` (default: the current one) to ``settings``' backend database."""
    if not settings.index_dsn:
        raise IndexUnavailable("ASSISTANT_BACKEND=postgres needs ASSISTANT_BACKEND_DSN (or ASSISTANT_STATE_DSN)")
    loaded = load_index(settings, corpus, embedders, folder=folder)
    version = publish(loaded, settings.index_dsn, settings.backend_schema)
    log.info("published build %s as version %d in schema %s", loaded.folder.name, version, settings.backend_schema)
    return version


def _publish(db: IndexDatabase, conn: psycopg.Connection, loaded: LoadedIndex) -> int:
    files = {name: (loaded.folder / name).read_bytes() for name in STORED_FILES if (loaded.folder / name).is_file()}
    manifest = {**loaded.manifest, "files": {k: v for k, v in loaded.manifest.get("files", {}).items() if k in files},
                "embedded_files": loaded.manifest.get("files", {})}
    return publish_version(db, conn, loaded.folder.name, manifest,
                           lambda version: _write_version(db, conn, version, loaded, files))


def publish_version(db: IndexDatabase, conn: psycopg.Connection, build: str, manifest: dict,
                    write: Callable[[int], None]) -> int:
    """The publishing protocol around ``write(version)`` (which creates that version's tables on ``conn``):
    queue for the publisher lock, register the version, write it in one transaction, switch the
    ``published`` row in another, prune. ``conn`` is an autocommit connection (``IndexDatabase.connect``)."""
    with conn.transaction():
        db.ensure_control_tables(conn)
    conn.execute("SELECT pg_advisory_lock(hashtext(%s))", (f"assistant-index-publish-{db.schema}",))
    try:
        with conn.transaction():
            row = conn.execute("INSERT INTO versions (build, state, manifest) VALUES (%s, 'writing', %s)"
                               " RETURNING version", (build, Jsonb(manifest))).fetchone()
        version = int(row[0]) if row else 0
        with conn.transaction():
            conn.execute("SET LOCAL maintenance_work_mem = '512MB'")  # HNSW builds in memory, else slowly
            write(version)
        for (table,) in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
                                     " AND tablename ~ %s", (f"^(data_)?v{version}_",)).fetchall():
            # still invisible to readers; VACUUM sets the visibility map index-only scans need (BM25 postings)
            conn.execute(f'VACUUM (ANALYZE) "{table}"')
        with conn.transaction():
            conn.execute("INSERT INTO published (singleton, version) VALUES (TRUE, %s) ON CONFLICT (singleton)"
                         " DO UPDATE SET previous = published.version, version = EXCLUDED.version,"
                         " published_at = now()", (version,))
            conn.execute("UPDATE versions SET state = 'ready', published_at = now() WHERE version = %s", (version,))
        prune(conn)
    finally:
        if not conn.broken:  # (closing the connection releases it too)
            conn.execute("SELECT pg_advisory_unlock(hashtext(%s))", (f"assistant-index-publish-{db.schema}",))
    return version


def _write_version(db: IndexDatabase, conn: psycopg.Connection, version: int, loaded: LoadedIndex,
                   files: dict[str, bytes]) -> None:
    """Every table of one version, in the caller's transaction."""
    prefix = f"v{version}_"
    conn.execute(f"CREATE TABLE {prefix}units (position INTEGER PRIMARY KEY, node_id TEXT NOT NULL UNIQUE,"
                 " text TEXT NOT NULL, metadata JSON NOT NULL)")  # JSON, not JSONB: metadata keeps its key order
    with conn.cursor().copy(f"COPY {prefix}units (position, node_id, text, metadata) FROM STDIN") as copy:
        for position, node in enumerate(loaded.nodes):
            copy.write_row((position, node.node_id, node.text, Json(node.metadata)))
    conn.execute(f"CREATE TABLE {prefix}files (name TEXT PRIMARY KEY, data BYTEA NOT NULL)")
    for name, data in files.items():
        conn.execute(f"INSERT INTO {prefix}files (name, data) VALUES (%s, %s)", (name, data))
    conn.execute(f"CREATE TABLE {prefix}channels (name TEXT PRIMARY KEY, kind TEXT NOT NULL, units INTEGER NOT NULL,"
                 " views INTEGER, max_views INTEGER, dim INTEGER, avgdl DOUBLE PRECISION, k1 DOUBLE PRECISION,"
                 " b DOUBLE PRECISION, method TEXT)")
    for channel, dense in loaded.dense.items():
        faiss_index = dense.store.client
        vectors = faiss_index.reconstruct_n(0, faiss_index.ntotal)
        write_dense(db, conn, version, channel, vectors, dense.view_units, loaded.unit_index)
        per_unit: dict[str, int] = {}
        for unit in dense.view_units:
            per_unit[unit] = per_unit.get(unit, 0) + 1
        conn.execute(f"INSERT INTO {prefix}channels (name, kind, units, views, max_views, dim)"
                     " VALUES (%s, 'dense', %s, %s, %s, %s)",
                     (channel, len(per_unit), len(dense.view_units), max(per_unit.values(), default=0),
                      faiss_index.d))
    for channel, sparse, texts in _sparse_channels(loaded):
        stats = TermStats.from_texts(texts, loaded.analyzer)
        stats.check_against(sparse)
        write_sparse(conn, SparseTables(channel, version), stats)


def _sparse_channels(loaded: LoadedIndex) -> list[tuple[str, Any, list[str]]]:
    """(channel, its embedded index, the unit texts it was built from), as ``build_index`` tokenises them."""
    channels = []
    if loaded.sparse is not None:
        channels.append(("bm25", loaded.sparse, [sparse_text(n) for n in loaded.nodes]))
    if loaded.sparse_knowledge is not None and loaded.knowledge is not None:
        channels.append(("bm25" + KNOWLEDGE_SUFFIX, loaded.sparse_knowledge,
                         [u.sparse_text() if (u := loaded.knowledge.get(n.node_id)) else "" for n in loaded.nodes]))
    return channels


def prune(conn: psycopg.Connection) -> list[int]:
    """Drop every version but the published one and its predecessor (and dead 'writing' ones); the dropped."""
    keep = conn.execute("SELECT version, previous FROM published").fetchone() or ()
    dropped = []
    for (version,) in conn.execute("SELECT version FROM versions WHERE NOT version = ANY(%s) ORDER BY version",
                                   ([v for v in keep if v is not None],)).fetchall():
        try:
            with conn.transaction():
                conn.execute("SET LOCAL lock_timeout = '10s'")  # a reader mid-query on it holds a share lock
                tables = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
                                      " AND tablename ~ %s", (f"^(data_)?v{version}_",)).fetchall()
                for (table,) in tables:
                    conn.execute(f'DROP TABLE IF EXISTS "{table}"')
                conn.execute("DELETE FROM versions WHERE version = %s", (version,))
            dropped.append(version)
        except psycopg.errors.LockNotAvailable:
            log.warning("index version %d is still being read; it is pruned by the next publish", version)
    return dropped


# --- loading -------------------------------------------------------------------------------------
def load_published(settings: Settings, corpus: Corpus | Library, embedders: dict[str, OfflineEmbedding],
                   previous: LoadedIndex | None = None) -> PgLoadedIndex:
    """The published version, verified like a build folder; ``previous`` (a PgLoadedIndex) is returned
    as it is when it is still the published version, and its connection pool is reused."""
    dsn = settings.index_dsn
    if not dsn:
        raise IndexUnavailable("ASSISTANT_BACKEND=postgres needs ASSISTANT_BACKEND_DSN (or ASSISTANT_STATE_DSN)")
    reuse = isinstance(previous, PgLoadedIndex) and previous.db.dsn == dsn \
        and previous.db.schema == settings.backend_schema
    # a search holds one connection at a time: as many as the requests a worker works on at once
    db = previous.db if reuse else IndexDatabase(dsn, settings.backend_schema,  # type: ignore[union-attr]
                                                 pool_size=min(32, settings.max_in_flight or 8))
    try:
        for attempt in (1, 2):
            try:
                with db.connection("read the published index") as conn:
                    return _read_published(settings, corpus, embedders, db, conn, previous if reuse else None)
            except psycopg.errors.UndefinedTable as exc:
                if attempt == 2 or "published" in str(exc) or "versions" in str(exc):
                    raise IndexMissing(f"nothing is published in {db.where}; run `policy-assistant ingest` with "
                                       "ASSISTANT_BACKEND=postgres") from exc
                log.info("index version replaced while loading it; reading the new one")  # pruned meanwhile
            except psycopg.Error as exc:  # e.g. no privilege on the schema: a message, not a stack trace
                raise IndexUnavailable(f"{db.where}: cannot read the published index ({exc})") from exc
        raise AssertionError("unreachable")
    except BaseException:
        if not reuse:
            db.close()
        raise


def _read_published(settings: Settings, corpus: Corpus | Library, embedders: dict[str, OfflineEmbedding],
                    db: IndexDatabase, conn: psycopg.Connection, previous: LoadedIndex | None) -> PgLoadedIndex:
    row = conn.execute("SELECT p.version, v.build, v.manifest FROM published p JOIN versions v"
                       " ON v.version = p.version").fetchone()
    if row is None:
        raise IndexMissing(f"nothing is published in {db.where}; run `policy-assistant ingest` with "
                           "ASSISTANT_BACKEND=postgres")
    version, build, manifest = int(row[0]), str(row[1]), dict(row[2])
    if isinstance(previous, PgLoadedIndex) and previous.version == version:
        return previous
    prefix = f"v{version}_"
    files = {str(n): bytes(d) for n, d in conn.execute(f"SELECT name, data FROM {prefix}files").fetchall()}
    with tempfile.TemporaryDirectory(prefix="assistant-index-") as tmp:  # verify() reads a folder
        for name, data in files.items():
            (Path(tmp) / name).write_bytes(data)
        (Path(tmp) / "manifest.json").write_text(json.dumps(manifest, ensure_ascii=False), encoding="utf-8")
        verify(Path(tmp), settings, corpus, set(embedders))
    nodes = [TextNode(id_=node_id, text=text, metadata=metadata) for node_id, text, metadata in
             conn.execute(f"SELECT node_id, text, metadata FROM {prefix}units ORDER BY position").fetchall()]
    library = as_library(corpus)
    if [n.node_id for n in nodes] != [n.node_id for n in library_nodes(library)]:
        raise IndexCorrupt(f"index version {version} in {db.where} holds other units than the corpus")
    channels = {r[0]: r for r in conn.execute(
        f"SELECT name, kind, units, views, max_views, dim FROM {prefix}channels").fetchall()}
    dense = _dense_channels(db, version, manifest, channels, embedders)
    vocabulary = load_vocabulary(settings.annotations_path)
    analyzer = corpus_analyzer(vocabulary, library.corpus)
    unit_ids = [n.node_id for n in nodes]
    sparse = {name: PgSparseIndex.read(db, conn, SparseTables(name, version), unit_ids, analyzer)
              for name in ("bm25", "bm25" + KNOWLEDGE_SUFFIX) if name in channels}
    if manifest.get("bm25") and "bm25" not in sparse:
        raise IndexCorrupt(f"index version {version} in {db.where} has no BM25 tables")
    return PgLoadedIndex(folder=Path("postgres", db.schema, f"v{version}-{build}"), manifest=manifest, nodes=nodes,
                         dense=dense, sparse=sparse.get("bm25"), sparse_knowledge=sparse.get("bm25" + KNOWLEDGE_SUFFIX),
                         analyzer=analyzer, vocabulary=vocabulary, knowledge=unit_knowledge(settings, library),
                         library=library, version=version, db=db, files=files, depth=settings.candidates_per_retriever)


def _dense_channels(db: IndexDatabase, version: int, manifest: dict, channels: dict[str, tuple],
                    embedders: dict[str, OfflineEmbedding]) -> dict[str, Any]:
    """A PgDenseIndex per published channel whose embedder runs here (as ``load_index`` skips the others)."""
    dense: dict[str, Any] = {}
    for name, key in dense_channels(manifest, embedders):
        row = channels.get(key)
        if row is None or row[1] != "dense" or row[5] != embedders[name].dim:
            raise IndexCorrupt(f"index version {version} in {db.where}: channel {key} is missing or does not "
                               "match the embedder; publish again with `policy-assistant ingest`")
        dense[key] = PgDenseIndex(embedders[name], db, version, key, dim=int(row[5]), views=int(row[3]),
                                  max_views=int(row[4]))
    return dense
