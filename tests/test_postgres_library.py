"""A library of several documents on the PostgreSQL backend, against the embedded backend on the same build.

The session's library index (conftest ``library_engine``: the real plan and the fictitious one of
``library_plan``, real embedders, FAISS, bm25s, calibrated) is published into a schema of this
module on the suite's PostgreSQL server (``pg_fixture``); the postgres engine reads it from there.
Both engines must rank the same units and decide the same coverage for questions in both languages,
with and without the document filter; ids, documents, citations and errors must read the same.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import psycopg
import pytest

from assistant.answer.chat import Assistant
from assistant.index.pg_store import PgLoadedIndex, publish_build
from assistant.ingest.library import UnknownDocument
from assistant.retrieval.engine import SearchEngine
from library_plan import NUMBER, PLAN_TITLE, PREFIX, PRIMARY

pytest_plugins = ["pg_fixture"]
pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
UNKNOWN = "没有〔2026〕1号"

# (question, document filter): both languages, both documents' topics, lookups and structure questions
QUESTIONS = [
    ("蜂农可以为果园提供蜜蜂授粉服务吗？", None),
    ("Can beekeepers offer pollination services to orchards?", None),
    ("外资能办养老机构吗？", None),
    ("Can foreign firms run care homes?", None),
    ("外资做VPN持股上限多少?", None),
    ("蜂蜜可以查到是哪个蜂场的吗？", None),
    ("第2项", None),
    ("附件一共有多少项任务？", None),
    ("蜂农可以为果园提供蜜蜂授粉服务吗？", NUMBER),
    ("Is there insurance for bee colonies over winter?", NUMBER),
    ("honey antibiotic residue testing", NUMBER),
    ("蜂蜜溯源标签", NUMBER),
    ("外资能办养老机构吗？", NUMBER),
    ("Can foreign firms run care homes?", NUMBER),
    ("第2项是什么", NUMBER),
    ("第17项", NUMBER),
    ("附件一共有多少项任务？", NUMBER),
    ("蜂农可以为果园提供蜜蜂授粉服务吗？", PRIMARY),
    ("Can beekeepers offer pollination services to orchards?", PRIMARY),
    ("外资能办养老机构吗？", PRIMARY),
    ("Can foreign firms run care homes?", PRIMARY),
    ("第17项", PRIMARY),
    ("跨境数据流动有什么试点？", PRIMARY),
]


@pytest.fixture(scope="module")
def pg_library_settings(library_settings, pg_dsn):
    """The library's settings on the postgres backend, in a schema of this module (dropped afterwards)."""
    schema = f"lib_{uuid.uuid4().hex[:12]}"
    yield library_settings.model_copy(update={"backend": "postgres", "backend_dsn": pg_dsn, "backend_schema": schema})
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


