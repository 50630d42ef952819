"""Request bodies of the HTTP API, and documentation-only response shapes.

Requests are strict (unknown fields are rejected) so that a client typo such as
``"topk"`` fails loudly instead of being silently ignored. The response models only
document the JSON in ``/docs``; the routes return the core objects' ``to_json()``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

MAX_QUESTION_CHARS = 2_000
MAX_ANSWER_CHARS = 50_000
MAX_REASON_CHARS = 2_000
MIN_TOP_K, MAX_TOP_K = 1, 50
MAX_DOCUMENT_CHARS = 100
DOCUMENT_DESCRIPTION = ("Search only this document of the library (its number, e.g. 厦府〔2026〕88号); "
                        "an unknown number is a 422.")


def check_question(value: str, field: str = "question") -> str:
    """Strip a question and refuse empty or overlong ones with a message for people."""
    text = value.strip()
    if not text:
        raise PydanticCustomError("empty_text", "'{field}' must not be empty", {"field": field})
    if len(text) > MAX_QUESTION_CHARS:
        raise PydanticCustomError(
            "text_too_long", "'{field}' is too long: {length} characters, at most {limit} allowed",
            {"field": field, "length": len(text), "limit": MAX_QUESTION_CHARS},
        )
    return text


def _has_unpaired_surrogate(value: Any) -> bool:
    """JSON's ``\\ud800`` escapes decode to text that cannot be stored, encoded or sent back."""
    stack = [value]
    while stack:  # iterative: parsed JSON may nest up to the parser's limit
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
    return False


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @field_validator("*", mode="after")
    @classmethod
    def _valid_text(cls, value: Any, info: ValidationInfo) -> Any:
        if _has_unpaired_surrogate(value):
            raise PydanticCustomError("invalid_text", "'{field}' contains an unpaired UTF-16 surrogate (\\ud800-"
                                      "\\udfff), which is not valid Unicode text", {"field": info.field_name})
        return value


class SearchRequest(StrictModel):
    query: str = Field(..., description="The question or keywords, Chinese or English.",
                       examples=["Can foreign companies run elderly care homes?"])
    top_k: int = Field(10, description="How many results (1-50).",
                       json_schema_extra={"minimum": MIN_TOP_K, "maximum": MAX_TOP_K})
    document: str | None = Field(None, min_length=1, max_length=MAX_DOCUMENT_CHARS,
                                 description=DOCUMENT_DESCRIPTION, examples=["厦府〔2026〕88号"])

    @field_validator("query")
    @classmethod
    def _query(cls, value: str) -> str:
        return check_question(value, "query")

    @field_validator("top_k")
    @classmethod
    def _top_k(cls, value: int) -> int:
        if not MIN_TOP_K <= value <= MAX_TOP_K:
            raise PydanticCustomError("out_of_range", "'top_k' must be between {low} and {high}, not {value}",
                                      {"low": MIN_TOP_K, "high": MAX_TOP_K, "value": value})
        return value


class AskRequest(StrictModel):
    question: str = Field(..., description="The question, Chinese or English.", examples=["外资能办医院吗？"])
    conversation_id: str | None = Field(None, max_length=128, description="Continue this conversation.")
    document: str | None = Field(None, min_length=1, max_length=MAX_DOCUMENT_CHARS,
                                 description=DOCUMENT_DESCRIPTION, examples=["厦府〔2026〕88号"])

    @field_validator("question")
    @classmethod
    def _question(cls, value: str) -> str:
        return check_question(value)


class FeedbackRequest(StrictModel):
    rating: Literal["up", "down"]
    reason: str | None = Field(None, max_length=MAX_REASON_CHARS)
    question: str
    answer: str = Field(..., min_length=1, max_length=MAX_ANSWER_CHARS)
    citations: list[Any] = Field(default_factory=list, max_length=100)
    conversation_id: str | None = Field(None, max_length=128)

    @field_validator("question")
    @classmethod
    def _question(cls, value: str) -> str:
        return check_question(value)


# --- documentation of responses -------------------------------------------------------------
class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class ErrorBody(_Open):
    error: str = Field(..., description="What went wrong, for people.")
    detail: list[dict[str, Any]] | None = Field(None, description="Validation details, when any.")


class SearchHit(_Open):
    task: int | None
    section: str
    text: str
    text_en: str | None
    score: float


class SearchBody(_Open):
    query: str
    in_scope: bool
    coverage: Literal["full", "partial", "none"] = Field(..., description="How far the plan covers the question.")
    results: list[SearchHit]


class CitationBody(_Open):
    task: int | None
    section: str
    text: str
    text_en: str | None


class AskBody(_Open):
    answer: str = Field(..., description="Markdown in the language of the question, with inline citations.")
    citations: list[CitationBody]
    in_scope: bool
    coverage: Literal["full", "partial", "none"] = Field(..., description="How far the plan covers the question.")
    lang: Literal["zh", "en"]
    conversation_id: str
    conversation_reset: bool = Field(False, description="The given conversation_id was unknown or expired: this "
                                     "answer starts a new conversation (no earlier turns were used).")


class TaskBody(_Open):
    task: int
    category_no: int
    category: str
    category_en: str
    text: str
    text_en: str
    differentiated: bool


class CategoryBody(_Open):
    number: int
    label: str
    title: str
    title_en: str
    tasks: list[int]


class FeedbackStored(_Open):
    id: int
    status: str


class HealthBody(_Open):
    status: str
    doc_number: str
    index: dict[str, Any]
    embedders: list[Any]
