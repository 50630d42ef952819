"""Domain and language vocabulary as validated data (``ingest/annotations/vocabulary/``).

Stop words, the gazetteer of places the plan may not cover and the expected-answer-type
patterns live beside the corpus, not in code, so they can be reviewed and changed without
touching the pipeline; each file is checked here when it is loaded.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

VOCABULARY_DIR = "vocabulary"
FILES = ("stopwords.json", "gazetteer.json", "answer_types.json", "question_cues.json", "followup.json")


class VocabularyError(ValueError):
    """A vocabulary file is missing or malformed; the message names it."""


class Place(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    zh: str = Field(min_length=1)
    en: str = Field(min_length=1)


class AnswerType(BaseModel):
    """A kind of fact a question can ask for, and how evidence states it."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(pattern=r"^[a-z_]+$")
    label_zh: str
    label_en: str
    question: str
    evidence: str

    @field_validator("question", "evidence")
    @classmethod
    def _compiles(cls, pattern: str) -> str:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"not a regular expression: {exc}") from exc
        return pattern


class Stopwords(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)
    zh: frozenset[str]
    en: frozenset[str]


class Gazetteer(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)
    places: tuple[Place, ...] = Field(min_length=1)


class AnswerTypes(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)
    types: tuple[AnswerType, ...] = Field(min_length=1)


class QuestionCues(BaseModel):
    """Words that make a clause ask something (not topic words)."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    zh: tuple[str, ...] = Field(min_length=1)
    en: tuple[str, ...] = Field(min_length=1)
    list_zh: str = Field(min_length=1, description="regular expression: the question asks for a list")
    list_en: str = Field(min_length=1)
    structure: dict[str, str] = Field(description="regular expressions for questions about the annex's structure")

    @field_validator("list_zh", "list_en")
    @classmethod
    def _compiles(cls, pattern: str) -> str:
        re.compile(pattern)
        return pattern

    @field_validator("structure")
    @classmethod
    def _all_compile(cls, patterns: dict[str, str]) -> dict[str, str]:
        for pattern in patterns.values():
            re.compile(pattern)
        return patterns


class Vocabulary(BaseModel):
    """Everything in the vocabulary folder, validated; ``sha256`` names this exact version."""

    model_config = ConfigDict(frozen=True)
    stopwords: Stopwords
    gazetteer: Gazetteer
    answer_types: AnswerTypes
    question_cues: QuestionCues
    followup_path: Path  # follow-up cues, read by ``assistant.retrieval.followup.load_cues``
    sha256: str


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise VocabularyError(f"vocabulary file missing: {path}") from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise VocabularyError(f"{path.name}: not valid JSON ({exc})") from exc


def load_vocabulary(annotations_dir: Path) -> Vocabulary:
    folder = annotations_dir / VOCABULARY_DIR
    digest = hashlib.sha256()
    raw = {}
    for name in FILES:
        raw[name] = _read(folder / name)
        digest.update(name.encode() + b"\0" + (folder / name).read_bytes())
    try:
        return Vocabulary(stopwords=Stopwords.model_validate(raw["stopwords.json"]),
                          gazetteer=Gazetteer.model_validate(raw["gazetteer.json"]),
                          answer_types=AnswerTypes.model_validate(raw["answer_types.json"]),
                          question_cues=QuestionCues.model_validate(raw["question_cues.json"]),
                          followup_path=folder / "followup.json",
                          sha256=digest.hexdigest())
    except ValidationError as exc:
        raise VocabularyError(f"{folder}: {exc}") from exc
