"""The blind conversations: each one's turns asked in order in one conversation, follow-ups scored.

Per turn (``TurnResult``):

- **top3**: for an answerable turn with grade-2 task gold, whether a grade-2 gold task is among the
  first three cited tasks; for an *ordinal* turn ("第二条详细说说"), whether the answer's first
  citation is the unit the previous answer listed at position ``refers_to`` (as the system actually
  listed it: its citations, then the units it showed as related; 0 when it listed fewer units);
- **answerable_none**: an answerable turn answered "none";
- **oos_full**: an out-of-scope turn answered "full".

Scores are reported over the follow-ups (every turn after the first), per kind and per language.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from assistant.evaluation.answers import record
from assistant.evaluation.dataset import TURN_KINDS, Conversation, ConversationTurn
from assistant.evaluation.results import AnswerRecord, ConversationResults, KindScores, Rate, TurnResult

if TYPE_CHECKING:
    from assistant.answer.chat import Assistant


def score_turn(turn: ConversationTurn, answer: AnswerRecord, previous: AnswerRecord | None) -> tuple[str | None,
                                                                                                      bool | None]:
    """``(expected unit, top3)`` of one turn (see the module docstring)."""
    if answer.error is not None:
        return None, False if (turn.kind == "ordinal" or turn.gold_tasks(2)) else None
    if turn.kind == "ordinal":
        shown = ([*previous.cited_units, *(u for u in previous.related_units if u not in previous.cited_units)]
                 if previous is not None else [])
        expected = shown[turn.refers_to - 1] if turn.refers_to and len(shown) >= turn.refers_to else None
        return expected, expected is not None and answer.cited_units[:1] == [expected]
    if turn.coverage != "none" and turn.gold_tasks(2):
        return None, bool(answer.top3_task)
    return None, None


def run_conversation(assistant: Assistant, conversation: Conversation,
                     advance: Callable[[str], None]) -> list[TurnResult]:
    """Ask every turn in order in one fresh conversation; score each."""
    conversation_id = assistant.new_conversation()
    results: list[TurnResult] = []
    previous: AnswerRecord | None = None
    for number, turn in enumerate(conversation.turns, start=1):
        try:
            answer = assistant.ask(turn.question, conversation_id)
        except Exception as exc:
            current = AnswerRecord(error=repr(exc))
        else:
            conversation_id = answer.conversation_id
            current = record(answer, turn.relevance, conversation.lang, [])
        expected, top3 = score_turn(turn, current, previous)
        results.append(TurnResult(conversation=conversation.id, turn=number, kind=turn.kind, lang=conversation.lang,
                                  coverage=turn.coverage, answer=current, expected_unit=expected, top3=top3))
        previous = current
        advance("conversations")
    return results


def kind_scores(turns: Sequence[TurnResult]) -> KindScores:
    """Aggregate scores over ``turns``."""
    done = [t for t in turns if t.answer.error is None]
    return KindScores(
        turns=len(turns),
        top3=Rate.of(bool(t.top3) for t in turns if t.top3 is not None),
        answerable_none=Rate.of(t.answer.coverage == "none" for t in done if t.coverage != "none"),
        oos_full=Rate.of(t.answer.coverage == "full" for t in done if t.coverage == "none"),
        unresolvable_ordinals=sum(1 for t in turns if t.kind == "ordinal" and t.expected_unit is None))


def run_conversations(assistant: Assistant, conversations: Sequence[Conversation],
                      advance: Callable[[str], None]) -> ConversationResults:
    """Every conversation through the one ``assistant``, scored overall, per kind and per language."""
    turns = [t for conversation in conversations for t in run_conversation(assistant, conversation, advance)]
    followups = [t for t in turns if t.kind != "first"]
    kinds = [k for k in TURN_KINDS if any(t.kind == k for t in turns)]
    langs = list(dict.fromkeys(t.lang for t in followups))
    return ConversationResults(
        status="run", conversations=len(conversations), turns=len(turns), followups=kind_scores(followups),
        by_kind={k: kind_scores([t for t in turns if t.kind == k]) for k in kinds},
        by_lang={lang: kind_scores([t for t in followups if t.lang == lang]) for lang in langs},
        per_turn=turns)
