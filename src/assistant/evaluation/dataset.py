"""The benchmark question set (``eval/questions.jsonl``): validated loading, splits and qrels.

Doc ids are ``task:N`` (annex task N) and ``section:ID`` (a body unit); they are the
``Hit.unit_id`` values the search engine returns, so gold and runs compare directly.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from assistant.ingest.models import Corpus

Split = Literal["dev", "test"]
Lang = Literal["zh", "en", "mixed"]
QuestionType = Literal["paraphrase", "colloquial", "english", "lookup", "multi_task", "followup", "body",
                       "metadata", "out_of_scope"]
QUESTION_TYPES: tuple[str, ...] = QuestionType.__args__  # type: ignore[attr-defined]
LANGS: tuple[str, ...] = Lang.__args__  # type: ignore[attr-defined]

DOC_ID = re.compile(r"^(task:[1-9]\d*|section:[A-Za-z0-9_.]+)$")
Qrels = dict[str, dict[str, int]]  # query id -> doc id -> grade (BEIR-style plain dict)


class DatasetError(ValueError):
    """The question file is missing or does not validate; the message says where."""


class Turn(BaseModel):
    """One prior turn of a follow-up conversation."""

    model_config = ConfigDict(extra="forbid")

    role: Literal["user", "assistant"]
    content: str = Field(min_length=1)


class EvalQuestion(BaseModel):
    """One line of ``questions.jsonl`` (schema in ``eval/README.md``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^q\d{4,}$")
    split: Split
    lang: Lang
    type: QuestionType
    question: str = Field(min_length=1)
    history: list[Turn] = Field(default_factory=list)
    relevance: dict[str, Literal[1, 2]]
    in_scope: bool
    facts: list[list[str]]
    tags: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _consistent(self) -> EvalQuestion:
        bad = [doc for doc in self.relevance if not DOC_ID.match(doc)]
        if bad:
            raise ValueError(f"doc ids must be task:N or section:ID, got {bad}")
        if (self.type == "followup") != bool(self.history):
            raise ValueError("follow-up questions (and only they) carry a history")
        if any(turn.role != ("user" if i % 2 == 0 else "assistant") for i, turn in enumerate(self.history)):
            raise ValueError("a history alternates user and assistant turns, starting with the user")
        if self.in_scope:
            if 2 not in self.relevance.values():
                raise ValueError("an in-scope question needs at least one grade-2 doc")
            if not 1 <= len(self.facts) <= 4 or any(not fact or not all(alt.strip() for alt in fact)
                                                  for fact in self.facts):
                raise ValueError("an in-scope question needs 1-4 facts, each a list of non-empty alternatives")
        elif self.relevance or self.facts:
            raise ValueError("an out-of-scope question has empty relevance and no facts")
        if self.type == "out_of_scope" and self.in_scope:
            raise ValueError("type out_of_scope must have in_scope false")
        return self

    @property
    def has_qrels(self) -> bool:
        """Whether the question takes part in the retrieval metrics (it has relevant docs)."""
        return bool(self.relevance)

    def gold_tasks(self, min_grade: int = 1) -> set[int]:
        """Annex task numbers graded at least ``min_grade``."""
        return {int(doc.split(":", 1)[1]) for doc, grade in self.relevance.items()
                if doc.startswith("task:") and grade >= min_grade}

    def categories(self, corpus: Corpus) -> list[int]:
        """Categories of the grade-2 gold tasks (empty for section-only gold)."""
        numbers = set()
        for number in self.gold_tasks(min_grade=2):
            task = corpus.task(number)
            if task is not None:
                numbers.add(task.category_no)
        return sorted(numbers)


def dataset_sha256(path: Path) -> str:
    """Checksum of the question file as stored (so reports name the exact set they measured)."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load_questions(path: Path, corpus: Corpus | None = None) -> list[EvalQuestion]:
    """Read and validate every question; with ``corpus``, also check that gold doc ids exist.

    Raises ``DatasetError`` naming the line of the first problem found.
    """
    if not path.exists():
        raise DatasetError(f"question file not found: {path}")
    questions: list[EvalQuestion] = []
    seen: dict[str, int] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            question = EvalQuestion.model_validate(json.loads(line))
        except (json.JSONDecodeError, ValidationError) as exc:
            raise DatasetError(f"{path.name}:{number}: {exc}") from exc
        if question.id in seen:
            raise DatasetError(f"{path.name}:{number}: duplicate id {question.id} (first on line {seen[question.id]})")
        seen[question.id] = number
        questions.append(question)
    if not questions:
        raise DatasetError(f"{path} holds no questions")
    if corpus is not None:
        known = corpus_doc_ids(corpus)
        for question in questions:
            unknown = sorted(set(question.relevance) - known)
            if unknown:
                raise DatasetError(f"{question.id}: gold doc ids not in the corpus: {unknown}")
    return questions


def corpus_doc_ids(corpus: Corpus) -> set[str]:
    """Every doc id the corpus defines (``task:N`` and ``section:ID``)."""
    return {f"task:{t.number}" for t in corpus.tasks} | {f"section:{s.id}" for s in corpus.sections}


def select(questions: Sequence[EvalQuestion], split: str = "all", limit: int | None = None) -> list[EvalQuestion]:
    """The questions of ``split`` ("dev", "test" or "all").

    With ``limit``, a small but varied sample: questions are taken round-robin over types
    (each type in file order), so even ``limit=9`` touches every type.
    """
    if split not in ("dev", "test", "all"):
        raise ValueError(f"unknown split {split!r}; use dev, test or all")
    chosen = [q for q in questions if split == "all" or q.split == split]
    if limit is None or limit >= len(chosen):
        return chosen
    by_type: dict[str, list[EvalQuestion]] = defaultdict(list)
    for question in chosen:
        by_type[question.type].append(question)
    picked: list[EvalQuestion] = []
    depth = 0
    while len(picked) < limit:
        for kind in QUESTION_TYPES:
            if depth < len(by_type[kind]) and len(picked) < limit:
                picked.append(by_type[kind][depth])
        depth += 1
    order = {q.id: i for i, q in enumerate(chosen)}
    return sorted(picked, key=lambda q: order[q.id])


def build_qrels(questions: Iterable[EvalQuestion]) -> Qrels:
    """query id -> doc id -> grade, for the questions that have relevant docs."""
    return {q.id: dict(q.relevance) for q in questions if q.has_qrels}


# --- set health (the rules of eval/README.md, re-implemented) ----------------------------
def shares_run(question: str, text: str, k: int = 6) -> bool:
    """Whether ``question`` shares a run of ``k`` consecutive characters with ``text`` (raw, unnormalised)."""
    return any(question[i:i + k] in text for i in range(len(question) - k + 1))


def overlapping(question: EvalQuestion, corpus: Corpus, min_grade: int = 1, k: int = 6) -> bool:
    """The overlap rule for one question: any k-run shared with the Chinese text of a gold task."""
    texts = [task.text for n in question.gold_tasks(min_grade) if (task := corpus.task(n)) is not None]
    return any(shares_run(question.question, text, k) for text in texts)


def overlap_rates(questions: Sequence[EvalQuestion], corpus: Corpus, min_grade: int = 1) -> dict[str, dict]:
    """Overlapping questions overall and per split: ``{"all": {"n": .., "overlapping": .., "rate": ..}, ...}``."""
    result: dict[str, dict] = {}
    for split in ("all", "dev", "test"):
        group = [q for q in questions if split == "all" or q.split == split]
        hits = [q.id for q in group if overlapping(q, corpus, min_grade)]
        result[split] = {"n": len(group), "overlapping": len(hits), "rate": len(hits) / len(group) if group else 0.0,
                         "ids": hits}
    return result
