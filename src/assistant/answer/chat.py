"""Conversations: answers in a conversation kept in the shared store, and streaming.

``Assistant`` is what the API, the web UI and the CLI call. It holds no model of its own: it loads
the conversation's earlier turns from the conversation store (SQLite by default, PostgreSQL when
``ASSISTANT_STATE_DSN`` is set; see :mod:`assistant.state`), lets the search pipeline resolve the
question against them (``engine.search(..., context=turns)``), composes the extractive answer and,
when an LLM is configured, tries the generative one. Then it stores the turn as data (question,
resolved query, cited unit ids, coverage, language): no answer text is ever parsed back.

Because the turns live in the store and not in the process, any API worker can answer any turn of
a conversation, and a restart does not forget it. An unknown or expired id starts a fresh
conversation and says so (``Answer.conversation_reset``); a store that cannot be used raises
:class:`assistant.state.ConversationUnavailable` (the API answers 503), never a silent new one.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Generator

from assistant.answer.compose import compose_answer
from assistant.answer.types import Answer, Citation
from assistant.config import Settings
from assistant.ingest.library import NAMESPACE, Library
from assistant.retrieval.engine import SearchEngine
from assistant.state import (
    ConversationNotFound,
    ConversationStore,
    TurnRecord,
    open_conversation_store,
)
from assistant.text import detect_language

__all__ = ["Assistant", "chunk_markdown", "unit_ids"]

log = logging.getLogger(__name__)

SEARCH_TOP_K = 10

_CHUNK = re.compile(r".+?(?:[。！？!?]|\.(?=\s)|\n\n|$)", re.DOTALL)


def chunk_markdown(markdown: str) -> list[str]:
    """Sentence- and paragraph-sized pieces whose concatenation is the whole answer."""
    pieces = [m.group(0) for m in _CHUNK.finditer(markdown) if m.group(0)]
    return pieces if "".join(pieces) == markdown else [markdown]


def unit_ids(citations: list[Citation], library: Library | None = None) -> list[str]:
    """The index unit ids ("task:N", "section:ID"; namespaced for a document other than the library's
    primary one) of ``citations``, in citation order, without repeats."""
    ids: list[str] = []
    primary = library.primary.number if library is not None else None
    for citation in citations:
        number = (citation.document or {}).get("number")
        prefix = f"{number}{NAMESPACE}" if number and primary and number != primary else ""
        if citation.task is not None:
            unit = f"{prefix}task:{citation.task}"
        elif citation.section_id:
            unit = f"{prefix}section:{citation.section_id}"
        else:
            continue
        if unit not in ids:
            ids.append(unit)
    return ids


class Assistant:
    """Cited answers in a conversation, over one shared :class:`SearchEngine` and conversation store."""

    def __init__(self, engine: SearchEngine, settings: Settings | None = None,
                 store: ConversationStore | None = None) -> None:
        self.engine = engine
        self.settings = settings or engine.settings
        self.store = store if store is not None else open_conversation_store(self.settings)

    def warm_up(self) -> None:
        """Load what the first question would otherwise wait for (each engine; the store's schema)."""
        self.store.count()
        self.engine.warm_up()

    def close(self) -> None:
        self.store.close()

    def new_conversation(self) -> str:
        """A fresh conversation id (useful before :meth:`stream`, whose chunks carry no id)."""
        return self.store.create().id

    def history(self, conversation_id: str) -> list[TurnRecord]:
        """The conversation's kept turns, oldest first; [] for unknown or expired ids."""
        conversation = self.store.get(conversation_id)
        return list(conversation.turns) if conversation is not None else []

    def _open(self, conversation_id: str | None) -> tuple[str, list[TurnRecord], bool]:
        """The id to answer in, its turns, and whether a given id was unknown (a fresh conversation)."""
        if conversation_id:
            conversation = self.store.get(conversation_id)
            if conversation is not None:
                return conversation.id, list(conversation.turns), False
        return self.store.create().id, [], bool(conversation_id)

    def _remember(self, conversation_id: str, turn: TurnRecord) -> tuple[str, bool]:
        """Store the turn; when the conversation expired or was evicted meanwhile, in a fresh one."""
        try:
            self.store.append(conversation_id, turn)
            return conversation_id, False
        except ConversationNotFound:
            log.info("conversation %s ended while answering; the turn starts a new one", conversation_id)
            fresh = self.store.create().id
            self.store.append(fresh, turn)
            return fresh, True

    def ask(self, question: str, conversation_id: str | None = None, document: str | None = None) -> Answer:
        """Answer ``question`` in the conversation (a new one when the id is missing, unknown or expired);
        ``document`` (a document number) answers from that document only (unknown: ``UnknownDocument``)."""
        started = time.perf_counter()
        question = (question or "").strip()
        if not question:
            raise ValueError("the question is empty")
        if document is not None:
            self.engine.library.require(document)  # before a conversation is opened for nothing
        conversation_id, turns, reset = self._open(conversation_id)
        result = self.engine.search(question, top_k=SEARCH_TOP_K, context=turns, document=document)
        # a question typed in pinyin is a Chinese question: answer in the language it was read as
        lang = result.lang if result.analysis.pinyin else detect_language(question)
        resolved = result.resolved_query or question
        composed_at = time.perf_counter()
        markdown, citations, mode, related = compose_answer(result, self.engine.library, resolved, lang)
        notice: str | None = None
        timings = dict(result.timings_ms)
        timings["compose"] = (time.perf_counter() - composed_at) * 1000
        if self.settings.llm_base_url and mode in ("extractive", "partial"):
            markdown, citations, mode, notice = self._generate(result, resolved, lang, markdown, citations, timings)
            if mode == "generative":
                related = []  # a generated answer lists no related units
        stored_at = time.perf_counter()
        turn = TurnRecord(question, resolved, unit_ids(citations, self.engine.library), result.coverage, lang,
                          related_units=related)
        conversation_id, ended = self._remember(conversation_id, turn)
        timings["store"] = (time.perf_counter() - stored_at) * 1000
        timings["answer_total"] = (time.perf_counter() - started) * 1000
        return Answer(answer=markdown, citations=citations, in_scope=result.in_scope, coverage=result.coverage,
                      lang=lang, conversation_id=conversation_id, mode=mode, notice=notice, related=related,
                      resolved_query=resolved if resolved != question else None,
                      conversation_reset=reset or ended, timings_ms=timings)

    def _generate(self, result, question: str, lang: str, markdown: str, citations: list,
                  timings: dict[str, float]) -> tuple[str, list, str, str | None]:
        """The generative answer, or the extractive one marked as a fallback."""
        from assistant.answer.llm import GenerationError, generate_answer

        started = time.perf_counter()
        try:
            generated, generated_citations, notice = generate_answer(result, self.engine.library, question, lang,
                                                                     self.settings)
            return generated, generated_citations, "generative", notice
        except GenerationError as exc:
            notice = (f"生成式回答不可用（{exc}），以下为摘录式回答。" if lang == "zh"
                      else f"The generative answer was unavailable ({exc}); showing the extractive answer.")
            return markdown, citations, "fallback", notice
        finally:
            timings["llm"] = (time.perf_counter() - started) * 1000

    def stream(self, question: str, conversation_id: str | None = None,
               document: str | None = None) -> Generator[str, None, Answer]:
        """Growing markdown for progressive display: each item is the whole answer so far.

        The last item is the complete answer. The generator's return value (``StopIteration.value``,
        or ``answer = yield from assistant.stream(...)``) is the :class:`Answer` with citations and
        conversation id.
        """
        answer = self.ask(question, conversation_id, document)
        shown = ""
        for piece in chunk_markdown(answer.answer):
            shown += piece
            yield shown
        return answer
