"""The PostgreSQL + pgvector search backend against the embedded one, on a real server and the real models.

The session's embedded index (conftest ``engine``) is published once into a schema of this module;
the postgres engine reads it from there. BM25 scored in SQL must equal bm25s's scores, the blind
split must rank and decide as embedded, publishing must never show readers a half-written version,
and a bad DSN is a one-line error.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import numpy as np
import pytest

from assistant.index.pg_db import IndexUnavailable
from assistant.index.pg_store import PgLoadedIndex, load_published, publish, publish_build
from assistant.retrieval.engine import SearchEngine

pytest_plugins = ["pg_fixture"]

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _questions(path: Path) -> list[str]:
    return [json.loads(line)["question"] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.fixture(scope="module")
def schema(pg_dsn):
    """One schema for the module's published index (pg_schema is per test: too many publishes)."""
    import psycopg

    name = f"m_{uuid.uuid4().hex[:12]}"
    yield name
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")


def _pg_settings(settings, dsn: str, schema: str):
    return settings.model_copy(update={"backend": "postgres", "backend_dsn": dsn, "backend_schema": schema})


@pytest.fixture(scope="module")
def pg_engine(engine, settings, pg_dsn, schema):
    publish(engine.index, pg_dsn, schema)
    pg = SearchEngine.load(_pg_settings(settings, pg_dsn, schema), rebuild="never")
    yield pg
    pg.close()


@pytest.fixture(scope="module")
def queries(settings) -> list[str]:
    """Real questions in Chinese and English: every dev question and every blind one."""
    texts = [*_questions(settings.eval_path / "questions.jsonl"),
             *_questions(settings.eval_path / "blind" / "questions.jsonl")]
    assert sum(1 for t in texts if t.isascii()) > 100 and sum(1 for t in texts if not t.isascii()) > 100
    return texts


def test_published_snapshot_is_the_postgres_one(pg_engine, engine):
    index = pg_engine.index
    assert isinstance(index, PgLoadedIndex) and index.version >= 1
    assert [n.node_id for n in index.nodes] == [n.node_id for n in engine.index.nodes]
    assert [n.metadata for n in index.nodes] == [n.metadata for n in engine.index.nodes]
    assert set(pg_engine.retrievers) == set(engine.retrievers)
    assert {type(r).__name__ for r in pg_engine.retrievers.values()} == {"PgDenseRetriever", "PgSparseRetriever"}
    assert pg_engine.scope is not None and pg_engine.scope.threshold == engine.scope.threshold
    assert pg_engine.scope.examples is not None


def test_sql_bm25_equals_bm25s(pg_engine, engine, queries):
    """Full score arrays of both channels for ~660 real questions, within 1e-4 of bm25s's."""
    worst, compared = 0.0, 0
    for channel in ("sparse", "sparse_knowledge"):
        embedded, published = getattr(engine.index, channel), getattr(pg_engine.index, channel)
        for text in queries:
            expected, got = embedded.scores(text), published.scores(text)
            assert got.shape == expected.shape
            worst = max(worst, float(np.max(np.abs(got - expected))))
            compared += int((expected > 0).sum())
    assert compared > 10_000, "the queries must hit many units"
    assert worst < 1e-4, worst


