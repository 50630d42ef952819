"""Write an evaluation to disk: report.md, results.json, TREC run/qrels, charts, worst.md, BASELINE.md."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from assistant.evaluation.metrics import MAIN_METRIC, RETRIEVAL_METRICS
from assistant.evaluation.runner import DEFAULT, EvalRun

REPORT_FILES = ("report.md", "results.json", "run.trec", "qrels.trec", "retrievers.png", "breakdown.png", "worst.md")
CHART_METRICS = ("NDCG@10", "Recall@1", "Recall@5", "Recall@10", "MRR@10")
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
    (folder / "results.json").write_text(json.dumps(run.results, ensure_ascii=False, indent=1, default=_json),
                                         encoding="utf-8")
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


def _json(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    return str(value)


# --- TREC files -----------------------------------------------------------------------------
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
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]], align_first_left: int = 1) -> str:
    lines = ["| " + " | ".join(header) + " |",
             "| " + " | ".join("---" if i < align_first_left else "---:" for i in range(len(header))) + " |"]
    lines += ["| " + " | ".join(_f(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def render_tables(results: dict[str, Any]) -> str:
    """The main tables (retrieval configurations, breakdowns, significance, scope, answers, latency)."""
    keys = list(RETRIEVAL_METRICS)
    retrieval = results["retrieval"]
    out: list[str] = []
    judged, total = results["dataset"]["judged"], results["dataset"]["questions"]
    out.append(f"### Retrieval ({judged} judged questions of {total}; main metric **{MAIN_METRIC}**)\n")
    rows = []
    for name, config in retrieval["configs"].items():
        label = f"**{name}**" if name == DEFAULT else name
        lookup = "off" if config["lookup"] is False else "on"
        rows.append([label, "+".join(config["retrievers"]), lookup, *(config["metrics"].get(k) for k in keys)])
    out.append(_table(["configuration", "retrievers", "lookup", *keys], rows, 3))
    out.append(f"\n{retrieval['relevance']}. Out-of-scope questions and lookups of nonexistent numbers have "
               "no relevant docs and are scored by the scope metrics instead.\n")

    significance = retrieval.get("significance")
    if significance and "student" in significance:
        wtl = significance["win_tie_loss"]
        out.append(f"**Significance** ({significance['metric']}, paired over {significance['queries']} queries): "
                   f"{significance['control']} {significance['mean_control']:.3f} vs best single retriever "
                   f"{significance['treatment']} {significance['mean_treatment']:.3f}; "
                   f"Student's t p = {significance['student']['p_value']:.4g}, Fisher randomization p = "
                   f"{significance['fisher']['p_value']:.4g} (Monte-Carlo, {significance['fisher']['n_permutations']} "
                   f"permutations); per query W/T/L = {wtl['W']}/{wtl['T']}/{wtl['L']}.\n")

    governing = retrieval.get("governing") or {}
    if governing:
        out.append(f"### {DEFAULT}: governing tasks only\n")
        out.append("Questions about tasks (all types but body and metadata), counting only the grade-2 task(s) "
                   "that answer them; mixed-language questions count as Chinese.\n")
        metric_names = ("Recall@1", "Recall@5", "Recall@10")
        out.append(_table(["language", "n", *metric_names],
                          [[lang, entry["n"], *(entry["metrics"].get(m) for m in metric_names)]
                           for lang, entry in governing.items()]))
        out.append("")

    for dimension, title in (("lang", "language"), ("type", "question type"), ("category", "category")):
        groups = retrieval["breakdown"].get(dimension) or {}
        if not groups:
            continue
        out.append(f"### {DEFAULT} by {title}\n")
        rows = []
        for key, entry in groups.items():
            label = f"{key} {entry['label_en']}" if dimension == "category" and key != "sections" else key
            if dimension == "category" and key == "sections":
                label = entry["label_en"]
            rows.append([label, entry["n"], *(entry["metrics"].get(k) for k in keys)])
        out.append(_table([title, "n", *keys], rows))
        out.append("")

    scope = results["scope"]
    out.append("### Scope (positive class = out of scope)\n")
    out.append(_table(["questions", "out of scope", "precision", "recall", "F1", "in scope wrongly flagged",
                       "confident answers to OOS", "near-miss recall"],
                      [[scope["questions"], scope["out_of_scope"], scope["precision"], scope["recall"], scope["f1"],
                        scope.get("false_flag_rate"), scope["confident_oos_rate"], scope["near_miss"]["recall"]]]))
    out.append("")

    answers = results["answers"]
    out.append("### Answers\n")
    if answers.get("status") == "run":
        out.append(_table(["answered", "errors", "citation precision", "citation recall", "no citation",
                           "fact coverage", "all facts", "language match", "scope F1", "confident OOS"],
                          [[answers["answered"], answers["errors"], answers["citation_precision"],
                            answers["citation_recall"], answers["no_citation_rate"], answers["fact_coverage"],
                            answers["all_facts_rate"], answers["language_match"], answers["scope"]["f1"],
                            answers["scope"]["confident_oos_rate"]]]))
        out.append(f"\nmodes: {answers['modes']}\n")
    else:
        out.append(f"_{answers.get('note')}_\n")

    latency = results["latency_ms"]
    out.append(f"### Latency (ms, {latency['configuration']}"
               f"{', cold query cache' if latency.get('cold_query_cache') else ''})\n")
    rows = [[stage, v["p50"], v["p95"], v["n"]] for stage, v in latency["retrieval"].items()]
    if latency.get("followup_resolution"):
        v = latency["followup_resolution"]
        rows.append(["follow-up resolution", v["p50"], v["p95"], v["n"]])
    for stage, v in (latency.get("answers") or {}).items():
        rows.append([f"answer: {stage}", v["p50"], v["p95"], v["n"]])
    out.append(_table(["stage", "p50", "p95", "n"], [[r[0], _f(r[1], 1), _f(r[2], 1), r[3]] for r in rows]))
    return "\n".join(out) + "\n"


def _provenance(results: dict[str, Any]) -> str:
    system = results["system"]
    git = system["git"]
    commit = f"`{git['commit'][:12]}`{' (with local changes)' if git['dirty'] else ''}" if git["commit"] else "—"
    models = ", ".join(f"{m['name']} = {m['model']} ({m['package']} {m['version']})" for m in system["models"])
    libraries = ", ".join(f"{k} {v}" for k, v in system["libraries"].items())
    dataset = results["dataset"]
    return "\n".join([
        f"- command: `{results['command']}`",
        f"- date: {results['created_at']}; commit {commit}",
        f"- split: **{results['split']}** ({dataset['questions']} questions, {dataset['judged']} judged); "
        f"dataset `{dataset['path']}` sha256 `{dataset['sha256'][:16]}…`",
        f"- retrievers: {', '.join(system['retrievers'])}; models: {models}",
        f"- fusion: {system['settings']['fusion']} (k={system['settings']['rrf_k']}), "
        f"lookup {'on' if system['settings']['lookup'] else 'off'}; index built {system['index']['built_at']}",
        f"- follow-ups: {results['followup_resolution']}",
        f"- libraries: {libraries}",
        f"- machine: {system.get('cpus')} CPUs, load average {system.get('load_average')} at the end of the run "
        "(latency is sensitive to it)",
    ])


def render_report(results: dict[str, Any]) -> str:
    notes = "".join(f"- {n}\n" for n in results.get("notes", []))
    return (f"# Evaluation report — {results['split']} split\n\n{_provenance(results)}\n\n"
            + (f"**Notes**\n\n{notes}\n" if notes else "")
            + render_tables(results)
            + "\n![retrievers](retrievers.png)\n\n![breakdown](breakdown.png)\n\n"
            "Worst questions: [worst.md](worst.md). Files: `results.json` (every metric, per-query scores), "
            "`run.trec` / `qrels.trec` (trec_eval format; run scores are 1/rank), `runs/` (one TREC run per "
            "configuration).\n")


def render_baseline(results: dict[str, Any]) -> str:
    """``eval/BASELINE.md``: the main tables on the test split and how to reproduce them."""
    notes = "".join(f"- {n}\n" for n in results.get("notes", []))
    return ("# Baseline (test split)\n\n"
            "Regenerate with `policy-assistant eval --baseline` (runs the full evaluation on the test split, "
            "writes a report under `eval/reports/` and rewrites this file). Latency depends on the machine.\n\n"
            f"{_provenance(results)}\n\n" + (f"**Notes**\n\n{notes}\n" if notes else "") + render_tables(results))


def render_worst(run: EvalRun, count: int = WORST) -> str:
    """The ``count`` judged questions with the lowest nDCG@10 (ties: lowest Recall@10)."""
    corpus_texts: dict[str, str] = {}
    per_query = run.results["per_query"]
    judged = [q for q in run.questions if per_query[q.id]["metrics"] is not None]
    judged.sort(key=lambda q: (per_query[q.id]["metrics"][MAIN_METRIC], per_query[q.id]["metrics"]["Recall@10"],
                               q.id))
    lines = [f"# {min(count, len(judged))} worst questions ({DEFAULT}, {run.results['split']} split)\n",
             "Lowest nDCG@10 first, ties broken by Recall@10. Gold: doc id (grade). "
             "Retrieved: rank, unit, engine score, retrievers (name#rank) or lookup.\n"]
    for question in judged[:count]:
        metrics = per_query[question.id]["metrics"]
        lines.append(f"## {question.id} — {question.type}, {question.lang}: nDCG@10 {metrics[MAIN_METRIC]:.3f}, "
                     f"Recall@10 {metrics['Recall@10']:.3f}\n")
        if question.history:
            for turn in question.history:
                lines.append(f"> {turn.role}: {turn.content}  ")
            lines.append("")
        lines.append(f"**Q:** {question.question}\n")
        if run.queries[question.id] != question.question:
            lines.append(f"Sent to the engine: {run.queries[question.id]}\n")
        gold = ", ".join(f"`{doc}` ({grade})" for doc, grade in sorted(question.relevance.items(),
                                                                        key=lambda item: -item[1]))
        lines.append(f"**Gold:** {gold}\n")
        for doc in sorted(question.relevance, key=lambda d: -question.relevance[d]):
            corpus_texts.setdefault(doc, _unit_text(run, doc))
            lines.append(f"- `{doc}`: {corpus_texts[doc]}")
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


# --- charts ---------------------------------------------------------------------------------
def write_charts(results: dict[str, Any], folder: Path) -> None:
    """``retrievers.png`` (main metrics per configuration) and ``breakdown.png`` (nDCG@10 by lang, type)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    configs = results["retrieval"]["configs"]
    names = list(configs)
    figure, axis = plt.subplots(figsize=(max(8.0, 1.3 * len(names) + 3), 4.5))
    width = 0.8 / len(CHART_METRICS)
    for i, metric in enumerate(CHART_METRICS):
        values = [configs[n]["metrics"].get(metric, 0.0) for n in names]
        axis.bar([x + i * width for x in range(len(names))], values, width, label=metric)
    axis.set_xticks([x + width * (len(CHART_METRICS) - 1) / 2 for x in range(len(names))], names, rotation=20,
                    ha="right")
    axis.set_ylim(0, 1)
    axis.set_ylabel("score")
    axis.set_title(f"Retrieval by configuration ({results['split']} split)")
    axis.legend(fontsize=8, ncols=len(CHART_METRICS), loc="upper center", bbox_to_anchor=(0.5, -0.25))
    axis.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    figure.savefig(folder / "retrievers.png", dpi=120)
    plt.close(figure)

    breakdown = results["retrieval"]["breakdown"]
    figure, axes = plt.subplots(1, 2, figsize=(11, 4.5), gridspec_kw={"width_ratios": [1, 3]})
    for axis, dimension in zip(axes, ("lang", "type"), strict=True):
        groups = breakdown.get(dimension) or {}
        labels = [f"{k}\n(n={v['n']})" for k, v in groups.items()]
        values = [v["metrics"][MAIN_METRIC] for v in groups.values()]
        axis.bar(range(len(values)), values, color="tab:blue" if dimension == "lang" else "tab:green")
        axis.set_xticks(range(len(values)), labels, rotation=30 if dimension == "type" else 0, fontsize=8)
        axis.set_ylim(0, 1)
        axis.set_title(f"{MAIN_METRIC} by {'language' if dimension == 'lang' else 'type'}")
        axis.grid(axis="y", alpha=0.3)
    figure.suptitle(f"{DEFAULT}, {results['split']} split")
    figure.tight_layout()
    figure.savefig(folder / "breakdown.png", dpi=120)
    plt.close(figure)


