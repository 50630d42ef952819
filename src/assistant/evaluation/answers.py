"""Answers to the single questions: per-answer records, the coverage confusion and the answer floors."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from assistant.evaluation.dataset import COVERAGES, EvalQuestion
from assistant.evaluation.metrics import (
    citation_scores,
    coverage_counts,
    fact_coverage,
    language_matches,
    mean,
    outcome_scores,
    top3_task,
)
from assistant.evaluation.results import AnswerFloors, AnswerRecord, AnswerResults, CoverageResults, Rate

if TYPE_CHECKING:
    from assistant.answer.chat import Assistant
    from assistant.answer.types import Answer, Citation


def unit_id(citation: Citation) -> str:
    """The doc id of a citation: ``task:N`` or ``section:ID``."""
    return f"task:{citation.task}" if citation.task is not None else f"section:{citation.section_id}"


def ask(assistant: Assistant, question: EvalQuestion) -> Answer:
    """Ask one question in a fresh conversation; a dev follow-up first replays its scripted user
    turns there, so the system answers them itself and the follow-up sees its own earlier answers."""
    conversation_id = assistant.new_conversation()
    for turn in question.history:
        if turn.role == "user":
            assistant.ask(turn.content, conversation_id)
    return assistant.ask(question.question, conversation_id)


def record(answer: Answer, relevance: dict[str, int], lang: str, facts: Sequence[Sequence[str]]) -> AnswerRecord:
    """What the eval keeps of one answer, scored against the gold of its question or turn."""
    cited_units = [unit_id(c) for c in answer.citations]
    gold_any = {int(d[5:]) for d, g in relevance.items() if d.startswith("task:")}
    gold_main = {int(d[5:]) for d, g in relevance.items() if d.startswith("task:") and g == 2}
    cited_tasks = {c.task for c in answer.citations if c.task is not None}
    precision, recall = citation_scores(cited_tasks, gold_any, gold_main)
    answerable = bool(relevance)
    return AnswerRecord(
        mode=answer.mode, coverage=answer.coverage, lang=answer.lang, cited_units=cited_units,
        related_units=list(answer.related),
        top3_task=top3_task(cited_units, gold_main) if gold_main else None,
        citation_precision=precision if answerable else None, citation_recall=recall if answerable else None,
        fact_coverage=fact_coverage(answer.answer, facts), language_match=language_matches(answer.lang, lang),
        resolved_query=answer.resolved_query)


def answer_all(assistant: Assistant, questions: Sequence[EvalQuestion], advance: Callable[[str], None],
               timings: dict[str, list[float]]) -> dict[str, AnswerRecord]:
    """Every question's answer record; an exception is recorded on its question and the run goes on."""
    records: dict[str, AnswerRecord] = {}
    for question in questions:
        try:
            answer = ask(assistant, question)
        except Exception as exc:
            records[question.id] = AnswerRecord(error=repr(exc))
        else:
            records[question.id] = record(answer, question.relevance, question.lang, question.facts)
            for stage, value in answer.timings_ms.items():
                timings[stage].append(value)
        advance("answers")
    return records


def coverage_results(questions: Sequence[EvalQuestion], predicted: dict[str, str], source: str) -> CoverageResults:
    """The coverage confusion: per expected class and per type, predicted full/partial/none."""
    scored = [q for q in questions if q.id in predicted]
    by_class = coverage_counts((q.coverage, predicted[q.id]) for q in scored)
    by_class = {c: by_class[c] for c in COVERAGES if c in by_class}
    classes: dict[str, set[str]] = {}
    for question in scored:
        classes.setdefault(question.type, set()).add(question.coverage)
    correct = sum(1 for q in scored if predicted[q.id] == q.coverage)
    return CoverageResults(
        source=source, questions=len(scored), accuracy=correct / len(scored) if scored else None,
        by_class=by_class, by_type=coverage_counts((q.type, predicted[q.id]) for q in scored),
        type_class={t: "/".join(c for c in COVERAGES if c in found) for t, found in classes.items()},
        outcomes=outcome_scores(by_class))


def floors(questions: Sequence[EvalQuestion], records: dict[str, AnswerRecord]) -> AnswerFloors:
    """The four answer floors (see ``AnswerFloors``), with the top-3 floor also by language and type."""
    done = [q for q in questions if q.id in records and records[q.id].error is None]
    task_gold = [q for q in done if q.answerable and q.gold_tasks(2)]
    by_lang = {lang: Rate.of(bool(records[q.id].top3_task) for q in task_gold if q.lang == lang)
               for lang in dict.fromkeys(q.lang for q in task_gold)}
    by_type = {kind: Rate.of(bool(records[q.id].top3_task) for q in task_gold if q.type == kind)
               for kind in dict.fromkeys(q.type for q in task_gold)}
    return AnswerFloors(
        top3_task=Rate.of(bool(records[q.id].top3_task) for q in task_gold),
        answerable_none=Rate.of(records[q.id].coverage == "none" for q in done if q.answerable),
        oos_full=Rate.of(records[q.id].coverage == "full" for q in done if not q.answerable),
        near_miss_hedged=Rate.of(records[q.id].coverage in ("partial", "none") for q in done if q.near_miss),
        top3_by_lang=by_lang, top3_by_type=by_type)


def summarise(questions: Sequence[EvalQuestion], records: dict[str, AnswerRecord]) -> AnswerResults:
    """Aggregate answer metrics over the answered questions, with the floors."""
    answered = [records[q.id] for q in questions if q.id in records and records[q.id].error is None]
    answerable = [records[q.id] for q in questions if q.answerable and q.id in records and not records[q.id].error]
    coverage = [r.fact_coverage for r in answerable]
    return AnswerResults(
        status="run", answered=len(answered), errors=sum(1 for r in records.values() if r.error),
        citation_precision=mean([r.citation_precision for r in answerable]),
        citation_recall=mean([r.citation_recall for r in answerable]),
        no_citation_rate=Rate.of(not r.cited_units for r in answerable).rate,
        fact_coverage=mean(coverage),
        all_facts_rate=Rate.of(c == 1.0 for c in coverage if c is not None).rate,
        language_match=Rate.of(bool(r.language_match) for r in answered).rate,
        modes=dict(Counter(r.mode for r in answered if r.mode)),
        floors=floors(questions, records))
