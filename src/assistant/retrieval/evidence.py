"""The answerability evidence of one search, in two parts: before the ranking, and after it.

Whatever needs only the question and the vectors of the embedders already encoded (USE, the cheap
one: its kNN neighbour features; the rerank's question terms) is computed by :func:`early_evidence`
in the USE thread while the slow encoder (e5) still encodes; :func:`evidence` then adds what needs
the e5 vector or the ranking. Together they give exactly the features one pass over everything
would, in the same order, so the calibration (which reads :func:`scope_vectors`) and a search agree.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from assistant.index.store import KNOWLEDGE_SUFFIX, LoadedIndex
from assistant.retrieval.analysis import QueryAnalysis
from assistant.retrieval.candidates import encoder_of
from assistant.retrieval.rerank import QuestionTerms
from assistant.retrieval.scope.features import EvidenceInput, compute_features

if TYPE_CHECKING:
    from assistant.retrieval.pipeline import Snapshot

# The embedder of question forms for the scope model's neighbour features: USE, the cheap one.
FORM_EMBEDDER = "use"


def _vector_texts(snapshot: Snapshot, analysis: QueryAnalysis) -> dict[str, tuple[str, str]]:
    """Name -> (embedder, text) of every vector the neighbour features compare, in feature order.

    An embedder that scores the asking clause compares the clause (``scope_text``); one that scores
    only the whole question (e5) compares that, so no search encodes a text twice with it.
    """
    texts = {name: (name, analysis.scope_text if name in snapshot.focus_embedders else analysis.text)
             for name in snapshot.encoders}
    sparse = snapshot.index.sparse
    if sparse is not None and FORM_EMBEDDER in snapshot.encoders:
        texts[f"form_{FORM_EMBEDDER}"] = (FORM_EMBEDDER, sparse.question_form(analysis.scope_text) or "?")
    return texts


def scope_vectors(snapshot: Snapshot, analysis: QueryAnalysis,
                  embedders: Collection[str] | None = None) -> dict[str, np.ndarray]:
    """The vectors the neighbour features compare: the question's per embedder, and its question form's
    (only those of ``embedders``, when given)."""
    return {name: snapshot.encoders[embedder].encode(text)
            for name, (embedder, text) in _vector_texts(snapshot, analysis).items()
            if embedders is None or embedder in embedders}


@dataclass(frozen=True)
class EarlyEvidence:
    """Query-side evidence computed before the slow encoder's vectors exist."""

    terms: QuestionTerms  # the rerank's question terms
    neighbours: dict[str, float]  # kNN features of the vectors of ``embedders``
    embedders: frozenset[str]  # the embedders whose neighbour features are done


def ready_embedders(snapshot: Snapshot, scored: Collection[str]) -> frozenset[str]:
    """The embedders whose vectors exist once the retrievers ``scored`` have scored."""
    return frozenset(name.removesuffix(KNOWLEDGE_SUFFIX) for name in scored
                     if name in snapshot.retrievers and encoder_of(snapshot.retrievers[name]) is not None)


def early_evidence(snapshot: Snapshot, analysis: QueryAnalysis, ready: frozenset[str],
                   answerability: bool = True) -> EarlyEvidence:
    """What the candidate stage's idle window can compute: the question terms always, and the
    ``ready`` embedders' neighbour features when the answerability features will be needed."""
    terms = snapshot.relevance.question_terms(analysis.text)
    if not answerability:
        return EarlyEvidence(terms, {}, frozenset())
    examples = snapshot.scope.examples if snapshot.scope is not None else None
    if examples is None:
        return EarlyEvidence(terms, {}, ready)
    return EarlyEvidence(terms, examples.features(scope_vectors(snapshot, analysis, ready)), ready)


def neighbour_features(snapshot: Snapshot, analysis: QueryAnalysis, early: EarlyEvidence | None = None
                       ) -> dict[str, float]:
    """Every kNN feature, in :func:`scope_vectors` order; those ``early`` holds are not recomputed."""
    examples = snapshot.scope.examples if snapshot.scope is not None else None
    if examples is None:
        return {}
    if early is None or not early.embedders:
        return examples.features(scope_vectors(snapshot, analysis))
    rest = [e for _, (e, _) in _vector_texts(snapshot, analysis).items() if e not in early.embedders]
    found = {**early.neighbours, **examples.features(scope_vectors(snapshot, analysis, rest))}
    order = [f"knn_{name}" for name in _vector_texts(snapshot, analysis)]
    return {key: found[key] for key in order if key in found}


def _both_texts(index: LoadedIndex, position: int) -> list[str]:
    node = index.nodes[position]
    return [node.text, node.metadata.get("text_en") or ""]


def _lexical(snapshot: Snapshot, text: str, top: int) -> dict[str, tuple[float, float]]:
    lexical = {}
    for suffix in ("", KNOWLEDGE_SUFFIX):
        retriever = snapshot.retrievers.get(f"bm25{suffix}")
        if retriever is not None:
            lexical[suffix] = retriever.coverage(text, top)
    return lexical


def evidence(snapshot: Snapshot, analysis: QueryAnalysis, scores: Mapping[str, np.ndarray],
             fused: list[tuple[int, float]], order: list[tuple[int, float]],
             neighbours: dict[str, float] | None = None) -> dict[str, float]:
    """The answerability features of one search (calibration computes them the same way)."""
    index = snapshot.index
    top_texts = [t for position, _ in order[:3] for t in _both_texts(index, position)]
    check = snapshot.answer_types
    if neighbours is None:
        neighbours = neighbour_features(snapshot, analysis)
    asked = set(analysis.asked)
    return compute_features(EvidenceInput(
        lang=analysis.lang, scores=scores, fused=fused, asked=analysis.asked,
        unmet_top3=frozenset(check.unmet(analysis.text, top_texts, asked) if asked else ()),
        unmet_top2=frozenset(check.unmet(analysis.text, top_texts[:2], asked) if asked else ()),
        places=analysis.places, lexical=_lexical(snapshot, analysis.scope_text, order[0][0]) if order else {},
        neighbours=neighbours))
