"""Dense view vectors in PostgreSQL: one pgvector table per channel, in llama-index's layout.

A channel (``e5``, ``e5_k``, ``use``, ``use_k``) is a ``PGVectorStore`` table (``data_<name>``:
``text``, ``metadata_`` JSONB with llama-index's node fields, ``node_id``, ``embedding vector(d)``)
plus one column of ours, ``unit_position``, and an HNSW index (cosine, the operator PGVectorStore
queries with; the vectors are unit length, so its order is the inner product's, which FAISS and the
exact scoring here use). ``PGVectorStore`` creates the table (so any llama-index
program can open a published channel) and serves ``retrieve()``; rows are written with binary
``COPY`` and the HNSW index is built after the load, not row by row.

Scoring the pipeline's way (every unit's best view, for one or two query vectors, averaged) is one
SQL statement: a small channel scores every view; a large one lets the HNSW index propose
``depth x max views per unit`` nearest views per vector (enough to hold the ``depth`` best units
whichever views they win with), and scores those units exactly, max over all their views.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from assistant.index.embedders import OfflineEmbedding

if TYPE_CHECKING:
    import psycopg

    from assistant.index.pg_db import IndexDatabase

# The HNSW build; ef_search (100) and the iterative scan are connection options (pg_db): PGVectorStore's own
# ``SET hnsw.ef_search = :value`` cannot take a bound parameter on psycopg 3, so it gets no hnsw_kwargs.
HNSW = {"hnsw_m": 16, "hnsw_ef_construction": 64, "hnsw_dist_method": "vector_cosine_ops"}


def table_name(version: int, channel: str) -> str:
    """``PGVectorStore``'s ``table_name`` of a channel (the SQL table is ``data_`` + it)."""
    return f"v{version}_{channel}"


def vector_store(db: IndexDatabase, version: int, channel: str, dim: int, setup: bool = False) -> Any:
    """llama-index's store over a published channel (``setup`` creates the table, without an index)."""
    from llama_index.vector_stores.postgres import PGVectorStore

    engine, async_engine = db.sqlalchemy_engines()
    return PGVectorStore(table_name=table_name(version, channel), schema_name=db.schema, embed_dim=dim,
                         use_jsonb=True, perform_setup=setup,
                         engine=engine, async_engine=async_engine)


def write_dense(db: IndexDatabase, conn: psycopg.Connection, version: int, channel: str, vectors: np.ndarray,
                view_units: Sequence[str], unit_index: dict[str, int]) -> None:
    """Create a channel's table (through ``PGVectorStore``), COPY its rows, then index them."""
    from llama_index.core.schema import TextNode
    from llama_index.core.vector_stores.utils import node_to_metadata_dict
    from psycopg.types.json import Jsonb

    vector_store(db, version, channel, vectors.shape[1], setup=True).add([])  # add() creates the table
    table = "data_" + table_name(version, channel)
    conn.execute(f"ALTER TABLE {table} ADD COLUMN unit_position INTEGER")
    # a 512-d vector (2 kB) would be TOASTed: every distance then first fetches and joins its chunks (3x slower)
    conn.execute(f"ALTER TABLE {table} ALTER COLUMN embedding SET STORAGE PLAIN")
    with conn.cursor().copy(f"COPY {table} (text, metadata_, node_id, embedding, unit_position)"
                            " FROM STDIN (FORMAT BINARY)") as copy:
        copy.set_types(["varchar", "jsonb", "varchar", "vector", "int4"])
        for row, (unit, vector) in enumerate(zip(view_units, vectors, strict=True)):
            node = TextNode(id_=f"{unit}#{row}", text="", metadata={"unit_id": unit, "unit_position": unit_index[unit]})
            copy.write_row(("", Jsonb(node_to_metadata_dict(node, remove_text=True)), node.node_id,
                            np.ascontiguousarray(vector, dtype=np.float32), unit_index[unit]))
    conn.execute(f"CREATE INDEX {table}_unit ON {table} (unit_position)")
    conn.execute(f"CREATE INDEX {table}_embedding_idx ON {table} USING hnsw (embedding {HNSW['hnsw_dist_method']})"
                 f" WITH (m = {HNSW['hnsw_m']}, ef_construction = {HNSW['hnsw_ef_construction']})")


