"""What a follow-up's resolution adds to the calibrated decision, and which of two readings answers better.

The scope model is fitted on single questions; these rules read what the follow-up stage resolved.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from assistant.index.manifest import KNOWLEDGE_SUFFIX
from assistant.retrieval.followup import Resolution
from assistant.retrieval.scope.decision import Decision
from assistant.retrieval.types import Hit

if TYPE_CHECKING:
    from assistant.retrieval.pipeline import Snapshot

FULLY_NAMED = 0.99  # share of a fragment's (IDF-weighted) words a unit must hold to name it
# A follow-up without a pronoun names a new object ("And app stores, any cap left there?") when the
# units just cited hold little of its own topic words while another unit holds most of them, and
# those words carry weight (IDF mass of about two distinctive words: "application" alone does not)
CONTEXT_HOLDS = 0.3
ELSEWHERE_HOLDS = 0.6
TOPIC_MASS = 6.0
# or: the cited units hold part of its words (under PARTLY_HOLDS) and another unit holds all of them,
# the words the cited units miss weighing at least one distinctive word
PARTLY_HOLDS = 0.7
MISSING_MASS = 2.5
# An attached follow-up without a pronoun is answered fully only when its own topic words are held by
# what it cites ("What's the exchange rate right now?" after capital-account flows is not answered by
# task 27). With a pronoun the rule was wrong twice as often as right on the dev conversations (6 / 3).
ATTACHED_HOLDS = 0.5
ATTACHED_MASS = 3.0

_COVERAGE_RANK = {"none": 0, "partial": 1, "full": 2}


def answers_better(candidate: Decision, current: Decision) -> bool:
    """A fuller coverage wins; between two partial answers, the more confident one, unless the detail
    the current one misses is missed by the candidate too (reading "Has China joined CPTPP yet?" as a
    continuation cannot supply the status the plan does not state)."""
    a, b = _COVERAGE_RANK[candidate.coverage], _COVERAGE_RANK[current.coverage]
    if a == b == 1 and current.missing and set(current.missing) <= set(candidate.missing):
        return False
    return a > b or (a == b == 1 and candidate.confidence > current.confidence)


def _names_every_word(snapshot: Snapshot, fragment: str, support: list[Hit]) -> bool:
    """Whether one support unit holds every content word of ``fragment`` in its text or its knowledge."""
    for hit in support:
        position = snapshot.index.unit_index[hit.unit_id]
        found = [r.coverage(fragment, position)[1] for name in ("bm25", "bm25" + KNOWLEDGE_SUFFIX)
                 if (r := snapshot.retrievers.get(name)) is not None and hasattr(r, "coverage")]
        if not found or max(found) >= FULLY_NAMED:
            return True
    return False


def _held(snapshot: Snapshot, topic: str, positions: list[int]) -> tuple[float, float, float]:
    """The best IDF-weighted share of ``topic``'s words one of ``positions`` holds in its text or its
    knowledge, the IDF mass it holds and that of all its known words."""
    best = (0.0, 0.0, 0.0)
    if not positions:
        return best
    for name in ("bm25", "bm25" + KNOWLEDGE_SUFFIX):
        retriever = snapshot.retrievers.get(name)
        if not hasattr(retriever, "held"):
            continue
        found, weight = retriever.held(topic)
        if weight:
            mass = float(found[positions].max())
            best = max(best, (mass / weight, mass, weight))
    return best


def names_new_object(snapshot: Snapshot, resolution: Resolution, question: str) -> bool:
    """Whether an attached or substituted follow-up is about a new object rather than the units just
    cited ("那锂电池运输呢？" after a question about connected cars: the old frame does not fit it)."""
    just_cited = resolution.context_units or resolution.last_cited
    if (resolution.kind not in ("attachment", "substitution") or not just_cited
            or snapshot.followup.refers_back(question)):
        return False
    topic = snapshot.followup.own_topic(question)
    if not topic:
        return False
    index = snapshot.index
    context = {index.unit_index[u] for u in just_cited if u in index.unit_index}
    share, held_here, _ = _held(snapshot, topic, sorted(context))
    if share >= PARTLY_HOLDS:
        return False
    elsewhere, mass, _ = _held(snapshot, topic, [p for p in range(len(index.nodes)) if p not in context])
    if share < CONTEXT_HOLDS and elsewhere >= ELSEWHERE_HOLDS and mass >= TOPIC_MASS:
        return True
    # "And software services?" after Internet access services: the cited units share a word with it,
    # one other unit holds all of it, the cited ones lack its distinctive word ("And the application
    # fee?" shares nothing with them: a light word alone is no new object)
    return held_here > 0 and elsewhere >= FULLY_NAMED and mass - held_here >= MISSING_MASS


def unknown_names(snapshot: Snapshot, question: str) -> list[str]:
    """The acronyms ``question`` names that no unit's text or knowledge holds ("IMO", "EASA", "FDA")."""
    lexical = [r for name in ("bm25", "bm25" + KNOWLEDGE_SUFFIX)
               if hasattr(r := snapshot.retrievers.get(name), "knows")]
    if not lexical:
        return []
    names = dict.fromkeys(m.group() for m in snapshot.followup.p["name_acronym"].finditer(question))
    return [n for n in names if not any(r.knows(n) for r in lexical)]


