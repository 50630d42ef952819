"""Task knowledge: reviewed document expansion (doc2query written by people) for every unit.

For each task and body section, ``ingest/annotations/knowledge/*.json`` holds a plain-language
explanation in both languages, everyday synonyms of its terms, typical askers and at least ten
example questions per language, all written from the unit's own text (see
``ingest/annotations/knowledge/README.md``). The index embeds them as extra views of their unit
and BM25 indexes them as a second field, so a question in everyday words ("一个箱子走到底")
meets the unit that says it officially (集装箱"一箱到底"). The synonyms are also the
thesaurus of the clause-level relevance stage.
"""

from __future__ import annotations

import hashlib
import json
from functools import cached_property
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

MIN_QUESTIONS = 10
KNOWLEDGE_DIR = "knowledge"


class KnowledgeError(ValueError):
    """The knowledge data is missing, malformed or does not cover the corpus; the message says where."""


class Term(BaseModel):
    """One of the plan's terms with its everyday names in both languages."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    plan: str = Field(min_length=1)
    zh: list[str] = Field(default_factory=list)
    en: list[str] = Field(default_factory=list)

    @property
    def forms(self) -> tuple[str, ...]:
        """Every surface form, lower-cased, longest first (the plan's own wording included)."""
        forms = {f.strip().lower() for f in (self.plan, *self.zh, *self.en) if f.strip()}
        return tuple(sorted(forms, key=len, reverse=True))


class UnitKnowledge(BaseModel):
    """Document expansion for one unit (``task:N`` or ``section:ID``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    unit: str = Field(pattern=r"^(task:[1-9]\d*|section:[A-Za-z0-9_.]+)$")
    explain_zh: str = Field(min_length=4)
    explain_en: str = Field(min_length=10)
    terms: list[Term] = Field(min_length=1)
    askers_zh: list[str] = Field(default_factory=list)
    askers_en: list[str] = Field(default_factory=list)
    questions_zh: list[str] = Field(min_length=MIN_QUESTIONS)
    questions_en: list[str] = Field(min_length=MIN_QUESTIONS)
    not_stated: list[str] = Field(default_factory=list)

    @field_validator("questions_zh", "questions_en", "askers_zh", "askers_en", "not_stated")
    @classmethod
    def _no_blanks(cls, values: list[str]) -> list[str]:
        if any(not v.strip() for v in values):
            raise ValueError("entries must not be empty")
        if len({v.strip() for v in values}) != len(values):
            raise ValueError("entries must not repeat")
        return [v.strip() for v in values]

    def questions(self) -> list[tuple[str, str]]:
        """(lang, question) pairs."""
        return [("zh", q) for q in self.questions_zh] + [("en", q) for q in self.questions_en]

    def sparse_text(self) -> str:
        """Everything BM25 indexes for the unit's knowledge field."""
        terms = [f for term in self.terms for f in (term.plan, *term.zh, *term.en)]
        return "\n".join([self.explain_zh, self.explain_en, *terms, *self.askers_zh, *self.askers_en,
                          *self.questions_zh, *self.questions_en])


class Knowledge(BaseModel):
    """All units' knowledge, keyed by unit id; immutable once loaded."""

    model_config = ConfigDict(frozen=True)

    units: dict[str, UnitKnowledge]
    sha256: str

    def get(self, unit_id: str) -> UnitKnowledge | None:
        return self.units.get(unit_id)

    @cached_property
    def thesaurus(self) -> tuple[tuple[str, ...], ...]:
        """Groups of forms that name one idea (each term with its synonyms), deduplicated."""
        seen: set[tuple[str, ...]] = set()
        groups: list[tuple[str, ...]] = []
        for unit in self.units.values():
            for term in unit.terms:
                forms = term.forms
                if len(forms) > 1 and forms not in seen:
                    seen.add(forms)
                    groups.append(forms)
        return tuple(groups)


def knowledge_files(annotations_dir: Path) -> list[Path]:
    return sorted((annotations_dir / KNOWLEDGE_DIR).glob("*.json"))


def load_knowledge(annotations_dir: Path, unit_ids: list[str] | None = None) -> Knowledge:
    """Read and validate every knowledge file; with ``unit_ids``, require exactly those units."""
    files = knowledge_files(annotations_dir)
    if not files:
        raise KnowledgeError(f"no knowledge files in {annotations_dir / KNOWLEDGE_DIR}")
    digest = hashlib.sha256()
    units: dict[str, UnitKnowledge] = {}
    for path in files:
        raw = path.read_bytes()
        digest.update(path.name.encode() + b"\0" + raw)
        try:
            data = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise KnowledgeError(f"{path.name}: not valid JSON ({exc})") from exc
        if not isinstance(data, dict) or not isinstance(data.get("units"), list):
            raise KnowledgeError(f"{path.name}: expected an object with a 'units' list")
        for position, item in enumerate(data["units"]):
            try:
                unit = UnitKnowledge.model_validate(item)
            except ValidationError as exc:
                name = item.get("unit") if isinstance(item, dict) else position
                raise KnowledgeError(f"{path.name}: unit {name}: {exc}") from exc
            if unit.unit in units:
                raise KnowledgeError(f"{path.name}: {unit.unit} is described twice")
            units[unit.unit] = unit
    if unit_ids is not None:
        missing = [u for u in unit_ids if u not in units]
        extra = sorted(set(units) - set(unit_ids))
        if missing or extra:
            raise KnowledgeError(f"knowledge must cover exactly the corpus units: missing {missing[:10]}, "
                                 f"unknown {extra[:10]}")
    return Knowledge(units=units, sha256=digest.hexdigest())
