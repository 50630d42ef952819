"""Conversations: follow-up resolution, bounded per-conversation memory, answers and streaming.

``Assistant`` is what the API, the web UI and the CLI call. It holds no model of its own: it
resolves the question against the conversation, searches with the shared ``SearchEngine``,
composes the extractive answer and, when an LLM is configured, tries the generative one.
"""

from __future__ import annotations

import re
import secrets
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Generator
from dataclasses import dataclass, field

from assistant.answer.compose import compose_answer, relevance_for
from assistant.answer.followup import resolve_followup
from assistant.answer.types import Answer
from assistant.config import Settings
from assistant.retrieval.engine import SearchEngine
from assistant.text import detect_language

__all__ = ["Assistant", "resolve_followup"]

SEARCH_TOP_K = 10


@dataclass
class _Conversation:
    turns: deque[tuple[str, str]]
    touched: float = field(default_factory=time.monotonic)


class ConversationStore:
    """Conversations by id, bounded by count (LRU), age (TTL) and turns kept; thread-safe."""

    def __init__(self, max_conversations: int, ttl_seconds: float, max_turns: int) -> None:
        self.max_conversations = max_conversations
        self.ttl_seconds = ttl_seconds
        self.max_turns = max_turns
        self._items: OrderedDict[str, _Conversation] = OrderedDict()
        self._lock = threading.Lock()

    def _expire(self, now: float) -> None:
        # Entries are kept in touch order, so the stale ones are at the front.
        while self._items:
            oldest_id, oldest = next(iter(self._items.items()))
            if now - oldest.touched <= self.ttl_seconds:
                break
            del self._items[oldest_id]

    def _get(self, conversation_id: str | None, now: float) -> _Conversation | None:
        self._expire(now)
        if conversation_id is None:
            return None
        return self._items.get(conversation_id)

    def open(self, conversation_id: str | None) -> tuple[str, list[dict]]:
        """The id to use and the prior turns; a new random id when none is given or it is unknown."""
        now = time.monotonic()
        with self._lock:
            conversation = self._get(conversation_id, now)
            if conversation is None:
                conversation_id = secrets.token_urlsafe(12)
                conversation = _Conversation(deque(maxlen=self.max_turns), now)
                self._items[conversation_id] = conversation
                while len(self._items) > self.max_conversations:
                    self._items.popitem(last=False)
            conversation.touched = now
            self._items.move_to_end(conversation_id)
            return conversation_id, _as_messages(conversation.turns)

    def append(self, conversation_id: str, question: str, answer: str) -> None:
        now = time.monotonic()
        with self._lock:
            conversation = self._get(conversation_id, now)
            if conversation is None:  # evicted meanwhile: start it again under the same id
                conversation = _Conversation(deque(maxlen=self.max_turns), now)
                self._items[conversation_id] = conversation
                while len(self._items) > self.max_conversations:
                    self._items.popitem(last=False)
            conversation.turns.append((question, answer))
            conversation.touched = now
            self._items.move_to_end(conversation_id)

    def history(self, conversation_id: str) -> list[dict]:
        with self._lock:
            conversation = self._get(conversation_id, time.monotonic())
            return _as_messages(conversation.turns) if conversation else []

    def __len__(self) -> int:
        with self._lock:
            self._expire(time.monotonic())
            return len(self._items)

    def __contains__(self, conversation_id: object) -> bool:
        with self._lock:
            self._expire(time.monotonic())
            return conversation_id in self._items


def _as_messages(turns: deque[tuple[str, str]]) -> list[dict]:
    messages: list[dict] = []
    for question, answer in turns:
        messages.append({"role": "user", "content": question})
        messages.append({"role": "assistant", "content": answer})
    return messages


_CHUNK = re.compile(r".+?(?:[。！？!?]|\.(?=\s)|\n\n|$)", re.DOTALL)


def chunk_markdown(markdown: str) -> list[str]:
    """Sentence- and paragraph-sized pieces whose concatenation is the whole answer."""
    pieces = [m.group(0) for m in _CHUNK.finditer(markdown) if m.group(0)]
    return pieces if "".join(pieces) == markdown else [markdown]


