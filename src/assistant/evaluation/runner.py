"""Run the benchmark against a loaded ``SearchEngine`` and the ``Assistant`` over it.

Measuring only: nothing here changes retrieval, answers or the question sets.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from assistant.evaluation import ablation
from assistant.evaluation.ablation import DEFAULT, configurations, search_all, to_run
from assistant.evaluation.answers import answer_all, coverage_results, summarise
from assistant.evaluation.dataset import (
    Conversation,
    DatasetError,
    EvalQuestion,
    Qrels,
    build_qrels,
    load_conversations,
    load_questions,
    sample,
    split_files,
)
from assistant.evaluation.dialogues import run_conversations
from assistant.evaluation.floors import gated_values
from assistant.evaluation.metrics import MAIN_METRIC, RETRIEVAL_METRICS, Run, per_query_scores, retrieval_metrics
from assistant.evaluation.provenance import dataset_info, percentiles, system_info
from assistant.evaluation.results import (
    AnswerRecord,
    AnswerResults,
    ConversationResults,
    EvalResults,
    Latency,
    PerQuery,
    RetrievalResults,
)

if TYPE_CHECKING:
    from assistant.config import Settings
    from assistant.ingest.models import Corpus
    from assistant.retrieval.engine import SearchEngine, SearchResult

RELEVANCE = "nDCG@10 graded (linear gain); Recall/MRR/MAP count grade >= 1 as relevant"


@dataclass
class EvalOptions:
    """What to run. ``retrievers`` None means every retriever the index has."""

    split: str = "blind"
    retrievers: list[str] | None = None
    ablation: bool = True
    answers: bool = True  # answers to the single questions and the conversations
    limit: int | None = None  # N questions round-robin over types, and ceil(N/4) conversations
    depth: int = 20  # results kept per query (metrics use the top 10)
    progress: bool = True

    def command(self) -> str:
        """The CLI command that reproduces this run."""
        parts = ["policy-assistant", "eval", "--split", self.split]
        if self.retrievers:
            parts += ["--retrievers", ",".join(self.retrievers)]
        if not self.ablation:
            parts.append("--no-ablation")
        if not self.answers:
            parts.append("--no-answers")
        if self.limit is not None:
            parts += ["--limit", str(self.limit)]
        return " ".join(parts)


@dataclass
class EvalRun:
    """Everything one evaluation produced: ``results`` is what ``results.json`` holds."""

    results: EvalResults
    questions: list[EvalQuestion]
    qrels: Qrels
    runs: dict[str, Run]  # configuration -> {query id: {doc id: 1/rank}}
    searches: dict[str, SearchResult]  # the default configuration's results, by question id
    corpus: Corpus | None = None
    conversations: list[Conversation] = field(default_factory=list)


@dataclass
class _Data:
    files: dict
    every: dict[str, list[EvalQuestion]]
    questions: list[EvalQuestion]
    conversations: list[Conversation]
    conversation_rows: int = 0  # in the file (``conversations`` may be a --limit sample)


def load_data(settings: Settings, corpus: Corpus, split: str, limit: int | None) -> _Data:
    """The split's questions (sampled with ``limit``) and conversations."""
    question_files, conversation_files = split_files(settings.eval_path, split)
    every = {part: load_questions(path, corpus, part) for part, path in question_files.items()}
    questions = sample([q for part in every.values() for q in part], limit)
    conversations: list[Conversation] = []
    files = dict(question_files)
    for part, path in conversation_files.items():
        conversations += load_conversations(path, corpus)
        files[f"conversations_{part}"] = path
    if not questions:
        raise DatasetError(f"no questions in split {split!r}")
    chosen = conversations[:math.ceil(limit / 4)] if limit is not None else conversations
    return _Data(files, every, questions, chosen, len(conversations))


@contextmanager
def _progress_bar(enabled: bool, total: int) -> Iterator[Callable[[str], None]]:
    """A rich progress bar on stderr; yields ``advance(description)``."""
    if not enabled:
        yield lambda description: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=Console(stderr=True)) as progress:
        task = progress.add_task("eval", total=total)
        yield lambda description: progress.update(task, advance=1, description=description)


def _retriever_names(engine: SearchEngine, options: EvalOptions) -> list[str]:
    names = list(options.retrievers or engine.retriever_names)
    unknown = [n for n in names if n not in engine.retriever_names]
    if unknown:
        raise ValueError(f"unknown retrievers {unknown}; available: {engine.retriever_names}")
    return names