def test_sql_bm25_top_n_and_lexical_features_match(pg_engine, engine, queries, settings):
    """What the pipeline reads: the retrievers' top-N arrays, DFs, coverage, question forms, query tokens."""
    depth = settings.candidates_per_retriever
    for name in ("bm25", "bm25_k"):
        embedded, published = engine.retrievers[name], pg_engine.retrievers[name]
        for text in queries[::3]:
            texts = [text, text[: len(text) // 2]]  # a question and a clause of it, averaged
            expected, got = embedded.unit_scores(texts), published.unit_scores(texts)
            top = np.lexsort((np.arange(expected.size), -expected))[:depth]
            top = top[expected[top] > 0]
            np.testing.assert_allclose(got[top], expected[top], atol=1e-4)
            assert np.count_nonzero(got) == top.size  # the rest: the score fusion skips
            best = int(top[0]) if top.size else 0
            assert published.coverage(text, best) == pytest.approx(embedded.coverage(text, best), abs=1e-9)
            # the follow-up stage's "which unit holds the question's own words", by unit position
            (mass, weight), (pg_mass, pg_weight) = embedded.held(text), published.held(text)
            assert pg_weight == pytest.approx(weight) and np.allclose(pg_mass, mass) and (weight == 0 or mass.any())
    sparse, pg_sparse = engine.index.sparse_knowledge, pg_engine.index.sparse_knowledge
    for text in queries[::5]:
        assert pg_sparse.question_form(text) == sparse.question_form(text)
        assert pg_sparse.query_tokens(text) == sparse.query_tokens(text)
        for token in pg_sparse.query_tokens(text)[0]:
            assert pg_sparse.document_frequency(token) == sparse.document_frequency(token)


def test_dense_scores_match_faiss_on_the_head(pg_engine, engine, queries, settings):
    depth = settings.candidates_per_retriever
    for name in ("e5", "use_k"):
        for text in queries[::25]:
            expected, got = engine.retrievers[name].unit_scores([text]), pg_engine.retrievers[name].unit_scores([text])
            top = np.argsort(-expected)[:depth]
            np.testing.assert_allclose(got[top], expected[top], atol=1e-4)
            assert (got <= 0).sum() == got.size - depth  # the rest: the score fusion skips
    nodes = pg_engine.retrievers["e5_k"].retrieve("外资能否在厦门设立养老机构？")  # through PGVectorStore
    assert nodes[0].node.node_id == engine.retrievers["e5_k"].retrieve("外资能否在厦门设立养老机构？")[0].node.node_id


def test_blind_split_ranks_and_decides_as_embedded(pg_engine, engine, settings):
    from assistant.evaluation.ablation import to_run
    from assistant.evaluation.dataset import build_qrels, load_questions
    from assistant.evaluation.metrics import retrieval_metrics

    questions = load_questions(settings.eval_path / "blind" / "questions.jsonl", engine.corpus, "blind")
    results = {name: {q.id: e.search(q.question, top_k=20) for q in questions}
               for name, e in (("embedded", engine), ("postgres", pg_engine))}
    qrels = build_qrels(questions)
    ndcg = {name: retrieval_metrics(qrels, to_run(r), ["NDCG@10"])["NDCG@10"] for name, r in results.items()}
    same = sum(results["embedded"][q.id].decision.coverage == results["postgres"][q.id].decision.coverage
               for q in questions)
    assert abs(ndcg["postgres"] - ndcg["embedded"]) <= 0.01, ndcg
    assert same / len(questions) >= 0.98, f"coverage agrees on {same}/{len(questions)}"


def _marked(index, marker: str, tmp: Path):
    """The same index under another build name, every unit's metadata carrying ``marker``."""
    folder = tmp / f"build-{marker}"
    folder.mkdir()
    for name in ("scope.json", "scope_examples.npz"):
        shutil.copy(index.folder / name, folder / name)
    nodes = [n.model_copy(update={"metadata": {**n.metadata, "marker": marker}}) for n in index.nodes]
    return dataclasses.replace(index, folder=folder, nodes=nodes)


def test_publishing_never_shows_a_half_version_and_reload_switches(engine, settings, pg_dsn, pg_schema, tmp_path):
    pg_settings = _pg_settings(settings, pg_dsn, pg_schema)
    first = publish(_marked(engine.index, "one", tmp_path), pg_dsn, pg_schema)
    reader = SearchEngine.load(pg_settings, rebuild="never")
    embedders = {n: e.embedder for n, e in reader._encoders.items()}
    expected = [h.unit_id for h in reader.search("外资养老机构", top_k=10).hits]
    seen, problems, done = [], [], threading.Event()

    def read() -> None:
        while not done.is_set():
            try:  # a new worker starting now, and the running one searching on its snapshot
                index = load_published(pg_settings, engine.corpus, embedders, previous=reader.index)
                markers = {n.metadata["marker"] for n in index.nodes}
                seen.append((index.version, index.folder.name.split("-", 1)[1], frozenset(markers)))
                if [h.unit_id for h in reader.search("外资养老机构", top_k=10).hits] != expected:
                    problems.append("the running reader's ranking changed")
            except Exception as exc:  # every failure is a finding here
                problems.append(repr(exc))

    thread = threading.Thread(target=read)
    thread.start()
    try:
        second = publish(_marked(engine.index, "two", tmp_path), pg_dsn, pg_schema)
    finally:
        done.set()
        thread.join(60)
    assert not problems, problems[:3]
    assert {v for v, _, _ in seen} <= {first, second} and seen
    for version, build, markers in seen:  # never build one with units of two, or a mix of units
        assert markers == {"one" if version == first else "two"} and build == f"build-{next(iter(markers))}"
    assert reader.index.version == first
    assert reader.reload() is True and reader.index.version == second
    assert {n.metadata["marker"] for n in reader.index.nodes} == {"two"}
    assert reader.reload() is False  # one SELECT: still the published version
    assert [h.unit_id for h in reader.search("外资养老机构", top_k=10).hits] == expected
    third = publish_build(settings.model_copy(update={"backend_dsn": pg_dsn, "backend_schema": pg_schema}),
                          engine.corpus, embedders, folder=engine.index.folder)
    import psycopg

    with psycopg.connect(pg_dsn) as conn:  # pruned: the published version and its predecessor remain
        kept = [r[0] for r in conn.execute(f"SELECT version FROM {pg_schema}.versions ORDER BY version")]
        tables = [r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = %s", (pg_schema,))]
    assert kept == [second, third]
    assert not [t for t in tables if t.startswith((f"v{first}_", f"data_v{first}_"))]
    assert reader.search("外资养老机构", top_k=3).hits  # still on the predecessor: it keeps working
    reader.close()


def test_bad_dsn_and_missing_dsn_are_clear_errors(settings, pg_dsn):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="ASSISTANT_BACKEND_DSN"):
        type(settings)(backend="postgres", state_dsn=None, backend_dsn=None)
    bad = _pg_settings(settings, "postgresql://assistant:s3cret@127.0.0.1:1/assistant", "assistant_index")
    with pytest.raises(IndexUnavailable, match="unavailable: cannot connect") as caught:
        SearchEngine.load(bad, rebuild="never")
    assert "s3cret" not in str(caught.value)
    with pytest.raises(IndexUnavailable, match="DSN is invalid"):
        SearchEngine.load(_pg_settings(settings, "not a dsn", "assistant_index"), rebuild="never")
    env = {**os.environ, "ASSISTANT_BACKEND": "postgres", "ASSISTANT_BACKEND_DSN": bad.backend_dsn,
           "ASSISTANT_INDEX_DIR": str(settings.index_path)}
    done = subprocess.run([sys.executable, "-m", "assistant.cli", "search", "养老"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.startswith("error: index database") and "Traceback" not in done.stderr
    assert "s3cret" not in done.stderr


def test_the_watcher_swaps_in_a_version_published_elsewhere_and_a_dead_database_is_503(
        engine, settings, pg_dsn, pg_schema, tmp_path, serve_app):
    import httpx

    from assistant.api.app import create_app
    from assistant.api.watcher import IndexWatcher

    pg_settings = _pg_settings(settings, pg_dsn, pg_schema)
    publish(_marked(engine.index, "one", tmp_path), pg_dsn, pg_schema)
    reader = SearchEngine.load(pg_settings, rebuild="never")
    watcher = IndexWatcher(reader, interval=0)
    assert watcher.check() is False  # nothing new published: one query, no swap
    second = publish(_marked(engine.index, "two", tmp_path), pg_dsn, pg_schema)  # another machine's ingest
    assert watcher.check() is True and reader.index.version == second and watcher.swaps == 1
    assert {n.metadata["marker"] for n in reader.index.nodes} == {"two"}
    with serve_app(create_app(pg_settings.model_copy(update={"index_watch_seconds": 0}), engine=reader, ui=False)
                   ) as url, httpx.Client(base_url=url, timeout=60) as client:
        assert client.post("/api/search", json={"query": "外资养老机构"}).status_code == 200
        reader.index.db.close()  # the database goes away under a running worker
        response = client.post("/api/search", json={"query": "外资养老机构护理"})
        assert response.status_code == 503 and response.headers["Retry-After"] == "5"
        assert "search index is unavailable" in response.json()["error"]
        assert watcher.check() is False and watcher.last_error  # the watcher keeps the loaded version
