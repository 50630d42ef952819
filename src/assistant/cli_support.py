"""What every ``policy-assistant`` command shares: user-facing errors and JSON Lines output."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from functools import wraps
from typing import Any

import typer
from pydantic import ValidationError
from pydantic_settings import SettingsError

from assistant.ingest.library import UnknownDocument
from assistant.ingest.parser import CorpusError

DOCUMENT_HELP = "Only this document of the library (its number, e.g. 厦府〔2026〕88号)."


class UserError(Exception):
    """An error whose message is for the user: printed plainly, never as a stack trace."""


def friendly_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn known failures into a one-line message and a non-zero exit."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (UserError, CorpusError, UnknownDocument) as exc:
            typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
            raise typer.Exit(2) from None
        except (ValidationError, SettingsError) as exc:
            typer.secho(f"error: invalid ASSISTANT_* configuration: {exc}", fg=typer.colors.RED, err=True)
            raise typer.Exit(2) from None

    return wrapper


def print_json_line(record: dict) -> None:
    sys.stdout.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
