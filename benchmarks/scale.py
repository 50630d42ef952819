"""Scale benchmark of the candidate stage: embedded (FAISS + bm25s in memory) vs PostgreSQL (pgvector + SQL BM25).

The plan has 125 units; larger indexes here are SYNTHETIC: unit ``i`` copies real unit ``i mod 125``
with its plan-text view vectors perturbed (unit-length Gaussian noise, ``--noise``, then
renormalised) and its BM25 token multiset reshuffled (each token kept with probability 0.8, plus a
few tokens drawn from the whole vocabulary). Queries are real dev questions, encoded once with e5
(outside the timings). Measured per size: build time (embedded: FAISS add + bm25s index; postgres:
``publish_version`` with the same table writers ``publish`` uses, HNSW included) and p50/p95 of the
candidate stage per query: the dense channel's ``depth`` best units (best view per unit) and BM25's.

    python benchmarks/scale.py                                   # 125 / 10k / 100k units, 200 queries
    python benchmarks/scale.py --units 125,10000 --queries 100 --dsn postgresql://...

The DSN comes from ``--dsn``, else ``ASSISTANT_BACKEND_DSN`` / ``ASSISTANT_STATE_DSN``, else
``bash scripts/postgres.sh dsn`` (start the server with ``bash scripts/postgres.sh start``). The
benchmark writes into its own schema (``bench_scale``) and drops it at the end. Prints numbers only.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

SCHEMA = "bench_scale"
CHANNEL = "e5"  # the plan-text views of the e5 embedder (about two per unit)


def dsn_from(args: argparse.Namespace) -> str:
    dsn = args.dsn or os.environ.get("ASSISTANT_BACKEND_DSN") or os.environ.get("ASSISTANT_STATE_DSN")
    if dsn:
        return dsn
    done = subprocess.run(["bash", str(REPO / "scripts" / "postgres.sh"), "dsn"], capture_output=True, text=True)
    if done.returncode != 0 or not done.stdout.strip():
        raise SystemExit("error: no PostgreSQL DSN: pass --dsn, or run `bash scripts/postgres.sh start` first")
    return done.stdout.strip().splitlines()[-1]


def percentiles(samples: list[float]) -> tuple[float, float]:
    return float(np.percentile(samples, 50)), float(np.percentile(samples, 95))


class Corpus:
    """The real plan-text channel: view vectors, views' units, and each unit's BM25 tokens."""

    def __init__(self, queries: int) -> None:
        from assistant.config import Settings
        from assistant.index.store import load_index
        from assistant.index.units import sparse_text

        settings = Settings()
        index = load_index(settings)
        dense = index.dense[CHANNEL]
        self.analyzer = index.analyzer
        self.embedder = dense.embedder
        self.vectors = dense.store.client.reconstruct_n(0, dense.store.client.ntotal)
        self.positions = np.array([index.unit_index[u] for u in dense.view_units])
        self.tokens = [self.analyzer.tokens(sparse_text(n)) or ["∅"] for n in index.nodes]
        self.vocabulary = sorted({t for tokens in self.tokens for t in tokens})
        rows = [json.loads(line) for line in (REPO / "eval" / "questions.jsonl").read_text(encoding="utf-8")
                .splitlines() if line.strip()]
        self.questions = [r["question"] for r in rows][:queries]
        self.query_vectors = self.embedder.encode_queries(self.questions)

    def synthesise(self, units: int, noise: float, seed: int) -> tuple[np.ndarray, np.ndarray, list[list[str]]]:
        """View vectors, their unit positions and unit token lists of ``units`` units (the real ones first)."""
        rng = np.random.default_rng(seed)
        real = len(self.tokens)
        copies = -(-units // real)
        vectors = np.concatenate([self.vectors] * copies)
        positions = np.concatenate([self.positions + real * c for c in range(copies)])
        keep = positions < units
        vectors, positions = vectors[keep], positions[keep]
        synthetic = positions >= real  # the real units stay as they are
        jitter = rng.standard_normal((int(synthetic.sum()), vectors.shape[1])).astype(np.float32)
        jitter *= noise / np.sqrt(vectors.shape[1])
        vectors[synthetic] += jitter
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        tokens = []
        for i in range(units):
            base = self.tokens[i % real]
            if i < real:
                tokens.append(list(base))
                continue
            kept = [t for t in base if rng.random() < 0.8]
            extra = rng.choice(len(self.vocabulary), size=max(1, len(base) // 10))
            mixed = kept + [self.vocabulary[j] for j in extra]
            rng.shuffle(mixed)
            tokens.append(mixed or ["∅"])
        return vectors.astype(np.float32), positions, tokens


def embedded_side(vectors: np.ndarray, positions: np.ndarray, tokens: list[list[str]], corpus: Corpus,
                  depth: int) -> dict[str, float]:
    """Build and query the in-memory indexes the embedded backend uses (DenseIndex, bm25s via SparseIndex)."""
    import faiss
    from llama_index.vector_stores.faiss import FaissVectorStore

    from assistant.index.sparse import SparseIndex, _bm25s
    from assistant.index.store import DenseIndex

    unit_ids = [f"u{i}" for i in range(len(tokens))]
    started = time.perf_counter()
    flat = faiss.IndexFlatIP(vectors.shape[1])
    flat.add(vectors)
    dense = DenseIndex(corpus.embedder, FaissVectorStore(faiss_index=flat), [unit_ids[p] for p in positions])
    model = _bm25s().BM25(method="lucene", k1=1.2, b=0.75)
    model.index(tokens, show_progress=False)
    sparse = SparseIndex(model, unit_ids, corpus.analyzer)
    build = time.perf_counter() - started
    unit_index = {u: i for i, u in enumerate(unit_ids)}
    dense_ms, sparse_ms = [], []
    for question, vector in zip(corpus.questions, corpus.query_vectors, strict=True):
        started = time.perf_counter()
        scores = dense.unit_scores(vector, unit_index)
        top = np.argpartition(-scores, min(depth, scores.size - 1))[:depth]
        _ = top[np.argsort(-scores[top])]
        dense_ms.append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        scores = sparse.scores(question)
        top = np.argpartition(-scores, min(depth, scores.size - 1))[:depth]
        _ = top[np.argsort(-scores[top])]
        sparse_ms.append((time.perf_counter() - started) * 1000)
    return {"build_s": build, "dense": percentiles(dense_ms), "bm25": percentiles(sparse_ms)}


def postgres_side(dsn: str, vectors: np.ndarray, positions: np.ndarray, tokens: list[list[str]], corpus: Corpus,
                  depth: int) -> dict[str, float]:
    """Publish the synthetic channel as a version (same writers as ``publish``) and query it."""
    from assistant.index.pg_db import IndexDatabase
    from assistant.index.pg_dense import PgDenseIndex, write_dense
    from assistant.index.pg_sparse import PgSparseIndex, SparseTables, TermStats, write_sparse
    from assistant.index.pg_store import publish_version

    unit_ids = [f"u{i}" for i in range(len(tokens))]
    unit_index = {u: i for i, u in enumerate(unit_ids)}
    stats = TermStats([Counter(t) for t in tokens], [len(t) for t in tokens])
    db = IndexDatabase(dsn, SCHEMA, pool_size=2)
    conn = db.connect()
    try:
        def write(version: int) -> None:
            conn.execute(f"CREATE TABLE v{version}_channels (name TEXT PRIMARY KEY, kind TEXT NOT NULL, units INTEGER"
                         " NOT NULL, views INTEGER, max_views INTEGER, dim INTEGER, avgdl DOUBLE PRECISION,"
                         " k1 DOUBLE PRECISION, b DOUBLE PRECISION, method TEXT)")
            write_dense(db, conn, version, CHANNEL, vectors, [unit_ids[p] for p in positions], unit_index)
            write_sparse(conn, SparseTables("bm25", version), stats)

        started = time.perf_counter()
        version = publish_version(db, conn, f"synthetic-{len(tokens)}", {"synthetic": True}, write)
        publish = time.perf_counter() - started
    finally:
        conn.close()
    per_unit = np.bincount(positions)
    dense = PgDenseIndex(corpus.embedder, db, version, CHANNEL, dim=vectors.shape[1], views=len(positions),
                         max_views=int(per_unit.max()))
    with db.connection("read terms") as read:
        sparse = PgSparseIndex.read(db, read, SparseTables("bm25", version), unit_ids, corpus.analyzer)
    dense_ms, sparse_ms = [], []
    try:
        for question, vector in list(zip(corpus.questions, corpus.query_vectors, strict=True))[:5]:  # warm
            dense.unit_scores([vector], depth)
            sparse.top_scores([question], depth)
        for question, vector in zip(corpus.questions, corpus.query_vectors, strict=True):
            started = time.perf_counter()
            dense.unit_scores([vector], depth)
            dense_ms.append((time.perf_counter() - started) * 1000)
            started = time.perf_counter()
            sparse.top_scores([question], depth)
            sparse_ms.append((time.perf_counter() - started) * 1000)
    finally:
        db.close()
    return {"build_s": publish, "dense": percentiles(dense_ms), "bm25": percentiles(sparse_ms)}


def drop_schema(dsn: str) -> None:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--units", default="125,10000,100000", help="comma-separated index sizes (units)")
    parser.add_argument("--queries", type=int, default=200, help="dev questions timed per size (default 200)")
    parser.add_argument("--depth", type=int, default=30, help="units each retriever returns (default 30)")
    parser.add_argument("--noise", type=float, default=0.5, help="norm of the noise added to copied vectors")
    parser.add_argument("--dsn", help="PostgreSQL DSN (default: ASSISTANT_BACKEND_DSN, then scripts/postgres.sh dsn)")
    parser.add_argument("--exact-max-views", type=int, default=None,
                        help="override pg_dense.EXACT_MAX_VIEWS (channels up to this many views are scored exactly)")
    parser.add_argument("--json", type=Path, help="also write the results as JSON")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    try:
        sizes = [int(u) for u in args.units.split(",") if u.strip()]
    except ValueError:
        parser.error("--units must be integers, e.g. 125,10000,100000")
    if not sizes or min(sizes) < 1 or max(sizes) > 1_000_000 or not 1 <= args.queries <= 5000:
        parser.error("--units must be 1-1,000,000 and --queries 1-5000")
    from assistant.config import Settings
    from assistant.process import tune

    tune(Settings())  # one BLAS thread, as the CLI and the service run
    if args.exact_max_views is not None:
        import assistant.index.pg_dense as pg_dense

        pg_dense.EXACT_MAX_VIEWS = args.exact_max_views  # a benchmark knob, this process only
    dsn = dsn_from(args)
    corpus = Corpus(args.queries)
    print(f"{len(corpus.questions)} queries; dense channel {CHANNEL} ({corpus.vectors.shape[1]}-d), BM25 over the "
          f"plan text; depth {args.depth}; units beyond 125 are synthetic", file=sys.stderr)
    results = []
    try:
        for units in sizes:
            vectors, positions, tokens = corpus.synthesise(units, args.noise, args.seed)
            print(f"{units} units: {len(vectors)} views, {sum(len(set(t)) for t in tokens)} postings", file=sys.stderr)
            for backend in ("embedded", "postgres"):
                measured = (embedded_side(vectors, positions, tokens, corpus, args.depth) if backend == "embedded"
                            else postgres_side(dsn, vectors, positions, tokens, corpus, args.depth))
                results.append({"units": units, "views": len(vectors), "backend": backend, **measured})
                row = results[-1]
                print(f"  {backend:<9} build {row['build_s']:.1f} s, dense p50 {row['dense'][0]:.2f} ms, "
                      f"bm25 p50 {row['bm25'][0]:.2f} ms", file=sys.stderr)
    finally:
        drop_schema(dsn)
    print(f"\n{'units':>7} {'views':>7} {'backend':<9} {'build/publish s':>15} {'dense p50':>10} {'dense p95':>10} "
          f"{'bm25 p50':>9} {'bm25 p95':>9}")
    for row in results:
        print(f"{row['units']:>7} {row['views']:>7} {row['backend']:<9} {row['build_s']:>15.1f} "
              f"{row['dense'][0]:>10.2f} {row['dense'][1]:>10.2f} {row['bm25'][0]:>9.2f} {row['bm25'][1]:>9.2f}")
    print("(ms per query; dense = the depth best units by best view, BM25 = the depth best units)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