def _notes(options: EvalOptions, data: _Data) -> list[str]:
    notes = []
    if options.split in ("dev", "all"):
        notes.append("The dev set is in-sample: the scope model is calibrated on it and rules were written after "
                     "reading it. Only the blind split measures generalisation.")
    if not options.answers:
        notes.append("Answers and conversations not run (--no-answers): coverage is the hybrid search's decision.")
    if options.limit is not None:
        notes.append(f"Restricted to {len(data.questions)} questions and {len(data.conversations)} conversations "
                     f"(--limit {options.limit}): not comparable with full-split numbers.")
    return notes


def _per_query(questions: Sequence[EvalQuestion], searches: dict[str, SearchResult], qrels: Qrels,
               run: Run, answers: dict[str, AnswerRecord]) -> dict[str, PerQuery]:
    scores = per_query_scores(qrels, run)
    return {q.id: PerQuery(split=q.split, type=q.type, lang=q.lang, coverage=q.coverage,
                           search_coverage=searches[q.id].coverage, query=q.question,
                           top10=[h.unit_id for h in searches[q.id].hits[:10]], metrics=scores.get(q.id),
                           answer=answers.get(q.id))
            for q in questions}


def run_eval(engine: SearchEngine, settings: Settings, options: EvalOptions) -> EvalRun:
    """Retrieval (every configuration), answers, coverage and conversations on one split."""
    corpus = engine.corpus
    data = load_data(settings, corpus, options.split, options.limit)
    questions = data.questions
    names = _retriever_names(engine, options)
    configs = configurations(names, options.ablation, settings.rerank)
    qrels = build_qrels(questions)
    turns = sum(len(c.turns) for c in data.conversations) if options.answers else 0
    total = len(questions) * (len(configs) + (1 if options.answers else 0)) + turns

    engine.search("预热 warm-up", top_k=1)  # first-call initialisation is not query latency
    engine.clear_query_cache()
    runs: dict[str, Run] = {}
    searches: dict[str, SearchResult] = {}
    answers: dict[str, AnswerRecord] = {}
    answer_ms: dict[str, list[float]] = defaultdict(list)
    conversations = ConversationResults(status="skipped", note="not run (--no-answers)")
    with _progress_bar(options.progress, total) as advance:
        for config in configs:
            results = search_all(engine, questions, config, options.depth, advance)
            runs[config.name] = to_run(results)
            searches = searches or results  # the default hybrid comes first
        if options.answers:
            from assistant.answer.chat import Assistant

            assistant = Assistant(engine, settings)
            engine.clear_query_cache()  # answers are timed cold too
            answers = answer_all(assistant, questions, advance, answer_ms)
            if data.conversations:
                conversations = run_conversations(assistant, data.conversations, advance)
            else:
                conversations = ConversationResults(status="skipped", note="the split has no conversations")

    config_results = {c.name: c.result(retrieval_metrics(qrels, runs[c.name])) for c in configs}
    retrieval = RetrievalResults(
        main_metric=MAIN_METRIC, metric_keys=list(RETRIEVAL_METRICS), relevance=RELEVANCE, run_depth=options.depth,
        default=DEFAULT, configs=config_results, breakdown=ablation.breakdown(questions, qrels, runs[DEFAULT], corpus),
        significance=ablation.significance(qrels, runs, config_results))
    answer_results = (summarise(questions, answers) if options.answers
                      else AnswerResults(status="skipped", note="not run (--no-answers)"))
    predicted = ({q: r.coverage for q, r in answers.items() if r.coverage} if options.answers
                 else {q: s.coverage for q, s in searches.items()})
    stage_ms: dict[str, list[float]] = defaultdict(list)
    for result in searches.values():
        for stage, value in result.timings_ms.items():
            stage_ms[stage].append(value)
    results = EvalResults(
        created_at=datetime.now(UTC).isoformat(timespec="seconds"), command=options.command(),
        split=options.split, limit=options.limit,
        dataset=dataset_info(data.files, settings.home, data.every, questions, len(qrels), data.conversations,
                             data.conversation_rows, corpus),
        system=system_info(engine, settings, names), retrieval=retrieval,
        coverage=coverage_results(questions, predicted, "answers" if options.answers else "search"),
        answers=answer_results, conversations=conversations,
        latency_ms=Latency(configuration=DEFAULT, cold_query_cache=True,
                           retrieval={k: percentiles(v) for k, v in stage_ms.items()},
                           answers={k: percentiles(v) for k, v in answer_ms.items()}),
        gated=gated_values(retrieval, answer_results, conversations),
        per_query=_per_query(questions, searches, qrels, runs[DEFAULT], answers),
        notes=_notes(options, data))
    return EvalRun(results=results, questions=questions, qrels=qrels, runs=runs, searches=searches, corpus=corpus,
                   conversations=data.conversations)
