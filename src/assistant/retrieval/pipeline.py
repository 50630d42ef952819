"""The one query pipeline: analysis → candidates → fusion → rerank/support → answerability.

``run`` is what ``/api/search``, ``/api/ask``, the CLI, the eval harness and the scope calibration
all call, so what is measured is what users get. Each stage is a module with a typed output:

=================  ==========================  ============================
stage              module                      output
=================  ==========================  ============================
query analysis     ``analysis.py``             ``QueryAnalysis``
candidates         ``candidates.py``           ``CandidateScores``
fusion             ``fusion.py``               ``(position, score)`` ranking
rerank, support    ``rerank.py``               ``RerankResult``
answerability      ``scope/``                  ``Decision``
=================  ==========================  ============================
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace

import numpy as np

from assistant.config import Settings
from assistant.index.store import KNOWLEDGE_SUFFIX, LoadedIndex
from assistant.retrieval.analysis import QueryAnalysis, QueryAnalyzer
from assistant.retrieval.candidates import QueryEncoder, Retriever, encoder_of, score_candidates
from assistant.retrieval.documents import DocumentScope, candidate_filter, evidence_scores, restrict
from assistant.retrieval.evidence import FORM_EMBEDDER, QuerySide, evidence
from assistant.retrieval.followup import FollowupResolver, PriorTurn, Resolution
from assistant.retrieval.followup_decision import answers_better, followup_decision, names_new_object, names_the_unknown
from assistant.retrieval.followup_reference import content_reference, narrowed_units, pronoun_reference
from assistant.retrieval.fusion import fuse
from assistant.retrieval.neighbours import neighbours_after_support
from assistant.retrieval.rerank import ClauseRelevance, QuestionTerms, RerankResult, rerank, sentences
from assistant.retrieval.scope.answer_types import AnswerTypeCheck
from assistant.retrieval.scope.decision import Decision, decide, lookup_decision
from assistant.retrieval.scope.model import ScopeModel
from assistant.retrieval.structure import StructureReader
from assistant.retrieval.types import Hit, SearchResult
from assistant.text import detect_language

# Units that hold no measures: they answer metadata questions, never a topical one.
NOT_CITED_FOR_TOPICS = ("section:notice", "section:distribution")
TOPIC_CHARS = 120  # the most of a unit's text an ordinal follow-up retrieves with


@dataclass(frozen=True)
class Snapshot:
    """Everything one published index needs to answer, swapped in as a single reference."""

    index: LoadedIndex
    retrievers: dict[str, Retriever]
    scope: ScopeModel | None
    analyzer: QueryAnalyzer
    relevance: ClauseRelevance
    answer_types: AnswerTypeCheck
    encoders: dict[str, QueryEncoder]
    followup: FollowupResolver
    structure: StructureReader  # the primary plan's annex
    focus_embedders: frozenset[str] = frozenset({"use"})  # settings.focus_embedders
    documents: dict[str, DocumentScope] = field(default_factory=dict)  # by number, the primary plan's first
    not_cited: frozenset[int] | None = None  # positions of every document's notice and distribution list


def document_scope(snapshot: Snapshot, number: str | None) -> DocumentScope | None:
    """The scope lookups and structure facts read in: the filter's document, else the primary plan's."""
    if not snapshot.documents:
        return None
    return snapshot.documents[number] if number is not None else next(iter(snapshot.documents.values()))


@dataclass(frozen=True)
class RunOptions:
    top_k: int = 10
    retrievers: Sequence[str] | None = None
    use_lookup: bool = True
    rerank: bool = True
    document: str | None = None  # restrict the candidates to this document's units (its number)


def _unit_text(index: LoadedIndex, position: int, lang: str) -> str:
    node = index.nodes[position]
    return node.metadata.get("text_en") or node.text if lang == "en" else node.text


def _unit_topic(snapshot: Snapshot, unit_id: str, question: str) -> str:
    """A unit's first sentence in the question's language: what an ordinal follow-up is about."""
    position = snapshot.index.unit_index.get(unit_id)
    if position is None:
        return question
    text = _unit_text(snapshot.index, position, "en" if detect_language(question) == "en" else "zh")
    first = sentences(text)
    return (first[0] if first else text)[:TOPIC_CHARS]


def _reranked(snapshot: Snapshot, analysis: QueryAnalysis, fused: list[tuple[int, float]],
              options: RunOptions) -> RerankResult:
    index = snapshot.index
    blocked = (snapshot.not_cited if snapshot.not_cited is not None
               else {index.unit_index[u] for u in NOT_CITED_FOR_TOPICS if u in index.unit_index})
    terms = snapshot.relevance.question_terms(analysis.text)
    result = rerank(snapshot.relevance, terms, fused, lambda p: _unit_text(index, p, analysis.lang),
                    lambda p: p not in blocked, analysis.wants_list, reorder=options.rerank)
    # units that may not be cited keep their rank (a metadata question still finds the notice)
    if options.rerank and blocked:
        head = fused[: len(result.order)]
        slots = [i for i, (p, _) in enumerate(head) if p not in blocked]
        movable = [ps for ps in result.order if ps[0] not in blocked]
        order = list(head)
        for slot, item in zip(slots, movable, strict=False):
            order[slot] = item
        result = replace(result, order=order)
    return result


def _hit(index: LoadedIndex, position: int, score: float, ranks: dict[str, int], **extra) -> Hit:
    node = index.nodes[position]
    meta = node.metadata
    return Hit(unit_id=node.node_id, task=meta.get("task"), section=meta["section"], text=node.text,
               text_en=meta.get("text_en"), score=float(score), retrievers=dict(ranks), kind=meta["kind"],
               category_no=meta.get("category_no"), section_id=meta.get("section_id"),
               linked_tasks=list(meta.get("tasks") or []), document=meta.get("document"), **extra)


def _hits(snapshot: Snapshot, pinned: list[str], fused: list[tuple[int, float]], ranks: dict,
          reranked: RerankResult, top_k: int) -> list[Hit]:
    """The ranking as hits; ``pinned`` units (named by number, or by position in a follow-up) first."""
    index = snapshot.index
    fused_rank = {p: r for r, (p, _) in enumerate(fused, start=1)}
    support = set(reranked.support)
    hits = [_hit(index, p, s, ranks.get(p, {}), fused_rank=fused_rank.get(p), alignment=reranked.alignment.get(p),
                 support=p in support and not pinned)
            for p, s in reranked.order[: top_k + len(pinned)]]
    if pinned:
        wanted = [u for u in pinned if u in index.unit_index]
        top = max((h.score for h in hits), default=1.0)
        first = [_hit(index, index.unit_index[uid], top + len(wanted) - i, {}, lookup=True, support=True)
                 for i, uid in enumerate(wanted)]
        hits = first + [h for h in hits if h.unit_id not in wanted]
    return hits[:top_k]


def _retriever_texts(snapshot: Snapshot, analysis: QueryAnalysis, names: Sequence[str]) -> dict[str, list[str]]:
    """What each retriever scores: the question and its asking clause, except that the dense
    embedders not in ``focus_embedders`` (e5: its cost grows with every text) score the question alone."""
    with_focus = analysis.retrieval_texts
    without = [t for t in with_focus if t != analysis.focus]
    return {n: with_focus if n not in snapshot.retrievers or encoder_of(snapshot.retrievers[n]) is None
            or n.removesuffix(KNOWLEDGE_SUFFIX) in snapshot.focus_embedders else without for n in names}


CONTEXT_CHANNEL = "context"  # the previous turn's citations, as one more ranked list in fusion


def _context_scores(index: LoadedIndex, resolution: Resolution) -> np.ndarray | None:
    units = [u for u in resolution.context_units if u in index.unit_index]
    if not units:
        return None
    scores = np.zeros(len(index.nodes), dtype=np.float32)
    for rank, unit in enumerate(units):
        scores[index.unit_index[unit]] = 1.0 - rank / (len(units) + 1)
    return scores


def run(snapshot: Snapshot, settings: Settings, pool: ThreadPoolExecutor | None, query: str,
        options: RunOptions, context: Sequence[PriorTurn] = ()) -> SearchResult:
    """Ranked tasks and passages for ``query``, best first, with the answerability decision.

    In a conversation, a short question without follow-up cues is read alone and, unless that
    reading is answered fully, also as a continuation of the last turn: the better answer is kept.
    """
    started = time.perf_counter()
    resolution = snapshot.followup.resolve(query, context) if context else Resolution("none", query)
    if context and resolution.kind != "ordinal" and not resolution.switched:  # "金砖那个": a unit shown lately
        resolution = content_reference(snapshot, query, context, lambda unit, q: _unit_topic(snapshot, unit, q)) \
            or resolution
        if resolution.kind == "attachment":  # "它说的一箱到底": the shown unit the turn's own words name
            resolution = pronoun_reference(snapshot, query, context, resolution,
                                           lambda unit, q: _unit_topic(snapshot, unit, q)) or resolution
        resolution = narrowed_units(snapshot, query, resolution) or resolution  # "其中跟…有关的": those that are
    new_object = names_new_object(snapshot, resolution, query)
    if new_object:  # "and app stores, any cap left?": about another unit than those just cited, read alone
        resolution = Resolution("none", query)
    if resolution.kind == "ordinal" and resolution.pinned_units:
        # the turn is about the unit it points at: retrieve (and remember the turn) with its text
        resolution = replace(resolution, query=_unit_topic(snapshot, resolution.pinned_units[0], query))
    result = _run_resolved(snapshot, settings, pool, query, resolution, options, started)
    if (context and resolution.kind == "none" and not resolution.switched and not new_object
            and result.decision.coverage != "full" and result.hits):
        continuation = snapshot.followup.continuation(query, context)
        if continuation is not None:
            other = _run_resolved(snapshot, settings, pool, query, continuation, options, time.perf_counter())
            # a question that says "it" leans on the conversation: at equal coverage its continuation wins
            if answers_better(other.decision, result.decision) or (
                    other.decision.coverage == result.decision.coverage and snapshot.followup.refers_back(query)):
                result = other
    if context:  # "And how does the IMO count bio-blends?": a name the plan never mentions
        result = replace(result, decision=names_the_unknown(snapshot, query, result.decision))
    result.timings_ms["total"] = (time.perf_counter() - started) * 1000
    return result


def _run_resolved(snapshot: Snapshot, settings: Settings, pool: ThreadPoolExecutor | None, query: str,
                  resolution: Resolution, options: RunOptions, started: float) -> SearchResult:
    # an ordinal follow-up ("第二条详细说说") names a position in the last answer, not task 2
    use_lookup = options.use_lookup and resolution.kind != "ordinal"
    scope = document_scope(snapshot, options.document)
    # the details only later stages read are added in the USE thread, while e5 encodes
    analysis = snapshot.analyzer.analyse(resolution.query, use_lookup, resolution.also,
                                         scope.max_task if scope is not None else None, details=False)
    timings: dict[str, float] = {"analysis": (time.perf_counter() - started) * 1000}
    resolved = resolution.remembered or (resolution.query if resolution.query != query else None)
    if analysis.pinyin:  # what was searched is the pinyin read as Chinese: show it, store it for follow-ups
        resolved = analysis.text
    names = list(options.retrievers) if options.retrievers is not None else list(snapshot.retrievers)
    if not analysis.text:
        return SearchResult(query, snapshot.analyzer.with_details(analysis),
                            Decision("none", 0.0, reason="empty question"), [], timings, document=options.document)
    pinned = [scope.document.task_unit(n) if scope is not None else f"task:{n}" for n in analysis.lookup.valid]
    pinned += list(resolution.pinned_units)
    extra: dict[str, Callable[[], list[str]]] = {}  # texts an embedder also encodes, made in its thread
    sparse = snapshot.index.sparse
    if snapshot.scope is not None and snapshot.scope.examples is not None and sparse is not None:
        asking = analysis.scope_text
        extra[FORM_EMBEDDER] = lambda: [sparse.question_form(asking) or "?"]
    # a document filter masks the other documents' units in every channel, before fusion
    members = scope.members if scope is not None and options.document is not None else None
    side = QuerySide(snapshot, analysis, pool, answerability=not pinned and not analysis.lookup)
    candidates = score_candidates(snapshot.retrievers, _retriever_texts(snapshot, analysis, names), pool, extra,
                                  meanwhile=side.meanwhile, encoded=side.encoded,
                                  within=candidate_filter(scope, members, names))
    analysis = side.analysis()
    timings.update(candidates.timings_ms)
    stage = time.perf_counter()
    scores = restrict(candidates.scores, members) if members is not None else candidates.scores
    channels = dict(scores)
    weights = {name: settings.fusion_weights.get(name, 1.0) for name in channels}
    context_scores = _context_scores(snapshot.index, resolution)
    if context_scores is not None:
        channels[CONTEXT_CHANNEL] = context_scores if members is None else restrict({"": context_scores}, members)[""]
        share = resolution.context_weight if resolution.context_weight is not None else settings.followup_context_weight
        weights[CONTEXT_CHANNEL] = share * len(candidates.scores)
    fused, ranks = fuse(channels, weights, method=settings.fusion, k=settings.rrf_k,
                        depth=settings.candidates_per_retriever)
    timings["fusion"] = (time.perf_counter() - stage) * 1000
    stage = time.perf_counter()
    reranked = _reranked(snapshot, analysis, fused, options)
    timings["rerank"] = (time.perf_counter() - stage) * 1000
    stage = time.perf_counter()
    structure = None
    if not pinned and resolution.kind not in ("ordinal", "reference"):  # those read a unit's own text
        reader = scope.structure if scope is not None else snapshot.structure
        own = [snapshot.index.nodes[p].metadata for p, _ in reranked.order[:20]
               if scope is None or scope.members[p]]  # the votes of that document's own tasks
        structure = reader.read(analysis.text, analysis.lang, analysis.wants_list,
                                [m["task"] for m in own if m.get("task")][:5],
                                [m.get("section_id") or "" for m in own[:3]])
        pinned = list(structure.units) if structure is not None else []
    # the answerability evidence reads the reranked head; only the listed ranking shows the neighbours
    listed = replace(reranked, order=neighbours_after_support(reranked.order, reranked.support, snapshot.index.nodes))
    hits = _hits(snapshot, pinned, fused, ranks, listed, max(options.top_k, len(pinned)))
    if structure is not None:
        source = ("the document's metadata" if structure.kind == "metadata"
                  else f"the annex's structure ({structure.kind})")
        decision = Decision("full", 1.0, reason=f"stated by {source}")
    elif pinned and resolution.kind == "narrowing":
        decision = Decision("full", 1.0, reason="the units of the last answer that it narrows to")
    elif pinned:
        decision = lookup_decision(True)
    elif analysis.lookup:
        decision = lookup_decision(False)
    else:
        read = evidence_scores(scope, candidates.scores, scores) if members is not None else scores
        features = evidence(snapshot, analysis, read, fused, reranked.order, side.neighbours())
        cited = [t for h in hits if h.support for t in (h.text, h.text_en or "")]
        unmet = snapshot.answer_types.unmet(analysis.text, cited, set(analysis.asked)) if cited else set()
        decision = followup_decision(snapshot, resolution, decide(snapshot.scope, features, unmet, bool(fused)),
                                      [h for h in hits if h.support])
        if decision.missing:
            check = snapshot.answer_types
            decision = replace(decision, missing_labels={lang: tuple(check.label(m, lang) for m in decision.missing)
                                                         for lang in ("zh", "en")})
    side.close()
    if not decision.in_scope:  # nothing is cited for "none": the nearest units are only related
        for hit in hits:
            hit.support = False
    terms = None
    for hit in hits:
        if hit.support:
            terms = terms if terms is not None else snapshot.relevance.question_terms(analysis.text)
            hit.quote = {lang: _quote(snapshot, terms, text) for lang, text in (("zh", hit.text),
                                                                               ("en", hit.text_en)) if text}
    timings["answerability"] = (time.perf_counter() - stage) * 1000
    timings["total"] = (time.perf_counter() - started) * 1000
    return SearchResult(query, analysis, decision, hits, timings, resolved_query=resolved,
                        followup=resolution.kind, structure=structure, document=options.document)


def _quote(snapshot: Snapshot, terms: QuestionTerms, text: str) -> int:
    """The sentence of a support unit that best answers the question (what the answer leads with)."""
    if len(sentences(text)) < 2:
        return 0
    return snapshot.relevance.best_sentence(terms, text)
