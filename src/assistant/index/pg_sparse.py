"""BM25 in PostgreSQL: term statistics from the one analyser, scored in SQL with bm25s's formula.

Publishing writes, per sparse channel (``bm25`` over the plan text, ``bm25_k`` over the knowledge),
the postings ``(term, position, tf, weight)``, each unit's length in tokens, the document frequencies
and the channel's N and average length. The tokens are the analyser's, exactly as
:meth:`SparseIndex.build` feeds them to bm25s (an empty text is the one token ``∅``), and publishing
checks the vocabulary and every DF against the bm25s index it copies.

Scores are bm25s's ``method="lucene"`` (k1 = 1.2, b = 0.75, stored per channel)::

    idf(t)     = ln(1 + (N - df + 0.5) / (df + 0.5))
    score(d,q) = sum over query tokens t (repeats count) of idf(t) * tf / (tf + k1 * (1 - b + b * |d| / avgdl))

(bm25s's lucene tf part has no ``k1 + 1`` factor.) :class:`PgSparseIndex` stands in for
:class:`SparseIndex` in a published snapshot: the vocabulary and DFs (a few thousand terms) are read
into memory once, so ``document_frequency``, ``query_tokens`` and ``question_form`` cost what they
cost embedded; ``coverage`` asks which of the question's words the top unit holds (one indexed
lookup); scores come from SQL.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np

from assistant.index.analyzer import TextAnalyzer
from assistant.index.manifest import IndexCorrupt
from assistant.index.pg_db import SCHEMA_NAME
from assistant.index.sparse import SparseIndex

if TYPE_CHECKING:
    import psycopg

    from assistant.index.pg_db import IndexDatabase

K1, B, METHOD = 1.2, 0.75, "lucene"  # what SparseIndex.build gives bm25s
EMPTY = "∅"  # the token of an empty text (SparseIndex.build)


@dataclass(frozen=True)
class TermStats:
    """One channel's BM25 statistics: term counts per unit position, in unit order."""

    counts: list[Counter[str]]
    lengths: list[int]

    @classmethod
    def from_texts(cls, texts: Sequence[str], analyzer: TextAnalyzer) -> TermStats:
        tokens = [analyzer.tokens(t) or [EMPTY] for t in texts]
        return cls([Counter(t) for t in tokens], [len(t) for t in tokens])

    @property
    def avgdl(self) -> float:
        return float(np.mean(self.lengths)) if self.lengths else 0.0

    def document_frequencies(self) -> Counter[str]:
        df: Counter[str] = Counter()
        for counts in self.counts:
            df.update(counts.keys())
        return df

    def check_against(self, sparse: SparseIndex) -> None:
        """Refuse to publish statistics that differ from the embedded bm25s index they stand for."""
        df = self.document_frequencies()
        vocabulary = set(sparse._vocab) - {""}  # bm25s adds "" for empty queries; no unit holds it
        if set(df) != vocabulary:
            raise IndexCorrupt(f"BM25 vocabulary differs from the embedded index ({len(set(df) ^ vocabulary)} terms)")
        wrong = [t for t, n in df.items() if sparse.document_frequency(t) != n]
        if wrong or len(sparse.unit_ids) != len(self.counts):
            raise IndexCorrupt(f"BM25 document frequencies differ from the embedded index (e.g. {wrong[:3]})")


@dataclass(frozen=True)
class SparseTables:
    """The tables of one published sparse channel."""

    channel: str
    version: int

    def __post_init__(self) -> None:
        if not SCHEMA_NAME.match(self.channel):  # it is spelled into SQL
            raise ValueError(f"a channel name is a lower-case identifier, not {self.channel!r}")

    def name(self, kind: str) -> str:
        return f"v{self.version}_{kind}_{self.channel}"

    @property
    def channels(self) -> str:
        return f"v{self.version}_channels"


