"""Provenance of a run: the dataset files, the system (commit, models, settings, libraries, machine)."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from assistant.evaluation.dataset import Conversation, EvalQuestion, dataset_sha256
from assistant.evaluation.overlap import overlap_rates
from assistant.evaluation.results import DatasetFile, DatasetInfo, Percentiles, SystemInfo

if TYPE_CHECKING:
    from assistant.config import Settings
    from assistant.retrieval.engine import SearchEngine

LIBRARIES = ("ranx", "faiss-cpu", "llama-index-core", "bm25s", "numpy", "matplotlib", "pydantic")


def git_revision(home: Path) -> dict[str, str | bool | None]:
    """The checkout's commit and whether tracked files differ from it (None outside git)."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=home, capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=home,
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    return {"commit": commit, "dirty": bool(dirty)}


def library_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _relative(path: Path, home: Path) -> str:
    return str(path.relative_to(home)) if path.is_relative_to(home) else str(path)


def dataset_info(files: dict[str, Path], home: Path, every: dict[str, list[EvalQuestion]],
                 questions: Sequence[EvalQuestion], judged: int, conversations: Sequence[Conversation],
                 conversation_rows: int, corpus) -> DatasetInfo:
    """The files measured (path, sha256, rows) and what of them this run used."""
    described = {name: DatasetFile(path=_relative(path, home), sha256=dataset_sha256(path),
                                   rows=len(every[name]) if name in every else conversation_rows)
                 for name, path in files.items()}
    overlap = overlap_rates([q for part in every.values() for q in part], corpus)
    return DatasetInfo(
        files=described, questions=len(questions), judged=judged, conversations=len(conversations),
        turns=sum(len(c.turns) for c in conversations),
        by_type=dict(Counter(q.type for q in questions)), by_lang=dict(Counter(q.lang for q in questions)),
        by_coverage=dict(Counter(q.coverage for q in questions)),
        overlap_rule={k: {kk: vv for kk, vv in v.items() if kk != "ids"} for k, v in overlap.items()})


def system_info(engine: SearchEngine, settings: Settings, names: Sequence[str]) -> SystemInfo:
    manifest = engine.index.manifest
    return SystemInfo(
        git=git_revision(settings.home), retrievers=list(names), models=manifest.get("embedder_info", []),
        index={k: manifest.get(k) for k in ("built_at", "format", "units", "corpus_sha256", "source_sha256", "bm25")},
        settings={"fusion": settings.fusion, "rrf_k": settings.rrf_k,
                  "fusion_weights": {n: settings.fusion_weights.get(n, 1.0) for n in names},
                  "candidates_per_retriever": settings.candidates_per_retriever,
                  "lookup": settings.lookup, "rerank": settings.rerank,
                  "llm": settings.llm_model if settings.llm_base_url else None},
        libraries=library_versions(), platform=platform.platform(), cpus=os.cpu_count(),
        load_average=[round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None)


def percentiles(values: Sequence[float]) -> Percentiles:
    """p50/p95/mean of a list of timings (ms)."""
    array = np.asarray(values, dtype=float)
    return Percentiles(p50=float(np.percentile(array, 50)), p95=float(np.percentile(array, 95)),
                       mean=float(array.mean()), n=len(array))
