"""``policy-assistant``: the command-line surface (thin: it calls the core and prints)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from functools import wraps
from typing import Any

import typer

from assistant.config import get_settings
from assistant.ingest.corpus import corpus_records, load_corpus
from assistant.ingest.parser import CorpusError

app = typer.Typer(
    help="Policy assistant for 厦府〔2026〕88号 (Xiamen service-industry opening-up pilot plan).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


class UserError(Exception):
    """An error whose message is for the user: printed plainly, never as a stack trace."""


def friendly_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn known failures into a one-line message and a non-zero exit."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (UserError, CorpusError) as exc:
            typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
            raise typer.Exit(2) from None

    return wrapper


def _print_json_line(record: dict) -> None:
    sys.stdout.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")


@app.command()
@friendly_errors
def corpus() -> None:
    """Write the structured corpus as JSON Lines (meta, sections, tasks) to stdout."""
    for record in corpus_records(load_corpus(get_settings())):
        _print_json_line(record)


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


if __name__ == "__main__":  # pragma: no cover
    app()