@pytest.fixture(scope="module")
def pg_library(library_engine, pg_library_settings) -> SearchEngine:
    """The embedded library build published as ``ingest`` publishes it, then loaded as a worker loads it."""
    embedders = {n: e.embedder for n, e in library_engine._encoders.items()}
    publish_build(pg_library_settings, library_engine.library, embedders, folder=library_engine.index.folder)
    engine = SearchEngine.load(pg_library_settings, rebuild="never")
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def dev_questions(library_settings) -> list[str]:
    """A sample of the real dev questions (both languages), as further checks of the filters."""
    path = library_settings.eval_path / "questions.jsonl"
    texts = [json.loads(line)["question"] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    sample = texts[::6]
    assert sum(t.isascii() for t in sample) > 10 and sum(not t.isascii() for t in sample) > 10
    return sample


def _ranked(engine: SearchEngine, question: str, document: str | None) -> tuple[list[str], str]:
    result = engine.search(question, top_k=10, document=document)
    return [h.unit_id for h in result.hits], result.decision.coverage


def test_the_published_library_is_the_embedded_one(pg_library, library_engine):
    index = pg_library.index
    assert isinstance(index, PgLoadedIndex) and index.manifest["documents"] == [PRIMARY, NUMBER]
    assert pg_library.library.numbers == [PRIMARY, NUMBER] and pg_library.library.multiple
    assert [n.node_id for n in index.nodes] == [n.node_id for n in library_engine.index.nodes]
    assert [n.metadata for n in index.nodes] == [n.metadata for n in library_engine.index.nodes]
    assert f"{PREFIX}task:5" in index.unit_index and "task:111" in index.unit_index
    assert index.node(f"{PREFIX}task:2").metadata["document"]["title"] == PLAN_TITLE
    assert {type(r).__name__ for r in pg_library.retrievers.values()} == {"PgDenseRetriever", "PgSparseRetriever"}


def test_same_ranking_and_coverage_as_embedded(pg_library, library_engine):
    """Questions in both languages, unfiltered and filtered to either document: the same top 10 and decision."""
    for question, document in QUESTIONS:
        expected, got = _ranked(library_engine, question, document), _ranked(pg_library, question, document)
        assert got == expected, (question, document)
        assert got[0], (question, document)  # every one finds something
        if document is not None:
            prefix = PREFIX if document == NUMBER else ""
            assert all(u.startswith(prefix) and (prefix or "/" not in u) for u in got[0]), (question, document)


def test_real_questions_rank_and_decide_as_embedded_under_every_filter(pg_library, library_engine, dev_questions):
    """The dev sample unfiltered, in the primary plan only and in the fictitious plan only (where the
    filter must reach SQL: the primary plan's units would otherwise fill every retriever's candidates)."""
    for document in (None, PRIMARY, NUMBER):
        differing = [(q, document) for q in dev_questions
                     if _ranked(pg_library, q, document) != _ranked(library_engine, q, document)]
        assert not differing, differing[:3]
    filtered = pg_library.search(dev_questions[0], top_k=10, document=NUMBER)
    assert len(filtered.hits) == 10 and all(h.unit_id.startswith(PREFIX) for h in filtered.hits)


def test_hits_and_citations_name_their_document(pg_library, library_settings):
    result = pg_library.search("蜂农可以为果园提供蜜蜂授粉服务吗？", top_k=5)
    assert result.hits[0].unit_id == f"{PREFIX}task:4" and result.hits[0].document["number"] == NUMBER
    assert result.to_json()["results"][0]["document"]["title"] == PLAN_TITLE
    assistant = Assistant(pg_library, library_settings.model_copy(update={"llm_base_url": None}))
    try:
        bees = assistant.ask("蜂农可以为果园提供蜜蜂授粉服务吗？")
        elderly = assistant.ask("Can foreign firms run care homes?", document=PRIMARY)
        lookup = assistant.ask("第2项是什么", document=NUMBER)
    finally:
        assistant.close()
    assert bees.citations[0].document["number"] == NUMBER and f"[{NUMBER} 第4项]" in bees.answer
    assert 17 in [c.task for c in elderly.citations] and f"[Doc No. {PRIMARY} Task 17]" in elderly.answer
    assert all(c.document["number"] == PRIMARY for c in elderly.citations)
    assert lookup.mode == "lookup" and f"[{NUMBER} 第2项]" in lookup.answer


def test_unknown_document_is_the_embedded_error(pg_library, library_engine):
    messages = []
    for engine in (library_engine, pg_library):
        with pytest.raises(UnknownDocument) as caught:
            engine.search("蜂蜜", document=UNKNOWN)
        messages.append(str(caught.value))
    assert messages[0] == messages[1] and NUMBER in messages[1] and PRIMARY in messages[1]


def test_cli_searches_the_published_library(pg_library, pg_library_settings):
    """``policy-assistant search --document`` with ASSISTANT_BACKEND=postgres and ASSISTANT_LIBRARY."""
    settings = pg_library_settings
    env = dict(os.environ, ASSISTANT_BACKEND="postgres", ASSISTANT_BACKEND_DSN=settings.backend_dsn,
               ASSISTANT_BACKEND_SCHEMA=settings.backend_schema, ASSISTANT_INDEX_DIR=str(settings.index_path),
               ASSISTANT_LIBRARY=json.dumps([str(p) for p in settings.library_paths]),
               ASSISTANT_CONVERSATION_DB=str(settings.conversations_path),
               ASSISTANT_FEEDBACK_DB=str(settings.feedback_path))
    cli = [sys.executable, "-m", "assistant.cli", "search", "第2项", "--json", "--top-k", "1"]
    found = subprocess.run([*cli, "--document", NUMBER], cwd=REPO, env=env, capture_output=True, text=True,
                           timeout=300)
    assert found.returncode == 0, found.stderr
    result = json.loads(found.stdout)["results"][0]
    assert result["unit_id"] == f"{PREFIX}task:2" and result["document"]["number"] == NUMBER
    unknown = subprocess.run([*cli, "--document", UNKNOWN], cwd=REPO, env=env, capture_output=True, text=True,
                             timeout=300)
    assert unknown.returncode == 2 and "unknown document" in unknown.stderr and "Traceback" not in unknown.stderr