def summary_lines(results: dict[str, Any]) -> list[str]:
    """A few plain lines for the terminal: each configuration's main metrics, scope, answers."""
    lines = [f"{results['split']} split: {results['dataset']['questions']} questions "
             f"({results['dataset']['judged']} judged)"]
    for name, config in results["retrieval"]["configs"].items():
        metrics = config["metrics"]
        lines.append(f"  {name:<18} " + "  ".join(f"{k} {metrics.get(k, 0.0):.3f}"
                                                   for k in ("NDCG@10", "Recall@5", "MRR@10")))
    significance = results["retrieval"].get("significance") or {}
    if "student" in significance:
        lines.append(f"  {significance['control']} vs {significance['treatment']}: Student's t p = "
                     f"{significance['student']['p_value']:.4g}, Fisher p = {significance['fisher']['p_value']:.4g}")
    scope = results["scope"]
    lines.append(f"  scope (out-of-scope flag): precision {_f(scope['precision'])} recall {_f(scope['recall'])} "
                 f"F1 {_f(scope['f1'])}; in scope wrongly flagged {_f(scope.get('false_flag_rate'))}; "
                 f"confident answers to out-of-scope {_f(scope['confident_oos_rate'])}")
    answers = results["answers"]
    if answers.get("status") == "run":
        lines.append(f"  answers: citation P {_f(answers['citation_precision'])} R {_f(answers['citation_recall'])}"
                     f", facts {_f(answers['fact_coverage'])}, language {_f(answers['language_match'])}, "
                     f"errors {answers['errors']}")
    lines += [f"  note: {note}" for note in results.get("notes", [])]
    return lines


def write_baseline(results: dict[str, Any], path: Path) -> None:
    path.write_text(render_baseline(results), encoding="utf-8")
