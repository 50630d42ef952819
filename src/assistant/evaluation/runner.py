"""Run the benchmark against a loaded ``SearchEngine`` (and the answer layer when it exists).

Measuring only: nothing here changes retrieval, answers or the question set.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
import itertools
import os
import platform
import subprocess
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from assistant.evaluation.dataset import (
    LANGS,
    QUESTION_TYPES,
    DatasetError,
    EvalQuestion,
    Qrels,
    build_qrels,
    dataset_sha256,
    load_questions,
    overlap_rates,
    select,
)
from assistant.evaluation.metrics import (
    MAIN_METRIC,
    RETRIEVAL_METRICS,
    Run,
    citation_scores,
    fact_coverage,
    language_matches,
    mean,
    paired_test,
    per_query_scores,
    retrieval_metrics,
    scope_metrics,
)

if TYPE_CHECKING:
    from assistant.config import Settings
    from assistant.ingest.models import Corpus
    from assistant.retrieval.engine import SearchEngine, SearchResult

SCHEMA_VERSION = 1
DEFAULT = "hybrid"
NO_LOOKUP = "hybrid_no_lookup"
LIBRARIES = ("ranx", "faiss-cpu", "llama-index-core", "bm25s", "numpy", "matplotlib", "pydantic")
FALLBACK_FOLLOWUP = "fallback: last user turn + question (assistant.answer.chat.resolve_followup not available)"


@dataclass
class EvalOptions:
    """What to run. ``retrievers`` None means every retriever the index has."""

    split: str = "test"
    retrievers: list[str] | None = None
    ablation: bool = True
    answers: bool = True
    limit: int | None = None
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
class Config:
    """One retrieval configuration of the ablation."""

    name: str
    retrievers: list[str]
    lookup: bool | None  # None: the engine's setting

    def to_json(self) -> dict[str, Any]:
        return {"retrievers": self.retrievers, "lookup": self.lookup}


@dataclass
class EvalRun:
    """Everything one evaluation produced: ``results`` is what ``results.json`` holds."""

    results: dict[str, Any]
    questions: list[EvalQuestion]
    qrels: Qrels
    runs: dict[str, Run]  # configuration -> {query id: {doc id: score}} (rank-based scores)
    searches: dict[str, SearchResult]  # the default configuration's results, by question id
    queries: dict[str, str]  # the text sent to the engine (follow-ups resolved)
    answers: dict[str, dict[str, Any]] = field(default_factory=dict)
    corpus: Corpus | None = None


# --- configurations -------------------------------------------------------------------------
def configurations(names: Sequence[str], ablation: bool) -> list[Config]:
    """The default hybrid first; with ``ablation`` also no-lookup, each retriever alone and each pair."""
    names = list(names)
    configs = [Config(DEFAULT, names, None)]
    if not ablation:
        return configs
    configs.append(Config(NO_LOOKUP, names, False))
    seen = {frozenset(names)}
    for size in (1, 2):
        for combo in itertools.combinations(sorted(names), size):
            if frozenset(combo) not in seen:
                seen.add(frozenset(combo))
                configs.append(Config("+".join(combo), list(combo), None))
    return configs


# --- follow-ups -------------------------------------------------------------------------------
def followup_resolver() -> tuple[Callable[[str, list[dict[str, str]]], str], str]:
    """``assistant.answer.chat.resolve_followup`` when it exists, else last user turn + question."""
    try:
        chat = importlib.import_module("assistant.answer.chat")
        resolve = chat.resolve_followup
    except ModuleNotFoundError as exc:
        if exc.name not in ("assistant.answer.chat",):
            raise
        return _concatenate_last_user_turn, FALLBACK_FOLLOWUP
    except AttributeError:
        return _concatenate_last_user_turn, FALLBACK_FOLLOWUP

    def call(question: str, history: list[dict[str, str]]) -> str:
        resolved = resolve(question, history)
        if isinstance(resolved, str):
            return resolved
        for attribute in ("query", "resolved_query", "text"):
            value = getattr(resolved, attribute, None)
            if isinstance(value, str):
                return value
        raise TypeError(f"resolve_followup returned {type(resolved).__name__}, expected str")

    return call, "assistant.answer.chat.resolve_followup"


def _concatenate_last_user_turn(question: str, history: list[dict[str, str]]) -> str:
    last_user = next((t["content"] for t in reversed(history) if t["role"] == "user"), "")
    return f"{last_user} {question}".strip()


def resolve_queries(questions: Sequence[EvalQuestion]) -> tuple[dict[str, str], str, list[float]]:
    """The query sent to the engine per question; the resolution method; resolution times (ms)."""
    resolve, method = followup_resolver()
    resolve("那医院呢？", [{"role": "user", "content": "外资能办养老院吗"},
                       {"role": "assistant", "content": "可以 [第17项]。"}])  # warm-up, not timed
    queries: dict[str, str] = {}
    timings: list[float] = []
    for question in questions:
        if question.history:
            started = time.perf_counter()
            queries[question.id] = resolve(question.question, [t.model_dump() for t in question.history])
            timings.append((time.perf_counter() - started) * 1000)
        else:
            queries[question.id] = question.question
    return queries, method, timings


# --- progress ---------------------------------------------------------------------------------
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


# --- retrieval --------------------------------------------------------------------------------
def _clear_query_caches(engine: SearchEngine) -> bool:
    """Empty the query-embedding caches so latency is measured cold; True when one was found.

    Uses ``engine.clear_query_cache()`` when the engine offers it, else clears every
    ``functools`` cache found on the retrievers and on the project objects they hold.
    """
    clear = getattr(engine, "clear_query_cache", None)
    if callable(clear):
        clear()
        return True
    cleared, seen = False, set()
    pending: list[tuple[Any, int]] = [(r, 0) for r in engine.retrievers.values()]
    while pending:
        owner, depth = pending.pop()
        if id(owner) in seen or not hasattr(owner, "__dict__"):
            continue
        seen.add(id(owner))
        for value in vars(owner).values():
            if callable(getattr(value, "cache_clear", None)):
                value.cache_clear()
                cleared = True
            elif depth < 2 and type(value).__module__.startswith("assistant."):
                pending.append((value, depth + 1))
    return cleared


def to_run(results: dict[str, SearchResult]) -> Run:
    """Search results as a ranx/TREC run. Scores are 1/rank, so ties in engine scores
    (common with RRF) keep the engine's order in every tool that re-sorts by score."""
    return {qid: {hit.unit_id: 1.0 / rank for rank, hit in enumerate(result.hits, start=1)}
            for qid, result in results.items()}


