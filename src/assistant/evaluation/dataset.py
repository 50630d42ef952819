"""The question sets: validated loading (``file:line`` errors), sampling and qrels.

``eval/questions.jsonl`` (single questions, some with a scripted ``history``) and ``eval/dev/questions.jsonl``
(questions written blind, in the blind schema, then read for development) are the dev set, with
``eval/dev/conversations.jsonl``; ``eval/blind/questions.jsonl`` (300 questions
with a coverage class) and ``eval/blind/conversations.jsonl`` (48 conversations) are the blind split. Schemas
are in ``eval/README.md``. Doc ids are ``task:N`` and ``section:ID``, the ``Hit.unit_id``
values the engine returns. Rows become :class:`EvalQuestion` or :class:`Conversation`.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from assistant.ingest.models import Corpus

Split = Literal["dev", "blind", "all"]
SPLITS: tuple[str, ...] = ("dev", "blind", "all")
Lang = Literal["zh", "en", "mixed"]
LANGS: tuple[str, ...] = ("zh", "en", "mixed")
Coverage = Literal["full", "partial", "none"]
COVERAGES: tuple[str, ...] = ("full", "partial", "none")
DevType = Literal["paraphrase", "colloquial", "english", "keyword", "lookup", "multi_task", "followup", "body",
                  "metadata", "out_of_scope"]
BlindType = Literal["scenario", "everyday", "keyword", "general", "near_miss", "paraphrase", "english", "lookup",
                    "multi_task", "body", "metadata", "structure", "out_of_scope"]
TurnKind = Literal["first", "ellipsis", "pronoun", "ordinal", "content_reference", "narrowing", "topic_switch",
                   "out_of_scope"]
TURN_KINDS: tuple[str, ...] = TurnKind.__args__  # type: ignore[attr-defined]
QUESTION_TYPES: tuple[str, ...] = tuple(dict.fromkeys(BlindType.__args__ + DevType.__args__))  # type: ignore[attr-defined]

DOC_ID = re.compile(r"^(task:[1-9]\d*|section:[A-Za-z0-9_.]+)$")
Qrels = dict[str, dict[str, int]]  # query id -> doc id -> grade (BEIR-style plain dict)
Facts = list[list[str]]
Model = TypeVar("Model", bound=BaseModel)


class DatasetError(ValueError):
    """A question file is missing or does not validate; the message names the file and line."""


def _check_relevance(relevance: dict[str, int]) -> None:
    bad = [doc for doc in relevance if not DOC_ID.match(doc)]
    if bad:
        raise ValueError(f"doc ids must be task:N or section:ID, got {bad}")


def _check_facts(facts: Facts) -> None:
    if not 1 <= len(facts) <= 4 or any(not fact or not all(alt.strip() for alt in fact) for fact in facts):
        raise ValueError("an answerable question needs 1-4 facts, each a list of non-empty alternatives")


def _check_gold(coverage: str, relevance: dict[str, int]) -> None:
    """Answerable (full/partial) rows need a grade-2 doc; unanswerable rows have no gold."""
    if coverage == "none" and relevance:
        raise ValueError("coverage none has empty relevance")
    if coverage != "none" and 2 not in relevance.values():
        raise ValueError(f"coverage {coverage} needs at least one grade-2 doc")


# --- file rows ------------------------------------------------------------------------------
class HistoryTurn(BaseModel):
    """One scripted prior turn of a dev follow-up."""

    model_config = ConfigDict(extra="forbid")

    role: Literal["user", "assistant"]
    content: str = Field(min_length=1)


class DevRow(BaseModel):
    """One line of ``eval/questions.jsonl``."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=r"^q\d{4,}$")
    split: Literal["dev"]
    lang: Lang
    type: DevType
    question: str = Field(min_length=1)
    history: list[HistoryTurn] = Field(default_factory=list)
    relevance: dict[str, Literal[1, 2]]
    in_scope: bool
    facts: Facts
    tags: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _consistent(self) -> DevRow:
        _check_relevance(self.relevance)
        if (self.type == "followup") != bool(self.history):
            raise ValueError("follow-up questions (and only they) carry a history")
        if any(turn.role != ("user" if i % 2 == 0 else "assistant") for i, turn in enumerate(self.history)):
            raise ValueError("a history alternates user and assistant turns, starting with the user")
        _check_gold("full" if self.in_scope else "none", self.relevance)
        if self.in_scope:
            _check_facts(self.facts)
        elif self.facts:
            raise ValueError("an out-of-scope question has no facts")
        if self.type == "out_of_scope" and self.in_scope:
            raise ValueError("type out_of_scope must have in_scope false")
        return self

    def to_question(self) -> EvalQuestion:
        return EvalQuestion(id=self.id, split="dev", lang=self.lang, type=self.type, question=self.question,
                            history=self.history, relevance=self.relevance,
                            coverage="full" if self.in_scope else "none", facts=self.facts, tags=self.tags)


