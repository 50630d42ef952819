"""Write an evaluation to disk: report.md, results.json, TREC run/qrels, charts, worst.md, BASELINE.md."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from assistant.evaluation.ablation import DEFAULT
from assistant.evaluation.charts import write_charts
from assistant.evaluation.dataset import COVERAGES
from assistant.evaluation.floors import GATED
from assistant.evaluation.metrics import MAIN_METRIC
from assistant.evaluation.results import EvalResults, KindScores, Rate
from assistant.evaluation.runner import EvalRun

REPORT_FILES = ("report.md", "results.json", "run.trec", "qrels.trec", "retrievers.png", "breakdown.png", "worst.md")
WORST = 20


def report_folder(parent: Path, now: datetime | None = None) -> Path:
    """A new ``<parent>/<UTC timestamp>/`` folder (suffixed if two runs share a second)."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    folder = parent / stamp
    counter = 1
    while folder.exists():
        counter += 1
        folder = parent / f"{stamp}-{counter}"
    folder.mkdir(parents=True)
    return folder


def write_report(run: EvalRun, parent: Path) -> Path:
    """Write every report file into a new timestamped folder under ``parent``; returns the folder."""
    folder = report_folder(parent)
    (folder / "results.json").write_text(run.results.model_dump_json(indent=1), encoding="utf-8")
    write_trec_run(run.runs[DEFAULT], folder / "run.trec", DEFAULT)
    if len(run.runs) > 1:
        (folder / "runs").mkdir()
        for name, config_run in run.runs.items():
            write_trec_run(config_run, folder / "runs" / f"{name}.trec", name)
    write_trec_qrels(run.qrels, folder / "qrels.trec")
    write_charts(run.results, folder)
    (folder / "worst.md").write_text(render_worst(run), encoding="utf-8")
    (folder / "report.md").write_text(render_report(run.results), encoding="utf-8")
    return folder


