"""What one evaluation produced, as one validated model (``results.json`` is its JSON dump).

Field names are the stable keys reports and comparisons read; ``SCHEMA_VERSION`` changes when
they do.
"""

from __future__ import annotations

from collections.abc import Iterable

from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION = 2


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Rate(_Model):
    """``hits`` of ``n`` cases; ``rate`` None when there are no cases."""

    n: int = 0
    hits: int = 0
    rate: float | None = None

    @classmethod
    def of(cls, flags: Iterable[bool]) -> Rate:
        values = list(flags)
        hits = sum(1 for v in values if v)
        return cls(n=len(values), hits=hits, rate=hits / len(values) if values else None)


# --- dataset and system -------------------------------------------------------------------------
class DatasetFile(_Model):
    path: str
    sha256: str
    rows: int


class DatasetInfo(_Model):
    files: dict[str, DatasetFile]  # "dev", "blind", "conversations"
    questions: int
    judged: int
    conversations: int
    turns: int
    by_type: dict[str, int]
    by_lang: dict[str, int]
    by_coverage: dict[str, int]
    overlap_rule: dict[str, dict[str, float]]  # split -> n, overlapping, rate


class SystemInfo(_Model):
    git: dict[str, str | bool | None]
    retrievers: list[str]
    models: list[dict]
    index: dict
    settings: dict
    libraries: dict[str, str | None]
    platform: str
    cpus: int | None
    load_average: list[float] | None


# --- retrieval -----------------------------------------------------------------------------------
class ConfigResult(_Model):
    """One retrieval configuration of the ablation (None: the engine's setting)."""

    retrievers: list[str]
    lookup: bool | None = None
    rerank: bool | None = None
    metrics: dict[str, float]


class GroupMetrics(_Model):
    n: int
    metrics: dict[str, float]
    label: str | None = None


class Significance(_Model):
    metric: str
    control: str
    treatment: str
    queries: int
    student_p: float | None = None
    fisher_p: float | None = None
    n_permutations: int | None = None
    seed: int | None = None
    mean_control: float | None = None
    mean_treatment: float | None = None
    win_tie_loss: dict[str, int] | None = None
    note: str | None = None


class RetrievalResults(_Model):
    main_metric: str
    metric_keys: list[str]
    relevance: str
    run_depth: int
    default: str
    configs: dict[str, ConfigResult]
    breakdown: dict[str, dict[str, GroupMetrics]]  # lang / type / coverage / category -> group -> metrics
    significance: list[Significance] = Field(default_factory=list)


# --- coverage and answers ------------------------------------------------------------------------
class OutcomeScores(_Model):
    """One predicted outcome (full, partial or none) against the expected class."""

    expected: int
    predicted: int
    correct: int
    precision: float | None
    recall: float | None


class CoverageResults(_Model):
    """Expected coverage class (or question type) -> predicted full/partial/none counts."""

    source: str  # "answers" (Answer.coverage) or "search" (the hybrid's decision, when answers are off)
    questions: int
    accuracy: float | None
    by_class: dict[str, dict[str, int]]
    by_type: dict[str, dict[str, int]]
    type_class: dict[str, str]  # type -> its expected class(es), e.g. "full" or "full/none"
    outcomes: dict[str, OutcomeScores]


class AnswerFloors(_Model):
    """The issue's answer floors, computed explicitly on the single questions."""

    top3_task: Rate  # answerable with grade-2 task gold: a grade-2 gold task among the first 3 cited tasks
    answerable_none: Rate  # answerable questions answered "none"
    oos_full: Rate  # out-of-scope (coverage none) questions answered "full"
    near_miss_hedged: Rate  # near-miss questions answered "partial" or "none"
    top3_by_lang: dict[str, Rate] = Field(default_factory=dict)
    top3_by_type: dict[str, Rate] = Field(default_factory=dict)


class AnswerRecord(_Model):
    mode: str | None = None
    coverage: str | None = None
    lang: str | None = None
    cited_units: list[str] = Field(default_factory=list)
    related_units: list[str] = Field(default_factory=list)  # listed after the citations as related
    top3_task: bool | None = None
    citation_precision: float | None = None
    citation_recall: float | None = None
    fact_coverage: float | None = None
    language_match: bool | None = None
    resolved_query: str | None = None
    error: str | None = None


class AnswerResults(_Model):
    status: str  # "run" or "skipped"
    note: str | None = None
    answered: int = 0
    errors: int = 0
    citation_precision: float | None = None
    citation_recall: float | None = None
    no_citation_rate: float | None = None
    fact_coverage: float | None = None
    all_facts_rate: float | None = None
    language_match: float | None = None
    modes: dict[str, int] = Field(default_factory=dict)
    floors: AnswerFloors | None = None


# --- conversations -------------------------------------------------------------------------------
class TurnResult(_Model):
    conversation: str
    turn: int  # 1-based
    kind: str
    lang: str
    coverage: str  # expected
    answer: AnswerRecord
    expected_unit: str | None = None  # ordinal turns: the previous answer's refers_to-th citation
    top3: bool | None = None  # right task among the first three citations (ordinal: first citation = expected)


class KindScores(_Model):
    turns: int
    top3: Rate
    answerable_none: Rate
    oos_full: Rate
    unresolvable_ordinals: int = 0  # the previous answer cited fewer units than refers_to (scored 0)


class ConversationResults(_Model):
    status: str  # "run" or "skipped"
    note: str | None = None
    conversations: int = 0
    turns: int = 0
    followups: KindScores | None = None  # every turn after the first
    by_kind: dict[str, KindScores] = Field(default_factory=dict)
    by_lang: dict[str, KindScores] = Field(default_factory=dict)  # follow-ups only
    per_turn: list[TurnResult] = Field(default_factory=list)


# --- the whole run --------------------------------------------------------------------------------
class Percentiles(_Model):
    p50: float
    p95: float
    mean: float
    n: int


class Latency(_Model):
    configuration: str
    cold_query_cache: bool
    retrieval: dict[str, Percentiles]
    answers: dict[str, Percentiles] = Field(default_factory=dict)


class PerQuery(_Model):
    split: str
    type: str
    lang: str
    coverage: str
    search_coverage: str
    query: str
    top10: list[str]
    metrics: dict[str, float] | None = None
    answer: AnswerRecord | None = None


class EvalResults(_Model):
    schema_version: int = SCHEMA_VERSION
    created_at: str
    command: str
    split: str
    limit: int | None
    dataset: DatasetInfo
    system: SystemInfo
    retrieval: RetrievalResults
    coverage: CoverageResults
    answers: AnswerResults
    conversations: ConversationResults
    latency_ms: Latency
    gated: dict[str, float | None]  # the floor metrics of eval/floors.json, by name
    per_query: dict[str, PerQuery]
    notes: list[str] = Field(default_factory=list)