def score_sql(table: str, vectors: int, exact: bool, within: bool = False) -> str:
    """One statement: each unit's best view (inner product, as FAISS scores it) averaged over ``vectors``
    query vectors, its ``depth`` best units. ``exact`` scores every view (small channels: cheaper than
    an index scan); otherwise the HNSW index's ``views`` nearest views per vector propose the units,
    which are then scored exactly over all their views. ``within``: only the unit positions of the
    ``%(within)s`` array are proposed and scored (a document filter)."""
    mean = " + ".join(f"max(-(d.embedding <#> %(v{i})s))" for i in range(vectors))
    kept = "unit_position = ANY(%(within)s)" if within else ""
    conditions = [f"d.{kept}"] if within else []
    if not exact:
        filtered = f" WHERE {kept}" if within else ""
        nearest = " UNION ".join(f"(SELECT unit_position FROM {table}{filtered} ORDER BY embedding <=> %(v{i})s"
                                 " LIMIT %(views)s)" for i in range(vectors))
        conditions.append(f"d.unit_position IN ({nearest})")
    where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
    return (f"SELECT d.unit_position, ({mean}) / {vectors} AS s FROM {table} d{where}"
            " GROUP BY d.unit_position ORDER BY s DESC, d.unit_position LIMIT %(depth)s")


# Measured with benchmarks/scale.py (one e5 query vector, depth 30): scoring all 3,215 views of a knowledge
# channel took ~3 ms (its HNSW form, 780 proposed views, ~11 ms); at 8,128 views exact took 6.8 ms, HNSW 4.6.
EXACT_MAX_VIEWS = 5_000


@dataclass
class PgDenseIndex:
    """One embedder's published channel: the retriever's view of a ``data_v<N>_<channel>`` table."""

    embedder: OfflineEmbedding
    db: IndexDatabase
    version: int
    channel: str
    dim: int
    views: int
    max_views: int  # the most views one unit has
    _store: Any = field(default=None, init=False, repr=False)

    @property
    def table(self) -> str:
        return "data_" + table_name(self.version, self.channel)

    def unit_scores(self, vectors: Sequence[np.ndarray], depth: int,
                    within: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The ``depth`` best unit positions by their best-view cosine averaged over ``vectors``, and those means;
        ``within`` (unit positions, a document filter) limits them to those units.

        Above ``EXACT_MAX_VIEWS`` views the HNSW index proposes ``depth x max_views`` views per vector: a
        unit among the ``depth`` best wins with a view that at most that many views outrank, so (up to
        the index's recall) every one of them is proposed and then scored exactly. A filter whose units
        have at most ``EXACT_MAX_VIEWS`` views between them is scored exactly (the ``unit_position`` index).
        """
        exact = self.views <= EXACT_MAX_VIEWS or (within is not None
                                                   and within.size * self.max_views <= EXACT_MAX_VIEWS)
        params: dict[str, Any] = {f"v{i}": np.asarray(v, dtype=np.float32) for i, v in enumerate(vectors)}
        params.update(depth=depth, views=min(self.views, max(1, depth) * self.max_views))
        if within is not None:
            params["within"] = [int(p) for p in within]
        with self.db.connection("score dense views") as conn:
            rows = conn.execute(score_sql(self.table, len(vectors), exact, within is not None), params).fetchall()
        return (np.array([r[0] for r in rows], dtype=np.int64), np.array([r[1] for r in rows], dtype=np.float32))

    def store(self) -> Any:
        """The channel as llama-index's ``PGVectorStore`` (made on first use: ``retrieve()`` only)."""
        if self._store is None:
            self._store = vector_store(self.db, self.version, self.channel, self.dim)
        return self._store
