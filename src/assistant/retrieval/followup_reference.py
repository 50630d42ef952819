"""Which recently shown unit a content reference names ("金砖那个具体做啥", "the tax refund one").

The follow-up stage reads the form (a descriptor before "那个/那项", "the … one", "the one about …");
what the descriptor names is read from the units: among the units the last few answers showed, the
one that holds most of the descriptor's words (IDF-weighted, in its text or its task knowledge),
ties broken by BM25 over the descriptor. No unit holding enough of them leaves the turn to the
other readings (a descriptor can be a predicate: "你刚才说的那个"). The same shares pick the unit a
pronoun turn's own words name and the units a narrowing turn keeps.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

from assistant.index.manifest import KNOWLEDGE_SUFFIX
from assistant.retrieval.followup import PriorTurn, Resolution

if TYPE_CHECKING:
    from assistant.retrieval.pipeline import Snapshot

RECENT_TURNS = 3  # a content reference may point at what any of the last three answers showed
REFERENCE_HOLDS = 0.75  # share of the descriptor's IDF mass the named unit must hold
REFERENCE_MASS = 2.0  # the descriptor must carry at least one distinctive word
ANYWHERE_MASS = 4.0  # among all units (none shown holds it): a rarer word or two
_LEXICAL = ("bm25", "bm25" + KNOWLEDGE_SUFFIX)


def recent_units(turns: Sequence[PriorTurn]) -> tuple[str, ...]:
    """Every unit the last few answers showed, the latest answer first, each once."""
    units: dict[str, None] = {}
    for turn in reversed(turns[-RECENT_TURNS:]):
        units.update(dict.fromkeys(getattr(turn, "shown_units", None) or turn.cited_units))
    return tuple(units)


def unit_shares(snapshot: Snapshot, words: str) -> tuple[np.ndarray, float]:
    """Per unit position, the best share of ``words``' IDF mass it holds (text or knowledge), and the
    largest known mass of ``words`` (0 when no index knows them).

    Each view's mass is divided by the largest: a word only the knowledge index knows ("smart" of
    "smart port") still counts as missing from a unit whose text holds only "port"."""
    held = [r.held(words) for name in _LEXICAL if hasattr(r := snapshot.retrievers.get(name), "held")]
    largest = max((weight for _, weight in held), default=0.0)
    shares = np.zeros(len(snapshot.index.nodes), dtype=np.float64)
    for found, _ in held:
        if largest:
            shares = np.maximum(shares, found / largest)
    return shares, largest


def referred_unit(snapshot: Snapshot, descriptor: str, candidates: Sequence[str],
                  min_mass: float = REFERENCE_MASS, holds: float = REFERENCE_HOLDS) -> str | None:
    """The candidate unit ``descriptor`` names, or None when none holds enough of its words."""
    index = snapshot.index
    positions = [(unit, index.unit_index[unit]) for unit in candidates if unit in index.unit_index]
    if not positions:
        return None
    shares, mass = unit_shares(snapshot, descriptor)
    if mass < min_mass:
        return None
    held = [(unit, p) for unit, p in positions if shares[p] >= holds]
    if not held:
        return None
    lexical = np.zeros(len(index.nodes), dtype=np.float64)
    for name in _LEXICAL:
        retriever = snapshot.retrievers.get(name)
        if retriever is not None and hasattr(retriever, "held"):
            lexical += retriever.unit_scores([descriptor])
    return max(held, key=lambda up: (round(float(shares[up[1]]), 6), float(lexical[up[1]])))[0]


def content_reference(snapshot: Snapshot, question: str, turns: Sequence[PriorTurn],
                      topic_of: Callable[[str, str], str]) -> Resolution | None:
    """The turn read as a reference by content to a unit shown lately, or None (not one, or no unit
    named). ``topic_of(unit_id, question)`` is the text a turn about that unit retrieves with."""
    found = snapshot.followup.content_reference(question)
    if found is None:
        return None
    descriptor, rest = found
    unit = referred_unit(snapshot, descriptor, recent_units(turns))
    if unit is None:  # "back to the smart port one" when no answer showed it: the unit that it names
        unit = referred_unit(snapshot, descriptor, [node.node_id for node in snapshot.index.nodes],
                             min_mass=ANYWHERE_MASS)
    if unit is None:
        return None
    return snapshot.followup.refer(question, turns, unit, topic_of(unit, question), rest)


# A pronoun turn's own words also hold predicate words ("说", "usable"): another shown unit is what "it"
# stands for when it holds at least half of them and clearly more than the units just cited
# and its words are distinctive: heavy (IDF mass of three or four rare words) and held by few units
PRONOUN_HOLDS = 0.5
PRONOUN_MARGIN = 0.3
PRONOUN_MASS = 8.0
PRONOUN_HOLDERS = 0.03


def pronoun_reference(snapshot: Snapshot, question: str, turns: Sequence[PriorTurn], resolution: Resolution,
                      topic_of: Callable[[str, str], str]) -> Resolution | None:
    """A pronoun turn whose own words name another unit shown lately than the ones just cited
    ("它说的一箱到底是咋回事" after an answer about task 95, when task 45 was shown a turn earlier):
    the pronoun stands for that unit. None when the units just cited hold the turn's words."""
    if resolution.kind != "attachment" or not snapshot.followup.refers_back(question):
        return None
    words = snapshot.followup.own_topic(question)
    if not words:
        return None
    index = snapshot.index
    shares, mass = unit_shares(snapshot, words)
    if mass < PRONOUN_MASS or float((shares >= PRONOUN_HOLDS).mean()) > PRONOUN_HOLDERS:
        return None
    cited = [index.unit_index[u] for u in turns[-1].cited_units if u in index.unit_index]
    held_by_cited = float(shares[cited].max()) if cited else 0.0
    others = [u for u in recent_units(turns) if u not in turns[-1].cited_units]
    unit = referred_unit(snapshot, words, others, holds=max(PRONOUN_HOLDS, held_by_cited + PRONOUN_MARGIN))
    if unit is None:
        return None
    return snapshot.followup.refer(question, turns, unit, topic_of(unit, question), question)