class BlindRow(BaseModel):
    """One line of ``eval/blind/questions.jsonl``."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=r"^b\d{4,}$")
    lang: Lang
    type: BlindType
    question: str = Field(min_length=1)
    relevance: dict[str, Literal[1, 2]]
    coverage: Coverage
    missing_detail: str | None
    facts: Facts
    tags: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _consistent(self) -> BlindRow:
        _check_relevance(self.relevance)
        _check_gold(self.coverage, self.relevance)
        if (self.coverage == "partial") != bool(self.missing_detail):
            raise ValueError("partial coverage (and only it) names its missing_detail")
        if self.coverage == "none":
            if self.facts:
                raise ValueError("coverage none has no facts")
        else:
            _check_facts(self.facts)
        if self.type == "out_of_scope" and self.coverage != "none":
            raise ValueError("type out_of_scope must have coverage none")
        return self

    def to_question(self) -> EvalQuestion:
        return EvalQuestion(id=self.id, split=self.split_name, lang=self.lang, type=self.type,
                            question=self.question, relevance=self.relevance, coverage=self.coverage,
                            missing_detail=self.missing_detail, facts=self.facts, tags=self.tags)

    @property
    def split_name(self) -> Literal["dev", "blind"]:
        return "blind"


class WrittenBlindDevRow(BlindRow):
    """One line of ``eval/dev/questions.jsonl``: written blind like the blind split, then read as dev data."""

    id: str = Field(pattern=r"^d\d{4,}$")

    @property
    def split_name(self) -> Literal["dev", "blind"]:
        return "dev"


class ConversationTurn(BaseModel):
    """One user turn of a blind conversation."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    question: str = Field(min_length=1)
    kind: TurnKind
    relevance: dict[str, Literal[1, 2]]
    coverage: Coverage
    refers_to: int | None = Field(None, ge=1)
    missing_detail: str | None = None
    resolved: str = Field(min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> ConversationTurn:
        _check_relevance(self.relevance)
        if (self.kind == "ordinal") != (self.refers_to is not None):
            raise ValueError("ordinal turns (and only they) have refers_to")
        if self.kind == "ordinal":
            if self.relevance or self.coverage == "none":
                raise ValueError("an ordinal turn has empty relevance (its gold is the cited unit) and is answerable")
        else:
            _check_gold(self.coverage, self.relevance)
        if (self.kind == "out_of_scope") != (self.coverage == "none"):
            raise ValueError("out_of_scope turns (and only they) have coverage none")
        if self.coverage == "partial" and not self.missing_detail:
            raise ValueError("a partial turn names its missing_detail")
        return self

    def gold_tasks(self, min_grade: int = 1) -> set[int]:
        return _tasks(self.relevance, min_grade)


class Conversation(BaseModel):
    """One line of ``eval/{blind,dev}/conversations.jsonl``: turns asked in order in one conversation."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^[cd]\d{3,}$")  # c: blind, d: dev
    lang: Lang
    turns: list[ConversationTurn] = Field(min_length=2)

    @model_validator(mode="after")
    def _first(self) -> Conversation:
        if [t.kind == "first" for t in self.turns] != [True] + [False] * (len(self.turns) - 1):
            raise ValueError("the first turn (and only it) has kind first")
        return self


# --- the common question ----------------------------------------------------------------------
class EvalQuestion(BaseModel):
    """A single question of either split, as the runner sees it (dev rows: coverage full or none)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    split: Literal["dev", "blind"]
    lang: Lang
    type: str
    question: str
    history: list[HistoryTurn] = Field(default_factory=list)
    relevance: dict[str, int]
    coverage: Coverage
    missing_detail: str | None = None
    facts: Facts = Field(default_factory=list)
    tags: list[str] = Field(default_factory=list)

    @property
    def answerable(self) -> bool:
        return self.coverage != "none"

    @property
    def near_miss(self) -> bool:
        """A near-miss: the blind type ``near_miss`` or a dev question tagged ``near-miss``."""
        return self.type == "near_miss" or "near-miss" in self.tags

    @property
    def has_qrels(self) -> bool:
        """Whether the question takes part in the retrieval metrics (it has relevant docs)."""
        return bool(self.relevance)

    def gold_tasks(self, min_grade: int = 1) -> set[int]:
        """Annex task numbers graded at least ``min_grade``."""
        return _tasks(self.relevance, min_grade)

    def categories(self, corpus: Corpus) -> list[int]:
        """Categories of the grade-2 gold tasks (empty for section-only gold)."""
        return sorted({task.category_no for n in self.gold_tasks(2) if (task := corpus.task(n)) is not None})


def _tasks(relevance: dict[str, int], min_grade: int) -> set[int]:
    return {int(doc.split(":", 1)[1]) for doc, grade in relevance.items()
            if doc.startswith("task:") and grade >= min_grade}


# --- loading ----------------------------------------------------------------------------------
def dataset_sha256(path: Path) -> str:
    """Checksum of a question file as stored (reports name the exact set they measured)."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def read_jsonl(path: Path, model: type[Model]) -> list[Model]:
    """Validate every non-empty line of ``path`` as ``model``; ``DatasetError`` names ``file:line``."""
    if not path.exists():
        raise DatasetError(f"question file not found: {path}")
    rows: list[Model] = []
    seen: dict[str, int] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = model.model_validate(json.loads(line))
        except (json.JSONDecodeError, ValidationError) as exc:
            raise DatasetError(f"{path.name}:{number}: {exc}") from exc
        key = getattr(row, "id", None)
        if key in seen:
            raise DatasetError(f"{path.name}:{number}: duplicate id {key} (first on line {seen[key]})")
        seen[key] = number
        rows.append(row)
    if not rows:
        raise DatasetError(f"{path} holds no rows")
    return rows


def _check_known(path: Path, items: Iterable[tuple[str, set[str]]], corpus: Corpus | None) -> None:
    if corpus is None:
        return
    known = corpus_doc_ids(corpus)
    for key, docs in items:
        if unknown := sorted(docs - known):
            raise DatasetError(f"{path.name}: {key}: gold doc ids not in the corpus: {unknown}")


def load_questions(path: Path, corpus: Corpus | None = None, split: str = "dev") -> list[EvalQuestion]:
    """A single-question file of a split part ("dev": ``q…`` rows, "dev_blind_written": ``d…`` rows,
    "blind": ``b…`` rows).

    With ``corpus``, gold doc ids must exist. Raises ``DatasetError`` naming the first bad line.
    """
    model: type[DevRow | BlindRow] = {"dev": DevRow, "dev_blind_written": WrittenBlindDevRow,
                                      "blind": BlindRow}[split]
    questions = [row.to_question() for row in read_jsonl(path, model)]
    _check_known(path, ((q.id, set(q.relevance)) for q in questions), corpus)
    return questions


def load_conversations(path: Path, corpus: Corpus | None = None) -> list[Conversation]:
    """The blind conversations; with ``corpus``, gold doc ids must exist."""
    conversations = read_jsonl(path, Conversation)
    _check_known(path, ((c.id, {d for t in c.turns for d in t.relevance}) for c in conversations), corpus)
    return conversations


def corpus_doc_ids(corpus: Corpus) -> set[str]:
    """Every doc id the corpus defines (``task:N`` and ``section:ID``)."""
    return {f"task:{t.number}" for t in corpus.tasks} | {f"section:{s.id}" for s in corpus.sections}


def split_files(eval_path: Path, split: str) -> tuple[dict[str, Path], dict[str, Path]]:
    """The question files and the conversation files of a split, by part (the dev split has two
    question files: ``dev`` and ``dev_blind_written``)."""
    if split not in SPLITS:
        raise DatasetError(f"unknown split {split!r}; use dev, blind or all")
    questions = {"dev": eval_path / "questions.jsonl", "dev_blind_written": eval_path / "dev" / "questions.jsonl",
                 "blind": eval_path / "blind" / "questions.jsonl"}
    conversations = {"dev": eval_path / "dev" / "conversations.jsonl",
                     "blind": eval_path / "blind" / "conversations.jsonl"}
    parts = {"dev": ["dev", "dev_blind_written"], "blind": ["blind"], "all": list(questions)}[split]
    return ({p: questions[p] for p in parts if p != "dev_blind_written" or questions[p].exists()},
            {p: conversations[p] for p in parts if p in conversations})


def sample(questions: Sequence[EvalQuestion], limit: int | None = None) -> list[EvalQuestion]:
    """All questions, or with ``limit`` a small but varied sample: round-robin over types (each in
    file order, types in order of first appearance), so a small limit still touches every type."""
    if limit is None or limit >= len(questions):
        return list(questions)
    by_type: dict[str, list[EvalQuestion]] = defaultdict(list)
    for question in questions:
        by_type[question.type].append(question)
    picked: list[EvalQuestion] = []
    depth = 0
    while len(picked) < limit:
        for members in by_type.values():
            if depth < len(members) and len(picked) < limit:
                picked.append(members[depth])
        depth += 1
    order = {q.id: i for i, q in enumerate(questions)}
    return sorted(picked, key=lambda q: order[q.id])


def build_qrels(questions: Iterable[EvalQuestion]) -> Qrels:
    """query id -> doc id -> grade, for the questions that have relevant docs."""
    return {q.id: dict(q.relevance) for q in questions if q.has_qrels}
