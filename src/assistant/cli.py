"""``policy-assistant``: the command-line surface (thin: it calls the core and prints)."""

from __future__ import annotations

import sys
from typing import Any

import typer

from assistant.cli_support import DOCUMENT_HELP, UserError, friendly_errors, print_json_line
from assistant.config import get_settings
from assistant.ingest.corpus import corpus_records, load_corpus

app = typer.Typer(
    help="Policy assistant for 厦府〔2026〕88号 (Xiamen service-industry opening-up pilot plan).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.command()
@friendly_errors
def corpus() -> None:
    """Write the structured corpus as JSON Lines (meta, sections, tasks) to stdout."""
    for record in corpus_records(load_corpus(get_settings())):
        print_json_line(record)


def format_task_card(number: int) -> str:
    """A task in Chinese and English with its category (plain text, for reading out)."""
    data = load_corpus(get_settings())
    task = data.task(number)
    if task is None:
        raise UserError(
            f"no task {number}: the annex of {data.meta.doc_number} has tasks 1-{data.tasks[-1].number} "
            f"(没有第{number}项任务，附件共{len(data.tasks)}项)"
        )
    category = data.category(task.category_no)
    flag = "  [差异化试点任务 / differentiated pilot task]" if task.differentiated else ""
    return (
        f"第{task.number}项 / Task {task.number}{flag}\n"
        f"类别 {category.label}\n"
        f"Category {task.category_no}: {task.category_en}\n\n"
        f"{task.text}\n\n"
        f"{task.text_en}"
    )


@app.command()
@friendly_errors
def task(number: int = typer.Argument(..., help="Annex task number, e.g. 17.")) -> None:
    """Print one annex task in Chinese and English with its category."""
    typer.echo(format_task_card(number))


def _progress_bar():
    """A rich progress callback for index builds (on stderr, so stdout stays clean)."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    progress = Progress(TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(),
                        console=Console(stderr=True), transient=False)
    state: dict[str, Any] = {}

    def report(stage: str, done: int, total: int) -> None:
        if "task" not in state:
            progress.start()
            state["task"] = progress.add_task("building index", total=total)
        progress.update(state["task"], completed=done, description=f"building index: {stage}")
        if done >= total:
            progress.stop()

    return report


def load_engine(rebuild: str = "if_needed"):
    """The search engine, building the index when it is missing or stale.

    Every command that loads the engine (ingest, search, ask, chat, serve, eval) comes through
    here, so this is where the CLI tunes its process (:func:`assistant.process.tune`): before the
    embedders load, since the e5 engine's OpenMP runtime reads its environment once.
    """
    from assistant.index.store import IndexProblem
    from assistant.process import tune
    from assistant.retrieval.engine import SearchEngine

    settings = get_settings()
    tune(settings)
    try:
        return SearchEngine.load(settings, rebuild=rebuild, progress=_progress_bar())
    except IndexProblem as exc:
        raise UserError(f"{exc} (or pass --rebuild)") from exc


@app.command()
@friendly_errors
def ingest(
    if_needed: bool = typer.Option(False, "--if-needed", help="Only build when the index is missing or stale."),
) -> None:
    """Build the index (embeddings, FAISS, BM25, scope calibration) under index/; with ASSISTANT_BACKEND=postgres
    also publish it to PostgreSQL as a new version."""
    import time

    started = time.perf_counter()
    engine = load_engine("if_needed" if if_needed else "always")
    manifest = engine.index.manifest
    db = getattr(engine.index, "db", None)  # a version published in PostgreSQL
    where = f"{db.where} as version {engine.index.version}" if db is not None else engine.index.folder
    typer.echo(
        f"index ready: {manifest['units']} units, embedders {', '.join(manifest['embedders'])}"
        f"{', bm25' if manifest['bm25'] else ''}; built {manifest['built_at']} "
        f"({time.perf_counter() - started:.1f} s) at {where}",
        err=True,
    )


def _print_search(result, top_k: int) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    scope = "in scope" if result.in_scope else "NOT COVERED by the plan (nearest tasks shown as possibly related)"
    console.print(f"[bold]{result.query}[/bold]  ({result.lang}, {scope}, confidence {result.confidence:.2f})")
    if result.message:
        console.print(result.message)
    table = Table(show_lines=True)
    for column in ("#", "unit", "category / section", "score", "text", "found by"):
        table.add_column(column)
    for rank, hit in enumerate(result.hits[:top_k], start=1):
        unit = f"第{hit.task}项 / Task {hit.task}" if hit.task else hit.section_id
        unit = f"{hit.unit_id.rpartition('/')[0]} {unit}".lstrip()  # a unit of another document names it
        text = hit.text if not hit.text_en else f"{hit.text}\n\n{hit.text_en}"
        found = "lookup" if hit.lookup else ", ".join(f"{k}#{v}" for k, v in sorted(hit.retrievers.items()))
        table.add_row(str(rank), unit, hit.section, f"{hit.score:.4f}", text, found)
    console.print(table)


@app.command()
@friendly_errors
def search(
    query: str = typer.Argument(..., help="The question, or - to read one question per line from stdin."),
    top_k: int = typer.Option(10, "--top-k", min=1, max=50, help="How many results."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON (one object per line with -)."),
    retrievers: str | None = typer.Option(None, help="Comma-separated subset, e.g. bm25,use."),
    document: str | None = typer.Option(None, "--document", help=DOCUMENT_HELP),
) -> None:
    """Search the plan: ranked tasks and passages with scores and the retrievers that found them."""
    engine = load_engine()
    document = engine.library.require(document).number if document is not None else None
    names = [n.strip() for n in retrievers.split(",")] if retrievers else None
    if names:
        unknown = [n for n in names if n not in engine.retriever_names]
        if unknown:
            raise UserError(f"unknown retrievers {unknown}; available: {engine.retriever_names}")
    questions = (line.rstrip("\n") for line in sys.stdin) if query == "-" else iter([query])
    for question in questions:
        if not question.strip():
            if query == "-":  # keep one output line per input line
                print_json_line({"query": question, "in_scope": False, "results": [],
                                  "error": "empty question"})
                continue
            raise UserError("the question is empty")
        result = engine.search(question, top_k=top_k, retrievers=names, document=document)
        if as_json or query == "-":
            print_json_line(result.to_json())
            sys.stdout.flush()
        else:
            _print_search(result, top_k)


def _print_answer(answer, as_json: bool) -> None:
    if as_json:
        print_json_line(answer.to_json())
        sys.stdout.flush()
        return
    if answer.resolved_query:
        typer.secho(f"(understood as: {answer.resolved_query})", dim=True)
    if answer.notice:
        typer.secho(answer.notice, fg=typer.colors.YELLOW)
    typer.echo(answer.answer)


@app.command()
@friendly_errors
def ask(
    question: str = typer.Argument(..., help="The question, in Chinese or English."),
    as_json: bool = typer.Option(False, "--json", help="Print the answer as one JSON object."),
    document: str | None = typer.Option(None, "--document", help=DOCUMENT_HELP),
) -> None:
    """Answer one question with citations (extractive, or generative when an LLM is configured)."""
    from assistant.answer.chat import Assistant

    if not question.strip():
        raise UserError("the question is empty")
    _print_answer(Assistant(load_engine()).ask(question, document=document), as_json)


@app.command()
@friendly_errors
def chat(as_json: bool = typer.Option(False, "--json", help="Print each answer as a JSON object.")) -> None:
    """A conversation in the terminal: follow-ups refer to earlier turns; exit with EOF or `exit`."""
    from assistant.answer.chat import Assistant

    assistant = Assistant(load_engine())
    conversation_id = assistant.new_conversation()
    interactive = sys.stdin.isatty()
    while True:
        try:
            question = input("? " if interactive else "")
        except (EOFError, KeyboardInterrupt):
            break
        if question.strip().lower() in ("exit", "quit", "退出"):
            break
        if not question.strip():
            continue
        answer = assistant.ask(question, conversation_id)
        conversation_id = answer.conversation_id
        _print_answer(answer, as_json)
        if not as_json:
            typer.echo("")


@app.command()
@friendly_errors
def serve(
    host: str | None = typer.Option(None, help="Interface to bind (default ASSISTANT_HOST, 127.0.0.1)."),
    port: int | None = typer.Option(None, min=1, max=65535, help="Port (default ASSISTANT_PORT, 7860)."),
    workers: int | None = typer.Option(None, min=1, max=32, help="Worker processes (default ASSISTANT_WORKERS, 1)."),
    rebuild: bool = typer.Option(False, "--rebuild", help="Rebuild the index before serving."),
) -> None:
    """Serve the JSON API (/api, /docs, /healthz) and the chat UI (/) with uvicorn."""
    import logging

    import uvicorn

    settings = get_settings()
    host, port, workers = host or settings.host, port or settings.port, workers or settings.workers
    logging.basicConfig(level=logging.INFO, format="%(levelname)s:     %(name)s: %(message)s")
    # Build or check the index here, once, with a progress bar and a plain error if it is corrupt;
    # with several workers this also keeps them from building it concurrently.
    engine = load_engine("always" if rebuild else "if_needed")
    if workers == 1:
        from assistant.api.app import create_app

        uvicorn.run(create_app(settings, engine=engine), host=host, port=port, log_level="info")
    else:
        del engine  # every worker loads its own engine in the app's lifespan
        uvicorn.run("assistant.cli:worker_app", factory=True, host=host, port=port, workers=workers,
                    log_level="info")


def worker_app():
    """The app of one ``serve --workers N`` worker process, tuned like the parent (process.tune)."""
    from assistant.api.app import app_factory
    from assistant.process import tune

    tune(get_settings())
    return app_factory()


feedback_app = typer.Typer(help="Answer feedback (👍/👎) stored by the API and the UI.", no_args_is_help=True)
app.add_typer(feedback_app, name="feedback")


@feedback_app.command("export")
@friendly_errors
def feedback_export(
    fmt: str = typer.Option("csv", "--format", help="csv (spreadsheet-safe) or jsonl."),
    output: str | None = typer.Option(None, "--output", "-o", help="File to write; stdout without it."),
) -> None:
    """Export every stored rating as CSV or JSON Lines."""
    from assistant.feedback import FeedbackStore, FeedbackUnavailable

    if fmt not in ("csv", "jsonl"):
        raise UserError(f"unknown format {fmt!r}: use csv or jsonl")
    store = FeedbackStore(get_settings().feedback_path, read_only=True)  # exporting needs no write access
    if not store.path.exists():
        raise UserError(f"no feedback yet: {store.path} does not exist")
    try:
        count = store.export(fmt, output if output else sys.stdout)  # type: ignore[arg-type]
    except (FeedbackUnavailable, OSError) as exc:
        raise UserError(str(exc)) from exc
    finally:
        store.close()
    typer.echo(f"exported {count} ratings{f' to {output}' if output else ''}", err=True)


@app.command("eval")
@friendly_errors
def eval_command(
    split: str = typer.Option("blind", help="Question split: blind (eval/blind/, never tuned on), dev or all."),
    retrievers: str | None = typer.Option(None, help="Comma-separated retrievers of the hybrid (default: all)."),
    ablation: bool = typer.Option(True, "--ablation/--no-ablation", help="Also run the hybrid without lookup and "
                                  "without rerank, text-only, knowledge-only and each retriever alone."),
    answers: bool = typer.Option(True, "--answers/--no-answers", help="Also ask the Assistant: answer floors, "
                                 "coverage of the answers, the conversations."),
    output: str | None = typer.Option(None, "--output", help="Parent folder of the report (default eval/reports)."),
    limit: int | None = typer.Option(None, "--limit", min=1, help="Only N questions, spread over types, and "
                                     "ceil(N/4) conversations (smoke runs)."),
    baseline: bool = typer.Option(False, "--baseline", help="Also rewrite eval/BASELINE.md (whole blind split)."),
) -> None:
    """Run the benchmark and write a report under eval/reports/<UTC time>/; prints the gated metrics."""
    from pathlib import Path

    from assistant.evaluation import DatasetError, EvalOptions, check_floors, load_floors, run_eval
    from assistant.evaluation.report import summary_lines, write_baseline, write_report

    if split not in ("dev", "blind", "all"):
        raise UserError(f"unknown split {split!r}: use blind, dev or all")
    if baseline and (split != "blind" or limit is not None or not answers):
        raise UserError("--baseline measures the whole blind split with answers: drop --split/--limit/--no-answers")
    names = [n.strip() for n in retrievers.split(",") if n.strip()] if retrievers else None
    settings = get_settings()
    engine = load_engine()
    if names and (unknown := [n for n in names if n not in engine.retriever_names]):
        raise UserError(f"unknown retrievers {unknown}; available: {engine.retriever_names}")
    options = EvalOptions(split=split, retrievers=names, ablation=ablation, answers=answers, limit=limit)
    try:
        run = run_eval(engine, settings, options)
    except DatasetError as exc:
        raise UserError(str(exc)) from exc
    folder = write_report(run, Path(output) if output else settings.eval_path / "reports")
    for line in summary_lines(run.results):
        typer.echo(line)
    floors_path = settings.eval_path / "floors.json"
    if limit is None and answers and floors_path.exists():
        try:
            floors = load_floors(floors_path)
        except ValueError as exc:
            typer.secho(f"warning: {exc}", fg=typer.colors.YELLOW, err=True)
        else:
            if floors["split"] == split:
                typer.echo(f"floors ({floors_path.name}, {split} split):")
                for check in check_floors(run.results.gated, floors):
                    typer.echo(f"  {check.line()}")
    typer.echo(f"report: {folder / 'report.md'}")
    if baseline:
        write_baseline(run.results, settings.eval_path / "BASELINE.md")
        typer.echo(f"baseline: {settings.eval_path / 'BASELINE.md'}")


if __name__ == "__main__":  # pragma: no cover
    app()