def percentiles(values: Sequence[float]) -> dict[str, float]:
    """p50/p95/mean of a list of timings (ms)."""
    array = np.asarray(values, dtype=float)
    return {"p50": float(np.percentile(array, 50)), "p95": float(np.percentile(array, 95)),
            "mean": float(array.mean()), "n": len(array)}


def breakdown(questions: Sequence[EvalQuestion], qrels: Qrels, run: Run, corpus) -> dict[str, dict[str, Any]]:
    """Retrieval metrics by language, type and category (of the grade-2 gold tasks)."""
    judged = [q for q in questions if q.id in qrels]
    groups: dict[str, dict[str, list[str]]] = {"lang": defaultdict(list), "type": defaultdict(list),
                                                "category": defaultdict(list)}
    for question in judged:
        groups["lang"][question.lang].append(question.id)
        groups["type"][question.type].append(question.id)
        categories = question.categories(corpus)
        for number in categories or ["sections"]:
            groups["category"][str(number)].append(question.id)
    order = {"lang": list(LANGS), "type": list(QUESTION_TYPES),
             "category": [str(c.number) for c in corpus.categories] + ["sections"]}
    result: dict[str, dict[str, Any]] = {}
    for dimension, members in groups.items():
        result[dimension] = {}
        for key in order[dimension]:
            ids = members.get(key)
            if not ids:
                continue
            entry: dict[str, Any] = {"n": len(ids),
                                     "metrics": retrieval_metrics({i: qrels[i] for i in ids}, run)}
            if dimension == "category":
                category = corpus.category(int(key)) if key != "sections" else None
                entry["label"] = category.title if category else "body sections only (no grade-2 task)"
                entry["label_en"] = category.title_en if category else "body sections only"
            result[dimension][key] = entry
    return result