def write_sparse(conn: psycopg.Connection, tables: SparseTables, stats: TermStats) -> None:
    """Create and fill one channel's tables (inside the caller's transaction).

    ``terms`` (df), ``lengths`` and the channel row (N, avgdl, k1, b) are the statistics; ``postings``
    holds each (term, unit)'s tf and its BM25 weight, computed here in SQL from those statistics with the
    formula above: bm25s's own eager scoring (it, too, stores every posting's score at index time). A
    query then sums weights over an index-only scan; joining the statistics per query instead cost
    10x more at 100k units (benchmarks/scale.py, docs/architecture.md).
    """
    postings, lengths, terms, staging = (tables.name("postings"), tables.name("lengths"), tables.name("terms"),
                                         f"tf_{tables.channel}")
    conn.execute(f"CREATE TEMPORARY TABLE {staging} (term TEXT NOT NULL, position INTEGER NOT NULL,"
                 " tf INTEGER NOT NULL) ON COMMIT DROP")
    conn.execute(f"CREATE TABLE {lengths} (position INTEGER PRIMARY KEY, length INTEGER NOT NULL)")
    with conn.cursor().copy(f"COPY {staging} (term, position, tf) FROM STDIN") as copy:
        for position, counts in enumerate(stats.counts):
            for term, tf in counts.items():
                copy.write_row((term, position, tf))
    with conn.cursor().copy(f"COPY {lengths} (position, length) FROM STDIN") as copy:
        for position, length in enumerate(stats.lengths):
            copy.write_row((position, length))
    conn.execute(f"CREATE TABLE {terms} AS SELECT term, count(*)::integer AS df FROM {staging} GROUP BY term")
    conn.execute(f"ALTER TABLE {terms} ADD PRIMARY KEY (term)")
    conn.execute(f"INSERT INTO {tables.channels} (name, kind, units, avgdl, k1, b, method)"
                 " VALUES (%s, 'sparse', %s, %s, %s, %s, %s)",
                 (tables.channel, len(stats.lengths), stats.avgdl, K1, B, METHOD))
    conn.execute(f"""
        CREATE TABLE {postings} AS
        SELECT s.term, s.position, s.tf,
               ln(1 + (c.units - t.df + 0.5) / (t.df + 0.5)) * s.tf
               / (s.tf + c.k1 * (1 - c.b + c.b * l.length / c.avgdl)) AS weight
        FROM {staging} s JOIN {terms} t ON t.term = s.term JOIN {lengths} l ON l.position = s.position
             JOIN {tables.channels} c ON c.name = '{tables.channel}'""")
    conn.execute(f"ALTER TABLE {postings} ADD PRIMARY KEY (term, position) INCLUDE (weight)")


# One round trip: the query terms' postings (an index-only scan), weights summed per unit. ``qtf`` is a
# term's count in the query texts divided by their number, so the sum is the mean of their BM25 scores.
_BM25 = """
WITH q AS (SELECT term, qtf FROM unnest(%(terms)s::text[], %(qtf)s::float8[]) AS q (term, qtf))
SELECT p.position, sum(q.qtf * p.weight) AS score
FROM q JOIN {postings} p ON p.term = q.term{within}
GROUP BY p.position
ORDER BY score DESC, p.position
LIMIT %(limit)s
"""


