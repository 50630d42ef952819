"""Start-up caches: slow-to-load model resources kept as pickles beside the compiled engines.

Measured at cold start (2 cores): USE's pure-Python tokenizer parses its SentencePiece model in
0.7 s and its weights come out of a compressed npz in 0.3 s; jieba unmarshals its dictionary in
0.65–0.8 s. The same objects unpickle in 0.15, 0.04 and 0.23 s. A cache is keyed by the package
version and the size and time of the files it was made from, lives in ``Settings.native_path``
(git-ignored, written by this process only), and any problem reading it means "no cache": the
caller then loads the package's own way and writes a fresh one.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def fingerprint(*parts: object) -> str:
    """A short key over versions and source files (a path counts by its size and mtime)."""
    digest = hashlib.sha256()
    for part in parts:
        if isinstance(part, Path):
            stat = part.stat()
            part = f"{part.name}:{stat.st_size}:{stat.st_mtime_ns}"
        digest.update(str(part).encode("utf-8") + b"\0")
    return digest.hexdigest()[:16]


def _path(cache_dir: Path, name: str, key: str) -> Path:
    return cache_dir / f"{name}-{key}.pickle"


def load(cache_dir: Path, name: str, key: str) -> Any | None:
    """The cached object, or None when there is none or it does not read back."""
    path = _path(cache_dir, name, key)
    try:
        with path.open("rb") as handle:
            return pickle.load(handle)
    except FileNotFoundError:
        return None
    except Exception as exc:  # a truncated or foreign file is only a missed cache
        log.info("start-up cache %s unreadable (%s); loading the slow way", path, exc)
        return None


def save(cache_dir: Path, name: str, key: str, value: Any) -> None:
    """Write atomically (temporary file, then rename) and drop caches of older keys."""
    temporary: str | None = None
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=cache_dir, prefix=f".{name}-", delete=False) as handle:
            temporary = handle.name
            pickle.dump(value, handle, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(temporary, _path(cache_dir, name, key))
        temporary = None
        for old in cache_dir.glob(f"{name}-*.pickle"):
            if old.name != _path(cache_dir, name, key).name:
                old.unlink(missing_ok=True)
    except (OSError, pickle.PickleError, TypeError) as exc:
        log.info("could not write start-up cache %s (%s); next start loads the slow way", name, exc)
    finally:
        if temporary is not None:
            Path(temporary).unlink(missing_ok=True)