def governing_recall(questions: Sequence[EvalQuestion], run: Run) -> dict[str, dict[str, Any]]:
    """Recall of the *governing* tasks (grade 2 only) for questions about tasks, by language.

    The quality floor is stated this way: does the task that answers the question come back
    in the top 5? (The main table also counts related, grade-1 units as relevant.)
    """
    groups: dict[str, dict[str, dict[str, int]]] = {"zh": {}, "en": {}}
    for question in questions:
        governing = {doc: 2 for doc, grade in question.relevance.items() if grade == 2 and doc.startswith("task:")}
        if not governing or question.type in ("body", "metadata"):
            continue
        groups["en" if question.lang == "en" else "zh"][question.id] = governing
    return {lang: {"n": len(qrels), "metrics": retrieval_metrics(qrels, run, ("Recall@1", "Recall@5", "Recall@10"))}
            for lang, qrels in groups.items() if qrels}


def _near_miss_recall(questions: Sequence[EvalQuestion], predicted: dict[str, bool]) -> dict[str, Any]:
    near = [q for q in questions if "near-miss" in q.tags and not q.in_scope]
    flagged = sum(1 for q in near if not predicted[q.id])
    return {"n": len(near), "flagged": flagged, "recall": flagged / len(near) if near else None}


# --- answers ----------------------------------------------------------------------------------
def load_assistant(engine: SearchEngine, settings: Settings) -> tuple[Any | None, str | None]:
    """``assistant.answer.chat.Assistant(engine, settings)``, or None and the reason it is unavailable."""
    try:
        chat = importlib.import_module("assistant.answer.chat")
    except ModuleNotFoundError as exc:
        if exc.name == "assistant.answer.chat":
            return None, "answer metrics skipped: assistant.answer.chat does not exist yet"
        return None, f"answer metrics skipped: importing assistant.answer.chat failed: {exc!r}"
    except Exception as exc:  # a broken module must not hide the retrieval numbers
        return None, f"answer metrics skipped: importing assistant.answer.chat failed: {exc!r}"
    factory = getattr(chat, "Assistant", None)
    if factory is None:
        return None, "answer metrics skipped: assistant.answer.chat has no Assistant yet"
    try:
        return factory(engine, settings), None
    except Exception as exc:
        return None, f"answer metrics skipped: Assistant(engine, settings) failed: {exc!r}"


def ask(assistant: Any, question: EvalQuestion) -> Any:
    """Ask one question. A follow-up is asked inside a conversation holding its scripted history:
    passed as ``history=`` when ``ask`` takes it, else seeded through the public conversation
    store (``new_conversation`` + ``conversations.append``), else replayed by asking its user turns."""
    if not question.history:
        return assistant.ask(question.question)
    history = [t.model_dump() for t in question.history]
    if "history" in inspect.signature(assistant.ask).parameters:
        return assistant.ask(question.question, history=history)
    store = getattr(assistant, "conversations", None)
    if hasattr(assistant, "new_conversation") and hasattr(store, "append"):
        conversation_id = assistant.new_conversation()
        for user, reply in zip(history[::2], history[1::2], strict=False):
            store.append(conversation_id, user["content"], reply["content"])
        return assistant.ask(question.question, conversation_id)
    conversation_id = None
    for turn in history:
        if turn["role"] == "user":
            conversation_id = assistant.ask(turn["content"], conversation_id).conversation_id
    return assistant.ask(question.question, conversation_id)


def score_answer(question: EvalQuestion, answer: Any) -> dict[str, Any]:
    """Per-answer record: citations, facts, language and scope."""
    cited = {c.task for c in answer.citations if c.task is not None}
    precision, recall = citation_scores(cited, question.gold_tasks(1), question.gold_tasks(2))
    return {
        "mode": answer.mode, "in_scope": bool(answer.in_scope), "lang": answer.lang,
        "cited_tasks": sorted(cited),
        "cited_sections": sorted({c.section_id for c in answer.citations if c.task is None and c.section_id}),
        "citation_precision": precision if question.in_scope else None,
        "citation_recall": recall if question.in_scope else None,
        "fact_coverage": fact_coverage(answer.answer, question.facts) if question.in_scope else None,
        "language_match": language_matches(answer.lang, question.lang),
        "resolved_query": getattr(answer, "resolved_query", None),
        "timings_ms": dict(getattr(answer, "timings_ms", {}) or {}),
    }