class Assistant:
    """Cited answers in a conversation, over one shared :class:`SearchEngine`."""

    def __init__(self, engine: SearchEngine, settings: Settings | None = None) -> None:
        self.engine = engine
        self.settings = settings or engine.settings
        self.conversations = ConversationStore(self.settings.conversation_max,
                                               self.settings.conversation_ttl_seconds,
                                               self.settings.conversation_turns)

    def warm_up(self) -> None:
        """Load what the first question would otherwise wait for (jieba, its tagger, each engine)."""
        resolve_followup("那医院呢？", [{"role": "user", "content": "外资能办养老院吗？"}])
        self.engine.warm_up()

    def new_conversation(self) -> str:
        """A fresh conversation id (useful before :meth:`stream`, whose chunks carry no id)."""
        conversation_id, _ = self.conversations.open(None)
        return conversation_id

    def history(self, conversation_id: str) -> list[dict]:
        """Prior turns as ``[{"role": "user"|"assistant", "content": ...}]``; [] for unknown ids."""
        return self.conversations.history(conversation_id)

    def ask(self, question: str, conversation_id: str | None = None) -> Answer:
        """Answer ``question`` in the conversation (a new one when the id is missing or unknown)."""
        started = time.perf_counter()
        question = (question or "").strip()
        if not question:
            raise ValueError("the question is empty")
        conversation_id, history = self.conversations.open(conversation_id)
        resolved = resolve_followup(question, history)
        lang = detect_language(question)
        corpus = self.engine.corpus
        query = relevance_for(corpus).expand_query(resolved, detect_language(resolved))
        result = self.engine.search(query, top_k=SEARCH_TOP_K)
        composed_at = time.perf_counter()
        markdown, citations, mode = compose_answer(result, corpus, resolved, lang)
        notice: str | None = None
        timings = dict(result.timings_ms)
        timings["compose"] = (time.perf_counter() - composed_at) * 1000
        if self.settings.llm_base_url and mode == "extractive":
            markdown, citations, mode, notice = self._generate(result, resolved, lang, markdown, citations, timings)
        in_scope = mode != "out_of_scope" and not (mode == "lookup" and not result.lookup.valid)
        self.conversations.append(conversation_id, question, markdown)
        timings["answer_total"] = (time.perf_counter() - started) * 1000
        return Answer(answer=markdown, citations=citations, in_scope=in_scope, lang=lang,
                      conversation_id=conversation_id, mode=mode, notice=notice,
                      resolved_query=resolved if resolved != question else None, timings_ms=timings)

    def _generate(self, result, question: str, lang: str, markdown: str, citations: list,
                  timings: dict[str, float]) -> tuple[str, list, str, str | None]:
        """The generative answer, or the extractive one marked as a fallback."""
        from assistant.answer.llm import GenerationError, generate_answer

        started = time.perf_counter()
        try:
            generated, generated_citations, notice = generate_answer(result, self.engine.corpus, question, lang,
                                                                     self.settings)
            return generated, generated_citations, "generative", notice
        except GenerationError as exc:
            notice = (f"生成式回答不可用（{exc}），以下为摘录式回答。" if lang == "zh"
                      else f"The generative answer was unavailable ({exc}); showing the extractive answer.")
            return markdown, citations, "fallback", notice
        finally:
            timings["llm"] = (time.perf_counter() - started) * 1000

    def stream(self, question: str, conversation_id: str | None = None) -> Generator[str, None, Answer]:
        """Growing markdown for progressive display: each item is the whole answer so far.

        The last item is the complete answer. The generator's return value (``StopIteration.value``,
        or ``answer = yield from assistant.stream(...)``) is the :class:`Answer` with citations and
        conversation id.
        """
        answer = self.ask(question, conversation_id)
        shown = ""
        for piece in chunk_markdown(answer.answer):
            shown += piece
            yield shown
        return answer
