"""The document dimension of a search: which units belong to which plan, and the document filter.

A library index holds the units of several plans. ``search(..., document=N)`` restricts the
candidates to plan N's units by masking every other unit's score in every channel before fusion
(a masked unit scores below 0, which no ranked list includes), so the filter is the same one
pipeline, not a second search. Lookups ("第2项") and structure facts ("一共多少项") read in the
filtered document, or in the primary plan when no filter is given.

The answerability evidence reads the masked scores too, with one exception: a document without
reviewed task knowledge has no views in the knowledge channels, so masking them would read "nothing
found" where the truth is "nothing to look in"; for such a document those channels' evidence is
what an unfiltered search sees. (The scope model is calibrated on the primary plan's questions:
its decisions on other documents are the same model applied as it is.)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from assistant.index.manifest import KNOWLEDGE_SUFFIX
from assistant.ingest.knowledge import Knowledge
from assistant.ingest.library import Library, LibraryDocument, split_unit_id
from assistant.retrieval.structure import StructureReader

MASKED = -1.0  # the score of a unit outside the filter: fusion lists only units scored above 0


@dataclass(frozen=True)
class DocumentScope:
    """One document of a snapshot: its units' positions in the index, its annex reader, its last task."""

    document: LibraryDocument
    members: np.ndarray  # bool per unit position: the unit belongs to this document
    structure: StructureReader
    has_knowledge: bool = True  # its units have knowledge views (the primary plan's do)

    @property
    def max_task(self) -> int:
        return max(t.number for t in self.document.corpus.tasks)

    @cached_property
    def positions(self) -> np.ndarray:
        """The positions of this document's units, ascending."""
        return np.flatnonzero(self.members)


def document_scopes(library: Library, unit_ids: list[str], cues: dict[str, str],
                    tokens: Callable[[str], frozenset[str]], knowledge: Knowledge | None) -> dict[str, DocumentScope]:
    """A :class:`DocumentScope` per document number, for the units of one loaded index."""
    keys = [split_unit_id(uid)[0] for uid in unit_ids]
    scopes = {}
    for doc in library.documents:
        key = "" if doc.primary else doc.number
        members = np.array([k == key for k in keys], dtype=bool)
        known = knowledge is not None and any(knowledge.get(u) is not None
                                              for u, k in zip(unit_ids, keys, strict=True) if k == key)
        scopes[doc.number] = DocumentScope(doc, members, StructureReader(doc.corpus, cues, tokens, doc.prefix),
                                           has_knowledge=known)
    return scopes


def evidence_scores(scope: DocumentScope, raw: Mapping[str, np.ndarray],
                    masked: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]:
    """The channel scores the answerability features read under a filter (see the module docstring)."""
    if scope.has_knowledge:
        return masked
    return {name: raw[name] if name.endswith(KNOWLEDGE_SUFFIX) else values for name, values in masked.items()}


def candidate_filter(scope: DocumentScope | None, members: np.ndarray | None,
                     names: Iterable[str]) -> dict[str, np.ndarray]:
    """Per retriever, the unit positions a filter keeps (``unit_scores(texts, within=...)``): a backend that
    returns only its best units (PostgreSQL) then returns the best of that document's, as masking every
    unit's score embedded does. None under no filter; a knowledge channel of a document without knowledge
    is left unfiltered, since its evidence is read unmasked (:func:`evidence_scores`)."""
    if scope is None or members is None:
        return {}
    return {name: scope.positions for name in names if scope.has_knowledge or not name.endswith(KNOWLEDGE_SUFFIX)}


def restrict(scores: Mapping[str, np.ndarray], members: np.ndarray) -> dict[str, np.ndarray]:
    """Every channel's scores with the units outside ``members`` masked out."""
    return {name: np.where(members, values, np.asarray(MASKED, dtype=values.dtype)) for name, values in scores.items()}


def positions_of(unit_ids: list[str], local_ids: tuple[str, ...]) -> frozenset[int]:
    """Positions of the units whose id within their document is one of ``local_ids`` (in every document)."""
    return frozenset(p for p, uid in enumerate(unit_ids) if split_unit_id(uid)[1] in local_ids)