def summarise_answers(questions: Sequence[EvalQuestion], records: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Aggregate answer metrics over the answered questions."""
    answered = [q for q in questions if q.id in records and "error" not in records[q.id]]
    in_scope = [records[q.id] for q in answered if q.in_scope]
    coverage = [r["fact_coverage"] for r in in_scope]
    return {
        "questions": len(questions), "answered": len(answered),
        "errors": sum(1 for r in records.values() if "error" in r),
        "citation_precision": mean([r["citation_precision"] for r in in_scope]),
        "citation_recall": mean([r["citation_recall"] for r in in_scope]),
        "no_citation_rate": (sum(1 for r in in_scope if not r["cited_tasks"] and not r["cited_sections"])
                             / len(in_scope)) if in_scope else None,
        "fact_coverage": mean(coverage),
        "all_facts_rate": (sum(1 for c in coverage if c == 1.0) / len(coverage)) if coverage else None,
        "language_match": (sum(1 for q in answered if records[q.id]["language_match"]) / len(answered))
        if answered else None,
        "modes": dict(Counter(records[q.id]["mode"] for q in answered)),
        "scope": scope_metrics({q.id: q.in_scope for q in answered},
                               {q.id: records[q.id]["in_scope"] for q in answered}),
    }


# --- provenance -------------------------------------------------------------------------------
def git_revision(home: Path) -> dict[str, Any]:
    """The checkout's commit and whether tracked files differ from it (None outside git)."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=home, capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=home,
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    return {"commit": commit, "dirty": bool(dirty)}


def library_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


# --- the run ----------------------------------------------------------------------------------
def run_eval(engine: SearchEngine, settings: Settings, options: EvalOptions) -> EvalRun:
    """Run retrieval (all configurations), scope, answers and latency on one split."""
    corpus = engine.corpus
    path = settings.eval_path / "questions.jsonl"
    every = load_questions(path, corpus)
    questions = select(every, options.split, options.limit)
    if not questions:
        raise DatasetError(f"no questions in split {options.split!r}")
    names = list(options.retrievers or engine.retriever_names)
    unknown = [n for n in names if n not in engine.retriever_names]
    if unknown:
        raise ValueError(f"unknown retrievers {unknown}; available: {engine.retriever_names}")
    configs = configurations(names, options.ablation)
    qrels = build_qrels(questions)
    queries, followup_method, resolve_ms = resolve_queries(questions)

    assistant, answer_note = (load_assistant(engine, settings) if options.answers
                              else (None, "answer metrics not run (--no-answers)"))
    total = len(questions) * len(configs) + (len(questions) if assistant is not None else 0)

    runs: dict[str, Run] = {}
    searches: dict[str, SearchResult] = {}
    stage_ms: dict[str, list[float]] = defaultdict(list)
    engine.search("预热 warm-up", top_k=1)  # first-call initialisation is not query latency
    cold = _clear_query_caches(engine)
    answers: dict[str, dict[str, Any]] = {}
    answer_ms: dict[str, list[float]] = defaultdict(list)
    with _progress_bar(options.progress, total) as advance:
        for config in configs:
            results: dict[str, SearchResult] = {}
            for question in questions:
                results[question.id] = engine.search(queries[question.id], top_k=options.depth,
                                                     retrievers=config.retrievers, use_lookup=config.lookup)
                advance(f"retrieval: {config.name}")
            runs[config.name] = to_run(results)
            if config.name == DEFAULT:
                searches = results
                for result in results.values():
                    for stage, value in result.timings_ms.items():
                        stage_ms[stage].append(value)
        if assistant is not None:
            _clear_query_caches(engine)  # answers are timed cold too
            for question in questions:
                started = time.perf_counter()
                try:
                    answer = ask(assistant, question)
                except Exception as exc:  # recorded per question; the run goes on
                    answers[question.id] = {"error": repr(exc)}
                else:
                    answer_ms["wall"].append((time.perf_counter() - started) * 1000)
                    answers[question.id] = score_answer(question, answer)
                    for stage, value in answers[question.id]["timings_ms"].items():
                        answer_ms[stage].append(value)
                advance("answers")

    # --- retrieval metrics
    config_results: dict[str, Any] = {}
    for config in configs:
        config_results[config.name] = {**config.to_json(), "metrics": retrieval_metrics(qrels, runs[config.name])}
    per_query = per_query_scores(qrels, runs[DEFAULT])
    singles = [c.name for c in configs if len(c.retrievers) == 1 and c.lookup is None and c.name != DEFAULT]
    significance: dict[str, Any] | None = None
    if singles and qrels:
        best = max(singles, key=lambda n: config_results[n]["metrics"][MAIN_METRIC])
        significance = paired_test(qrels, runs[DEFAULT], runs[best], DEFAULT, best)
        significance["best_single"] = best

    # --- scope (default configuration)
    gold_scope = {q.id: q.in_scope for q in questions}
    predicted = {q.id: bool(searches[q.id].in_scope) for q in questions}
    scope = scope_metrics(gold_scope, predicted)
    scope["near_miss"] = _near_miss_recall(questions, predicted)
    scope["confident_oos_ids"] = [q.id for q in questions if not q.in_scope and predicted[q.id]]
    scope["flagged_in_scope_ids"] = [q.id for q in questions if q.in_scope and not predicted[q.id]]

    notes: list[str] = []
    if options.split in ("dev", "all"):
        notes.append("The scope model is calibrated on dev questions (not lookups or follow-ups): "
                     "scope numbers on dev are in-sample.")
    if followup_method == FALLBACK_FOLLOWUP:
        notes.append("Follow-ups were retrieved with the fallback (last user turn + question).")
    if answer_note:
        notes.append(answer_note)
    if options.limit is not None:
        notes.append(f"Restricted to {len(questions)} questions (--limit {options.limit}): not comparable "
                     "with full-split numbers.")

    answer_summary: dict[str, Any]
    if assistant is not None:
        answer_summary = {"status": "run", **summarise_answers(questions, answers)}
    else:
        answer_summary = {"status": "skipped", "note": answer_note}

    manifest = engine.index.manifest
    results: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": options.command(),
        "split": options.split,
        "limit": options.limit,
        "dataset": {
            "path": str(path.relative_to(settings.home)) if path.is_relative_to(settings.home) else str(path),
            "sha256": dataset_sha256(path),
            "questions_in_file": len(every),
            "questions": len(questions),
            "judged": len(qrels),
            "unjudged": len(questions) - len(qrels),
            "by_type": dict(Counter(q.type for q in questions)),
            "by_lang": dict(Counter(q.lang for q in questions)),
            "overlap_rule": {k: {kk: vv for kk, vv in v.items() if kk != "ids"}
                             for k, v in overlap_rates(every, corpus).items()},
        },
        "system": {
            "git": git_revision(settings.home),
            "retrievers": names,
            "models": manifest.get("embedder_info", []),
            "index": {k: manifest.get(k) for k in ("built_at", "format", "units", "corpus_sha256", "source_sha256",
                                                    "bm25")},
            "settings": {"fusion": settings.fusion, "rrf_k": settings.rrf_k,
                         "fusion_weights": {n: settings.fusion_weights.get(n, 1.0) for n in names},
                         "candidates_per_retriever": settings.candidates_per_retriever,
                         "lookup": settings.lookup,
                         "reranker": str(settings.reranker_path) if settings.reranker_path else None,
                         "llm": settings.llm_model if settings.llm_base_url else None},
            "libraries": library_versions(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "load_average": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        },
        "followup_resolution": followup_method,
        "retrieval": {
            "main_metric": MAIN_METRIC,
            "metric_keys": list(RETRIEVAL_METRICS),
            "relevance": "nDCG@10 graded (linear gain); Recall/MRR/MAP count grade >= 1 as relevant",
            "run_depth": options.depth,
            "default": DEFAULT,
            "configs": config_results,
            "breakdown": breakdown(questions, qrels, runs[DEFAULT], corpus),
            "governing": governing_recall(questions, runs[DEFAULT]),
            "significance": significance,
        },
        "scope": scope,
        "answers": answer_summary,
        "latency_ms": {
            "retrieval": {stage: percentiles(values) for stage, values in stage_ms.items()},
            "followup_resolution": percentiles(resolve_ms) if resolve_ms else None,
            "answers": {stage: percentiles(values) for stage, values in answer_ms.items()} or None,
            "cold_query_cache": cold,
            "configuration": DEFAULT,
        },
        "per_query": {
            q.id: {"type": q.type, "lang": q.lang, "in_scope": q.in_scope,
                   "predicted_in_scope": predicted[q.id],
                   "query": queries[q.id],
                   "top10": [h.unit_id for h in searches[q.id].hits[:10]],
                   "metrics": per_query.get(q.id),
                   "answer": answers.get(q.id)}
            for q in questions
        },
        "notes": notes,
    }
    return EvalRun(results=results, questions=questions, qrels=qrels, runs=runs, searches=searches,
                   queries=queries, answers=answers, corpus=corpus)
