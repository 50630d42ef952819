"""What an index was built from, and the checks that refuse a stale or corrupt one.

The manifest of a build records a fingerprint of the code that decides what an index holds, of the
vocabulary, the task knowledge, the corpus and the calibration data, and the sha256 of every file
(the calibration files included: they are written before the checksums are taken).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Iterator
from pathlib import Path

from assistant.config import Settings
from assistant.index.units import unit_nodes
from assistant.ingest.corpus import corpus_records
from assistant.ingest.knowledge import Knowledge, load_knowledge
from assistant.ingest.library import Library, as_library
from assistant.ingest.models import Corpus
from assistant.ingest.vocabulary import load_vocabulary

log = logging.getLogger(__name__)

KNOWLEDGE_SUFFIX = "_k"  # a retriever over the knowledge views: use_k, e5_k, bm25_k

# The code that decides what an index holds; a change to any of it makes older builds stale
# (no hand-bumped format number to forget).
_REPRESENTATION_MODULES = ("index/units.py", "index/sparse.py", "index/store.py", "index/manifest.py",
                           "index/analyzer.py", "ingest/knowledge.py")


def representation_fingerprint() -> str:
    """sha256 over the modules that define units, views, tokens and layout, and the scope features."""
    from assistant.retrieval.scope.features import feature_fingerprint

    root = Path(__file__).resolve().parent.parent
    digest = hashlib.sha256()
    for name in _REPRESENTATION_MODULES:
        digest.update(name.encode() + b"\0" + (root / name).read_bytes())
    digest.update(feature_fingerprint().encode())
    return digest.hexdigest()


class IndexProblem(RuntimeError):
    """Base of index problems; the message says what to do."""


class IndexMissing(IndexProblem):
    pass


class IndexStale(IndexProblem):
    pass


class IndexCorrupt(IndexProblem):
    pass


class IndexUnavailable(IndexProblem):
    """The index database cannot be reached or used; the message names it (without the password)."""


def corpus_fingerprint(corpus: Corpus | Library) -> str:
    """sha256 of the corpus records; of a library, of every document's (one document: its own, as always)."""
    library = as_library(corpus)
    records = [corpus_records(doc.corpus) for doc in library.documents]
    payload = json.dumps(records[0] if len(records) == 1 else records, ensure_ascii=False, sort_keys=True,
                         default=str)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def unit_knowledge(settings: Settings, corpus: Corpus | Library) -> Knowledge | None:
    """The task knowledge the index uses (None when ``settings.knowledge`` is off): the primary plan's
    reviewed knowledge only; the units of other documents have no knowledge view."""
    if not settings.knowledge:
        return None
    ids = [n.node_id for n in unit_nodes(as_library(corpus).corpus)]
    return load_knowledge(settings.annotations_path, ids)



def index_config(settings: Settings, embedders: dict) -> dict:
    return {"representation": representation_fingerprint(),
            "vocabulary_sha256": load_vocabulary(settings.annotations_path).sha256,
            "embedders": sorted(embedders), "bm25": settings.bm25,
            "knowledge": settings.knowledge,
            "st_model_path": str(settings.st_model_path) if "st" in embedders else None,
            "scope_data_sha256": scope_data_fingerprint(settings)}


def scope_data_fingerprint(settings: Settings) -> str | None:
    """The labelled questions the scope model is calibrated on (eval dev split + calibration set):
    an index calibrated on other data is stale."""
    digest = hashlib.sha256()
    found = False
    for name in ("questions.jsonl", "calibration.jsonl"):
        path = settings.eval_path / name
        if path.is_file():
            digest.update(name.encode() + b"\0" + path.read_bytes())
            found = True
    return digest.hexdigest() if found else None


def write_manifest(folder: Path, manifest: dict) -> None:
    """The manifest with the checksum of every file beside it."""
    manifest["files"] = {str(p.relative_to(folder)): file_sha256(p) for p in sorted(folder.rglob("*"))
                         if p.is_file() and p.name != "manifest.json"}
    (folder / "manifest.json").write_text(json.dumps(manifest, ensure_ascii=False, indent=2), encoding="utf-8")


def read_manifest(folder: Path) -> dict:
    path = folder / "manifest.json"
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise IndexCorrupt(f"index manifest missing in {folder}; rebuild with `policy-assistant ingest`") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise IndexCorrupt(f"index manifest {path} is unreadable ({exc}); rebuild with `policy-assistant ingest`"
                           ) from exc
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        raise IndexCorrupt(f"index manifest {path} is malformed; rebuild with `policy-assistant ingest`")
    return manifest


def verify(folder: Path, settings: Settings, corpus: Corpus | Library, available: set[str]) -> dict:
    """Check an index folder against its manifest, the current corpus and the embedders here.

    ``available`` are the configured embedders that run on this machine: the index must hold
    vectors for each of them, and nothing the configuration no longer asks for.
    """
    manifest = read_manifest(folder)
    for name, checksum in manifest["files"].items():
        path = folder / name
        if not path.is_file():
            raise IndexCorrupt(f"index file {name} is missing; rebuild with `policy-assistant ingest`")
        if file_sha256(path) != checksum:
            raise IndexCorrupt(f"index file {name} does not match its checksum; rebuild with "
                               "`policy-assistant ingest`")
    if manifest.get("representation") != representation_fingerprint():
        raise IndexStale("index was built by another version of the indexing code or scope features")
    if manifest.get("corpus_sha256") != corpus_fingerprint(corpus):
        raise IndexStale("index was built from another version of the corpus or annotations")
    built = set(manifest.get("embedders", []))
    if available - built or built - set(settings.embedders):
        raise IndexStale(f"index has embedders {sorted(built)}, the configuration here uses {sorted(available)}")
    if bool(manifest.get("bm25")) != settings.bm25:
        raise IndexStale("index BM25 setting differs from the configuration")
    if manifest.get("vocabulary_sha256") != load_vocabulary(settings.annotations_path).sha256:
        raise IndexStale("index was built with another version of the vocabulary (stop words, gazetteer, answer types)")
    if bool(manifest.get("knowledge")) != settings.knowledge:
        raise IndexStale("index knowledge setting differs from the configuration")
    knowledge = unit_knowledge(settings, corpus)
    if manifest.get("knowledge_sha256") != (knowledge.sha256 if knowledge is not None else None):
        raise IndexStale("index was built from another version of the task knowledge")
    if manifest.get("scope_data_sha256") != scope_data_fingerprint(settings):
        raise IndexStale("the scope model was calibrated on other labelled questions (eval/*.jsonl changed)")
    return manifest


def dense_channels(manifest: dict, available: Iterable[str]) -> Iterator[tuple[str, str]]:
    """``(embedder, channel)`` of every dense channel in ``manifest`` whose embedder runs here (text
    channels first, then knowledge); a missing embedder is logged once and its channels skipped."""
    available = set(available)
    for suffix in (["", KNOWLEDGE_SUFFIX] if manifest.get("knowledge") else [""]):
        for name in manifest["embedders"]:
            if name in available:
                yield name, name + suffix
            elif not suffix:
                log.warning("index has %s vectors but the embedder is unavailable here; skipping it", name)
