"""Process-wide tuning, applied by the entry points (CLI commands, ``serve``, benchmarks).

Library code never changes process state: importing ``assistant`` or loading a ``SearchEngine``
leaves the environment, the interpreter and llama-index's globals as they were. What can only be
set for the whole process is set here, from the one settings object, by whoever owns the process:

- Python's thread switch interval (``gil_switch_interval_ms``), when the dense encoders run side
  by side: a thread whose C call returns must get the GIL back, and with the default 5 ms it can
  wait behind another thread's Python code (benchmarks/search_latency.py measures both);
- ``OMP_WAIT_POLICY=PASSIVE`` unless already set: the e5 engine's OpenMP runtime reads it once,
  when it loads, and threads spinning while they wait collapse under CPU contention. Only the
  environment can carry it, so it is set before any engine loads (a ``setdefault``: an operator's
  own value wins);
- ``HF_HUB_OFFLINE=1`` unless already set, and torch's intra-op threads (``use_threads``), only
  when the sentence-transformers embedder is configured (torch is not imported otherwise);
- BLAS threads (``use_threads``, default 1): numpy's OpenBLAS otherwise starts a thread per core whose
  spinning competes with the two encoders running side by side (benchmarks/search_latency.py: USE's
  encode p50 7.9 -> 4.9 ms, e5's 16.0 -> 11.2 ms with one BLAS thread);
- llama-index's ``Settings.llm = None``, so no llama-index component can fall back to OpenAI's
  hosted default model (the assistant builds its LLM client explicitly).

Call :func:`tune` once, early, before the engine loads; calling it again is harmless.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys

from assistant.config import Settings

__all__ = ["switch_interval", "tune"]


def switch_interval(settings: Settings) -> float | None:
    """The thread switch interval (seconds) ``settings`` asks for, or None to keep Python's."""
    dense = [name for name in settings.embedders if name in ("use", "e5", "st")]
    if not settings.parallel_encoders or len(dense) < 2 or settings.gil_switch_interval_ms <= 0:
        return None
    return settings.gil_switch_interval_ms / 1000


def tune(settings: Settings) -> None:
    """Apply the process-wide settings of ``settings`` to this process (see the module docstring)."""
    interval = switch_interval(settings)
    if interval is not None:
        sys.setswitchinterval(interval)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    _limit_blas(settings.use_threads)
    if "st" in settings.embedders:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        try:
            import torch
        except ImportError:  # the embedder reports it when it loads
            pass
        else:
            torch.set_num_threads(settings.use_threads)
    _disable_default_llm()


def _limit_blas(threads: int) -> None:
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - a dependency
        return
    threadpool_limits(limits=threads, user_api="blas")


def _disable_default_llm() -> None:
    try:
        from llama_index.core import Settings as LlamaSettings
    except ImportError:  # pragma: no cover - a dependency
        return
    with contextlib.redirect_stdout(io.StringIO()):  # it prints a notice; keep stdout clean for --json
        LlamaSettings.llm = None