# A narrowing names what it narrows by; the tasks the last answer showed should hold those words
NARROWING_HOLDS = 0.75


def _alternative_shares(snapshot: Snapshot, question: str) -> np.ndarray | None:
    """Per unit, the best share it holds of any one alternative the narrowing names (None when no
    alternative carries a distinctive word)."""
    best = None
    for words in snapshot.followup.narrowing_alternatives(question):
        shares, mass = unit_shares(snapshot, words)
        if mass >= REFERENCE_MASS:
            best = shares if best is None else np.maximum(best, shares)
    return best


def narrowed_units(snapshot: Snapshot, question: str, resolution: Resolution) -> Resolution | None:
    """The units a narrowing selects, pinned in the order the last answer showed them: the shown
    tasks that hold one of its alternatives ("其中跟职业资格、执业有关的"). When no shown task holds
    one but tasks of the same categories do ("其中跟船用燃料油有关的有哪些" after "交通运输这块有哪些
    措施" was answered with one task), "those" are the category the answer was drawn from: those tasks,
    most held first. None when neither holds any (the turn stays a weighted narrowing)."""
    if resolution.kind != "narrowing":
        return None
    shares = _alternative_shares(snapshot, question)
    if shares is None:
        return None
    index = snapshot.index
    shown = [index.unit_index[u] for u in resolution.context_units if u in index.unit_index]
    # tasks only: a body section quotes its tasks' words without being one of "those"
    shown_tasks = [p for p in shown if index.nodes[p].metadata.get("task")]
    if not shown_tasks:
        return None
    holders = [p for p in shown_tasks if shares[p] >= NARROWING_HOLDS]
    if not holders:
        categories = {index.nodes[p].metadata.get("category_no") for p in shown_tasks}
        holders = sorted((p for p, node in enumerate(index.nodes) if node.metadata.get("task")
                          and node.metadata.get("category_no") in categories and shares[p] >= NARROWING_HOLDS),
                         key=lambda p: -float(shares[p]))
    if not holders:
        return None
    return replace(resolution, pinned_units=tuple(index.nodes[p].node_id for p in holders))