def names_the_unknown(snapshot: Snapshot, question: str, decision: Decision) -> Decision:
    """A follow-up answered fully that names a body or regime the plan never mentions ("And how does
    the IMO count bio-blends?", "Would CAAC accept our EASA approval?") asks about something beside the
    topic: the plan addresses the topic, not that. Read on follow-ups only: resolved with the
    conversation's topic, their own unknown words weigh little in the scope model's evidence (on the dev
    and fresh conversations every follow-up naming such an acronym was out of scope or partial; single
    questions naming one were not: "ERP software", "GPU compute")."""
    if decision.coverage != "full":
        return decision
    unknown = unknown_names(snapshot, question)
    if not unknown:
        return decision
    return replace(decision, coverage="partial", reason=f"names {', '.join(unknown)}, which the plan never mentions")


def followup_decision(snapshot: Snapshot, resolution: Resolution, decision: Decision,
                       support: list[Hit]) -> Decision:
    """What a follow-up's resolution adds to the calibrated decision (fitted on single questions)."""
    units = {h.unit_id for h in support}
    if (resolution.kind == "substitution" and decision.coverage == "full" and resolution.also and support
            and not _names_every_word(snapshot, resolution.also[0], support)):
        # "那台湾律师呢" after Hong Kong lawyers: the plan answers only if the cited unit names the new object
        return replace(decision, coverage="partial", reason="the cited units do not name its new object")
    if (resolution.kind in ("attachment", "reference") and decision.coverage == "full" and resolution.also and support
            and not snapshot.followup.refers_back(resolution.also[0])):
        # a turn that says "it" asks about what was cited, its other words are what it asks of it
        # ("Who is it supposed to serve?"); the answer-type check still catches a missing detail
        topic = snapshot.followup.own_topic(resolution.also[0])
        share, _, weight = _held(snapshot, topic, [snapshot.index.unit_index[h.unit_id] for h in support])
        if weight >= ATTACHED_MASS and share < ATTACHED_HOLDS:
            return replace(decision, coverage="partial", reason="the cited units do not name what it asks about")
    if resolution.kind == "narrowing" and units and units <= set(resolution.context_units):
        # "which of those are about leasing?" picks among units the plan was just listed for
        return replace(decision, coverage="full", reason="narrows the previous answer's units")
    if (resolution.kind in ("attachment", "reference") and decision.coverage == "none"
            and units & set(resolution.context_units)):
        # "它大概什么时候能落地" asks more about units just cited: the plan addresses the topic
        return replace(decision, coverage="partial", reason="asks more about the units just cited")
    return decision
