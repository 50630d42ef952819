"""The answerability evidence of one search, in two parts: before the ranking, and after it.

Whatever needs only the question and the vectors of the embedders already encoded (USE, the cheap
one: its kNN neighbour features; the rerank's question terms) is computed by :func:`early_evidence`
in the USE thread while the slow encoder (e5) still encodes; :func:`evidence` then adds what needs
the e5 vector or the ranking. Together they give exactly the features one pass over everything
would, in the same order, so the calibration (which reads :func:`scope_vectors`) and a search agree.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
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
class NeighbourPart:
    """The kNN neighbour features of some embedders' vectors (``embedders``: whose they are)."""

    embedders: frozenset[str]
    features: dict[str, float]


@dataclass(frozen=True)
class EarlyEvidence:
    """Query-side evidence computed before the slow encoder's vectors exist."""

    terms: QuestionTerms  # the rerank's question terms
    neighbours: NeighbourPart  # those of the embedders already encoded


def ready_embedders(snapshot: Snapshot, scored: Collection[str]) -> frozenset[str]:
    """The embedders whose vectors exist once the retrievers ``scored`` have scored."""
    return frozenset(name.removesuffix(KNOWLEDGE_SUFFIX) for name in scored
                     if name in snapshot.retrievers and encoder_of(snapshot.retrievers[name]) is not None)


def neighbour_part(snapshot: Snapshot, analysis: QueryAnalysis, embedders: frozenset[str]) -> NeighbourPart:
    """The neighbour features of the vectors of ``embedders`` (their vectors already encoded)."""
    examples = snapshot.scope.examples if snapshot.scope is not None else None
    if examples is None:
        return NeighbourPart(embedders, {})
    return NeighbourPart(embedders, examples.features(scope_vectors(snapshot, analysis, embedders)))


def early_evidence(snapshot: Snapshot, analysis: QueryAnalysis, ready: frozenset[str],
                   answerability: bool = True) -> EarlyEvidence:
    """What the candidate stage's idle window can compute: the question terms always, and the
    ``ready`` embedders' neighbour features when the answerability features will be needed."""
    terms = snapshot.relevance.question_terms(analysis.text)
    if not answerability:
        return EarlyEvidence(terms, NeighbourPart(frozenset(), {}))
    return EarlyEvidence(terms, neighbour_part(snapshot, analysis, ready))


def neighbour_features(snapshot: Snapshot, analysis: QueryAnalysis, parts: Sequence[NeighbourPart] = ()
                       ) -> dict[str, float]:
    """Every kNN feature, in :func:`scope_vectors` order; those ``parts`` hold are not recomputed."""
    examples = snapshot.scope.examples if snapshot.scope is not None else None
    if examples is None:
        return {}
    done = frozenset().union(*(part.embedders for part in parts))
    if not done:
        return examples.features(scope_vectors(snapshot, analysis))
    texts = _vector_texts(snapshot, analysis)
    found = {key: value for part in parts for key, value in part.features.items()}
    found.update(examples.features(scope_vectors(snapshot, analysis, {e for e, _ in texts.values()} - done)))
    order = [f"knn_{name}" for name in texts]
    return {key: found[key] for key in order if key in found}


class QuerySide:
    """A search's work that does not need e5's vectors or the ranking, done off its critical path:
    in the USE thread while e5 encodes (the analysis's details, the question terms, USE's neighbour
    features; :meth:`meanwhile`) and in the pool while e5's retrievers score (e5's neighbour
    features; :meth:`encoded`). ``answerability`` False: the decision will read no features."""

    def __init__(self, snapshot: Snapshot, analysis: QueryAnalysis, pool: ThreadPoolExecutor | None,
                 answerability: bool) -> None:
        self._snapshot, self._analysis, self._pool = snapshot, analysis, pool
        self._answerability = answerability
        self._detailed: QueryAnalysis | None = None
        self.early: EarlyEvidence | None = None
        self._late: list[Future[NeighbourPart]] = []

    def meanwhile(self, scored: Mapping[str, np.ndarray]) -> None:
        ready = ready_embedders(self._snapshot, scored)
        self._detailed = self._snapshot.analyzer.with_details(self._analysis)
        self.early = early_evidence(self._snapshot, self._analysis, ready, self._answerability)

    def encoded(self, embedder: str) -> None:
        if self._pool is not None and self._answerability:
            self._late.append(self._pool.submit(neighbour_part, self._snapshot, self._analysis,
                                                frozenset({embedder})))

    def analysis(self) -> QueryAnalysis:
        """The question's analysis with its details."""
        if self._detailed is None:
            self._detailed = self._snapshot.analyzer.with_details(self._analysis)
        return self._detailed

    def neighbours(self) -> dict[str, float]:
        """Every kNN feature (:func:`neighbour_features`); a pool job not started yet is done here."""
        parts = [self.early.neighbours] if self.early is not None else []
        parts += [part.result() for part in self._late if not part.cancel()]
        return neighbour_features(self._snapshot, self._analysis, parts)

    def close(self) -> None:
        """Cancel pool work not started (a lookup or the annex's structure answered)."""
        for part in self._late:
            part.cancel()


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