class PgSparseIndex(SparseIndex):
    """A published sparse channel with :class:`SparseIndex`'s interface.

    ``question_form`` and ``query_tokens`` are inherited: they read only the analyser and the
    vocabulary, so both backends derive them by the same code from the same terms.
    """

    def __init__(self, db: IndexDatabase, tables: SparseTables, unit_ids: list[str], analyzer: TextAnalyzer,
                 document_frequencies: dict[str, int]) -> None:
        # no super().__init__(): there is no bm25s model here, only its vocabulary and DFs
        self.db = db
        self.tables = tables
        self.unit_ids = unit_ids
        self.analyzer = analyzer
        self._df = document_frequencies
        self._vocab = set(document_frequencies) | {""}
        self.question_form = lru_cache(maxsize=4096)(self._question_form)  # type: ignore[method-assign]
        self._sql = _BM25.format(postings=tables.name("postings"), within="")
        self._sql_within = _BM25.format(postings=tables.name("postings"), within=" WHERE p.position = ANY(%(within)s)")

    @classmethod
    def read(cls, db: IndexDatabase, conn: psycopg.Connection, tables: SparseTables, unit_ids: list[str],
             analyzer: TextAnalyzer) -> PgSparseIndex:
        """The channel's vocabulary and DFs, read once when a snapshot is built."""
        rows = conn.execute(f"SELECT term, df FROM {tables.name('terms')}").fetchall()
        return cls(db, tables, unit_ids, analyzer, dict(rows))

    def save(self, folder) -> None:  # type: ignore[no-untyped-def]
        raise TypeError("a published sparse index lives in PostgreSQL; publish a build with pg_store.publish")

    def document_frequency(self, token: str) -> int:
        return self._df.get(token, 0)

    def coverage(self, query: str, position: int) -> tuple[float, float]:
        """:meth:`SparseIndex.coverage` from the in-memory DFs and one lookup of the unit's postings."""
        words = self.analyzer.words(query)
        if not words:
            return 0.0, 0.0
        forms = sorted({f for word in words for f in word if f in self._df})
        held = set()
        if forms:
            with self.db.connection("read BM25 postings") as conn:
                held = {r[0] for r in conn.execute(
                    f"SELECT term FROM {self.tables.name('postings')} WHERE position = %s AND term = ANY(%s)",
                    (position, forms))}
        total = len(self.unit_ids)
        known = found = weight = 0.0
        for word in words:
            dfs = [self._df[f] for f in word if f in self._df]
            if not dfs:
                weight += float(np.log1p(total))
                continue
            known += 1
            idf = max(float(np.log1p(total / max(df, 1))) for df in dfs)
            weight += idf
            found += idf if any(f in held for f in word) else 0.0
        return known / len(words), found / weight

    def held(self, query: str) -> tuple[np.ndarray, float]:
        """:meth:`SparseIndex.held` from the in-memory DFs and one lookup of the words' postings."""
        words = [[f for f in word if f in self._df] for word in self.analyzer.words(query)]
        words = [forms for forms in words if forms]
        total = len(self.unit_ids)
        found = np.zeros(total, dtype=np.float64)
        if not words:
            return found, 0.0
        forms = sorted({f for word in words for f in word})
        with self.db.connection("read BM25 postings") as conn:
            rows = conn.execute(f"SELECT term, position FROM {self.tables.name('postings')} WHERE term = ANY(%s)",
                                (forms,)).fetchall()
        positions: dict[str, set[int]] = {}
        for term, position in rows:
            positions.setdefault(term, set()).add(int(position))
        weight = 0.0
        for word in words:
            idf = max(float(np.log1p(total / max(self._df[f], 1))) for f in word)
            weight += idf
            held = set().union(*(positions.get(f, set()) for f in word))
            found[sorted(held)] += idf
        return found, weight

    def top_scores(self, texts: Sequence[str], limit: int | None,
                   within: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Positions and scores of the ``limit`` best units (all matching ones for None) for the mean
        BM25 score over ``texts``, best first; a unit holding no query term scores 0 and is left out.
        ``within`` (this channel's positions, a document filter) limits them to those units."""
        counts: Counter[str] = Counter()
        for text in texts:
            counts.update(self.query_tokens(text)[1])
        if not counts or not texts:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        terms = sorted(counts)
        params: dict[str, object] = {"terms": terms, "qtf": [counts[t] / len(texts) for t in terms], "limit": limit}
        if within is not None:
            params["within"] = [int(p) for p in within]
        with self.db.connection("score BM25") as conn:
            rows = conn.execute(self._sql if within is None else self._sql_within, params).fetchall()
        positions = np.array([r[0] for r in rows], dtype=np.int64)
        return positions, np.array([r[1] for r in rows], dtype=np.float32)

    def scores(self, query: str) -> np.ndarray:
        """BM25 score of every unit for ``query`` (zeros when no query token is indexed)."""
        positions, values = self.top_scores([query], None)
        scores = np.zeros(len(self.unit_ids), dtype=np.float32)
        scores[positions] = values
        return scores
