"""OpenMP thread counts for one call, set without releasing the GIL.

``omp_set_num_threads`` sets a per-thread value, so limiting the e5 engine's threads around each
call touches no other thread's OpenMP code. threadpoolctl's ``limit`` does that through
``ctypes.CDLL``, whose every call releases the GIL and takes it back: six times an encode (read,
set and restore, for each of the two runtimes this process loads). The e5 encode runs on a
search's critical path while another thread runs Python (USE, the sparse scores), so each of those
re-takes can wait behind it — about 2 ms a search on a busy two-core machine. These C functions
only read or write one integer, so calling them through ``ctypes.PyDLL`` (the GIL kept) is safe.
"""

from __future__ import annotations

import contextlib
import ctypes
from collections.abc import Iterator, Sequence
from typing import Any


class OpenMPLimit:
    """``limit(limits=n)``: the calling thread's OpenMP thread count in every given runtime, for a
    ``with`` block. ``controller`` is the threadpoolctl controller the runtimes were found by."""

    def __init__(self, controller: Any, paths: Sequence[str]) -> None:
        self.controller = controller
        self._runtimes: list[tuple[Any, Any]] = []
        for path in paths:
            runtime = ctypes.PyDLL(path)
            get, put = getattr(runtime, "omp_get_max_threads", None), getattr(runtime, "omp_set_num_threads", None)
            if get is None or put is None:
                continue
            get.restype, get.argtypes = ctypes.c_int, []
            put.restype, put.argtypes = None, [ctypes.c_int]
            self._runtimes.append((get, put))

    @contextlib.contextmanager
    def __call__(self, limits: int) -> Iterator[None]:
        before = [get() for get, _ in self._runtimes]
        for _, put in self._runtimes:
            put(limits)
        try:
            yield
        finally:
            for (_, put), threads in zip(self._runtimes, before, strict=True):
                put(threads)


def openmp_limit() -> OpenMPLimit | None:
    """A limiter over the OpenMP runtimes loaded now (found by threadpoolctl), or None without any."""
    try:
        from threadpoolctl import ThreadpoolController

        controller = ThreadpoolController().select(user_api="openmp")
        return OpenMPLimit(controller, [lib.filepath for lib in controller.lib_controllers])
    except Exception:
        return None