def write_trec_run(run: dict[str, dict[str, float]], path: Path, name: str) -> None:
    """``qid Q0 docid rank score run_name`` lines, best first (trec_eval / ranx format)."""
    lines = []
    for qid, docs in run.items():
        ranked = sorted(docs.items(), key=lambda item: -item[1])
        lines += [f"{qid} Q0 {doc} {rank} {score:.6f} {name}" for rank, (doc, score) in enumerate(ranked, start=1)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_trec_qrels(qrels: dict[str, dict[str, int]], path: Path) -> None:
    """``qid 0 docid grade`` lines."""
    lines = [f"{qid} 0 {doc} {grade}" for qid, docs in qrels.items() for doc, grade in docs.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


# --- markdown -------------------------------------------------------------------------------
def _f(value: Any, digits: int = 3) -> str:
    if value is None:
        return "—"
    if isinstance(value, Rate):
        return "—" if value.rate is None else f"{value.rate:.3f} ({value.hits}/{value.n})"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]], left: int = 1) -> str:
    lines = ["| " + " | ".join(header) + " |",
             "| " + " | ".join("---" if i < left else "---:" for i in range(len(header))) + " |"]
    lines += ["| " + " | ".join(_f(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _gated_table(results: EvalResults) -> str:
    rows = [[f"`{name}`", meaning, "≥" if direction == "min" else "≤", results.gated.get(name)]
            for name, (direction, meaning) in GATED.items()]
    return "### Gated metrics (eval/floors.json)\n\n" + _table(["metric", "meaning", "floor kind", "measured"],
                                                                 rows, 3)


def _retrieval_tables(results: EvalResults) -> list[str]:
    retrieval, keys = results.retrieval, results.retrieval.metric_keys
    out = [f"### Retrieval ({results.dataset.judged} judged questions of {results.dataset.questions}; "
           f"main metric **{MAIN_METRIC}**)\n"]
    engine = results.system.settings

    def switch(value: bool | None, key: str) -> str:
        return "on" if (engine.get(key) if value is None else value) else "off"

    rows = [[f"**{name}**" if name == DEFAULT else name, "+".join(c.retrievers), switch(c.lookup, "lookup"),
             switch(c.rerank, "rerank"), *(c.metrics.get(k) for k in keys)] for name, c in retrieval.configs.items()]
    out.append(_table(["configuration", "retrievers", "lookup", "rerank", *keys], rows, 4))
    out.append(f"{retrieval.relevance}. Questions without relevant docs (coverage none) are scored by the "
               "coverage metrics instead.\n")
    for s in retrieval.significance:
        if s.student_p is None:
            continue
        wtl = s.win_tie_loss or {}
        out.append(f"**Significance** ({s.metric}, paired over {s.queries} queries): {s.control} "
                   f"{s.mean_control:.3f} vs {s.treatment} {s.mean_treatment:.3f}; Student's t p = {s.student_p:.4g}, "
                   f"Fisher randomization p = {s.fisher_p:.4g} ({s.n_permutations} permutations); per query W/T/L = "
                   f"{wtl.get('W')}/{wtl.get('T')}/{wtl.get('L')}.\n")
    for dimension, title in (("lang", "language"), ("type", "question type"), ("coverage", "expected coverage"),
                             ("category", "category")):
        groups = retrieval.breakdown.get(dimension) or {}
        if groups:
            rows = [[f"{key} {g.label}" if g.label and key != "sections" else (g.label or key), g.n,
                     *(g.metrics.get(k) for k in keys)] for key, g in groups.items()]
            out.append(f"### {DEFAULT} by {title}\n\n" + _table([title, "n", *keys], rows))
    return out


def _coverage_tables(results: EvalResults) -> list[str]:
    coverage = results.coverage
    out = [f"### Coverage (predicted by {coverage.source}; {coverage.questions} questions, "
           f"accuracy {_f(coverage.accuracy)})\n"]
    out.append(_table(["expected", "n", *(f"→ {c}" for c in COVERAGES)],
                      [[c, sum(row.values()), *(row[p] for p in COVERAGES)] for c, row in coverage.by_class.items()]))
    out.append(_table(["outcome", "expected", "predicted", "correct", "precision", "recall"],
                      [[c, o.expected, o.predicted, o.correct, o.precision, o.recall]
                       for c, o in coverage.outcomes.items()]))
    out.append("By question type:\n\n" + _table(
        ["type", "expected", "n", *(f"→ {c}" for c in COVERAGES)],
        [[t, coverage.type_class.get(t), sum(row.values()), *(row[p] for p in COVERAGES)]
         for t, row in coverage.by_type.items()], 2))
    return out


def _answer_tables(results: EvalResults) -> list[str]:
    answers = results.answers
    if answers.status != "run" or answers.floors is None:
        return [f"### Answers\n\n_{answers.note}_\n"]
    floors = answers.floors
    out = ["### Answers\n", _table(
        ["answered", "errors", "right task in top 3", "answerable → none", "out of scope → full",
         "near-miss → partial/none", "citation P", "citation R", "facts", "language"],
        [[answers.answered, answers.errors, floors.top3_task, floors.answerable_none, floors.oos_full,
          floors.near_miss_hedged, answers.citation_precision, answers.citation_recall, answers.fact_coverage,
          answers.language_match]]), f"modes: {answers.modes}\n"]
    out.append("Right task among the first three cited tasks, by language and by type:\n\n" + _table(
        ["group", "top 3"], [[f"lang {k}", v] for k, v in floors.top3_by_lang.items()]
        + [[f"type {k}", v] for k, v in floors.top3_by_type.items()]))
    return out


def _kind_row(label: str, scores: KindScores) -> list[Any]:
    return [label, scores.turns, scores.top3, scores.answerable_none, scores.oos_full, scores.unresolvable_ordinals]


def _conversation_tables(results: EvalResults) -> list[str]:
    conversations = results.conversations
    if conversations.status != "run" or conversations.followups is None:
        return [f"### Conversations\n\n_{conversations.note}_\n"]
    header = ["turns", "n", "right task in top 3", "answerable → none", "out of scope → full",
              "unresolvable ordinals"]
    rows = [_kind_row("**all follow-ups**", conversations.followups)]
    rows += [_kind_row(kind, s) for kind, s in conversations.by_kind.items()]
    rows += [_kind_row(f"follow-ups, {lang}", s) for lang, s in conversations.by_lang.items()]
    return [f"### Conversations ({conversations.conversations} conversations, {conversations.turns} turns)\n",
            _table(header, rows),
            "Ordinal turns score 1 when the answer's first citation is the unit the previous answer listed at "
            "that position (its citations, then the units it showed as related).\n"]


def _latency_table(results: EvalResults) -> str:
    latency = results.latency_ms
    rows = [[stage, _f(v.p50, 1), _f(v.p95, 1), v.n] for stage, v in latency.retrieval.items()]
    rows += [[f"answer: {stage}", _f(v.p50, 1), _f(v.p95, 1), v.n] for stage, v in latency.answers.items()]
    return (f"### Latency (ms, {latency.configuration}{', cold query cache' if latency.cold_query_cache else ''})\n\n"
            + _table(["stage", "p50", "p95", "n"], rows))


def render_tables(results: EvalResults) -> str:
    """Every table: gated metrics, retrieval, coverage, answers, conversations, latency."""
    parts = [_gated_table(results), *_retrieval_tables(results), *_coverage_tables(results),
             *_answer_tables(results), *_conversation_tables(results), _latency_table(results)]
    return "\n".join(parts)


def _provenance(results: EvalResults) -> str:
    system, dataset = results.system, results.dataset
    git = system.git
    commit = (f"`{str(git['commit'])[:12]}`{' (with local changes)' if git['dirty'] else ''}"
              if git.get("commit") else "—")
    models = ", ".join(f"{m['name']} = {m['model']} ({m['package']} {m['version']})" for m in system.models)
    files = "; ".join(f"`{f.path}` ({f.rows} rows, sha256 `{f.sha256[:16]}…`)" for f in dataset.files.values())
    return "\n".join([
        f"- command: `{results.command}`",
        f"- date: {results.created_at}; commit {commit}",
        f"- split: **{results.split}** ({dataset.questions} questions, {dataset.judged} judged; "
        f"{dataset.conversations} conversations, {dataset.turns} turns)",
        f"- files: {files}",
        f"- retrievers: {', '.join(system.retrievers)}; models: {models}",
        f"- fusion: {system.settings['fusion']} (k={system.settings['rrf_k']}), lookup "
        f"{'on' if system.settings['lookup'] else 'off'}, rerank {'on' if system.settings['rerank'] else 'off'}; "
        f"index built {system.index.get('built_at')}",
        f"- libraries: {', '.join(f'{k} {v}' for k, v in system.libraries.items())}",
        f"- machine: {system.cpus} CPUs, load average {system.load_average} at the end of the run "
        "(latency is sensitive to it)",
    ])


def _notes(results: EvalResults) -> str:
    return ("**Notes**\n\n" + "".join(f"- {n}\n" for n in results.notes) + "\n") if results.notes else ""


def render_report(results: EvalResults) -> str:
    return (f"# Evaluation report — {results.split} split\n\n{_provenance(results)}\n\n{_notes(results)}"
            + render_tables(results)
            + "\n![retrievers](retrievers.png)\n\n![breakdown](breakdown.png)\n\n"
            "Worst questions: [worst.md](worst.md). Files: `results.json` (every metric, per-query scores and "
            "answers, every conversation turn), `run.trec` / `qrels.trec` (trec_eval format; run scores are 1/rank), "
            "`runs/` (one TREC run per configuration).\n")


def render_baseline(results: EvalResults) -> str:
    """``eval/BASELINE.md``: every table on the blind split and how to reproduce them."""
    return ("# Baseline (blind split)\n\n"
            "Regenerate with `policy-assistant eval --baseline` (the full evaluation on the blind split: "
            "`eval/blind/questions.jsonl` and `eval/blind/conversations.jsonl`; it writes a report under "
            "`eval/reports/` and rewrites this file). Nothing is tuned on the blind split. Latency depends on the "
            f"machine.\n\n{_provenance(results)}\n\n{_notes(results)}" + render_tables(results))


def write_baseline(results: EvalResults, path: Path) -> None:
    path.write_text(render_baseline(results), encoding="utf-8")


def render_worst(run: EvalRun, count: int = WORST) -> str:
    """The ``count`` judged questions with the lowest nDCG@10 (ties: lowest Recall@10)."""
    per_query = run.results.per_query
    judged = [q for q in run.questions if per_query[q.id].metrics is not None]
    judged.sort(key=lambda q: (per_query[q.id].metrics[MAIN_METRIC], per_query[q.id].metrics["Recall@10"], q.id))
    lines = [f"# {min(count, len(judged))} worst questions ({DEFAULT}, {run.results.split} split)\n",
             "Lowest nDCG@10 first, ties broken by Recall@10. Gold: doc id (grade). "
             "Retrieved: rank, unit, engine score, retrievers (name#rank) or lookup.\n"]
    if run.results.split != "dev":
        lines.append("**Blind questions below: read them to understand a class of failure, never to tune retrieval, "
                     "answers or data on them (eval/README.md).**\n")
    for question in judged[:count]:
        metrics = per_query[question.id].metrics
        lines.append(f"## {question.id} — {question.type}, {question.lang}, {question.coverage}: "
                     f"nDCG@10 {metrics[MAIN_METRIC]:.3f}, Recall@10 {metrics['Recall@10']:.3f}\n")
        lines += [f"> {turn.role}: {turn.content}  " for turn in question.history]
        lines.append(f"\n**Q:** {question.question}\n")
        gold = sorted(question.relevance, key=lambda d: -question.relevance[d])
        lines.append("**Gold:** " + ", ".join(f"`{doc}` ({question.relevance[doc]})" for doc in gold) + "\n")
        lines += [f"- `{doc}`: {_unit_text(run, doc)}" for doc in gold]
        lines.append("\n**Top 5:**\n")
        for rank, hit in enumerate(run.searches[question.id].hits[:5], start=1):
            found = "lookup" if hit.lookup else ", ".join(f"{k}#{v}" for k, v in sorted(hit.retrievers.items()))
            mark = f" ✓{question.relevance[hit.unit_id]}" if hit.unit_id in question.relevance else ""
            lines.append(f"{rank}. `{hit.unit_id}`{mark} score {hit.score:.4f} [{found}] — {_short(hit.text)}")
        lines.append("")
    return "\n".join(lines) + "\n"


def _unit_text(run: EvalRun, doc: str) -> str:
    kind, _, key = doc.partition(":")
    unit = None
    if run.corpus is not None:
        unit = run.corpus.task(int(key)) if kind == "task" else run.corpus.section(key)
    return _short(unit.text) if unit is not None else "(unknown unit)"


def _short(text: str, width: int = 80) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[:width - 1] + "…"


def summary_lines(results: EvalResults) -> list[str]:
    """A few plain lines for the terminal: each configuration's main metrics, the gated metrics."""
    dataset = results.dataset
    lines = [f"{results.split} split: {dataset.questions} questions ({dataset.judged} judged), "
             f"{dataset.conversations} conversations"]
    for name, config in results.retrieval.configs.items():
        lines.append(f"  {name:<18} " + "  ".join(f"{k} {config.metrics.get(k, 0.0):.3f}"
                                                   for k in ("NDCG@10", "Recall@5", "MRR@10")))
    for s in results.retrieval.significance:
        if s.student_p is not None:
            lines.append(f"  {s.control} vs {s.treatment}: Student's t p = {s.student_p:.4g}, "
                         f"Fisher p = {s.fisher_p:.4g}")
    coverage = results.coverage
    lines.append(f"  coverage ({coverage.source}): accuracy {_f(coverage.accuracy)}; "
                 + ", ".join(f"{c} P {_f(o.precision)} R {_f(o.recall)}" for c, o in coverage.outcomes.items()))
    lines += [f"  {name:<30} {_f(value, 4)}" for name, value in results.gated.items()]
    lines += [f"  note: {note}" for note in results.notes]
    return lines
