"""Shared state (conversations, feedback): SQLite by default, PostgreSQL when ``ASSISTANT_STATE_DSN`` is set.

The factories are the one place that picks the engine, so callers only see the interfaces. The
PostgreSQL modules are imported only when a DSN is configured: psycopg is an optional extra.
"""

from __future__ import annotations

from typing import Any

from assistant.state.conversations import (
    Conversation,
    ConversationNotFound,
    ConversationStore,
    ConversationUnavailable,
    SqliteConversationStore,
    TurnRecord,
)

__all__ = [
    "Conversation",
    "ConversationNotFound",
    "ConversationStore",
    "ConversationUnavailable",
    "SqliteConversationStore",
    "TurnRecord",
    "open_conversation_store",
    "open_feedback_store",
]


def open_conversation_store(settings: Any) -> ConversationStore:
    """PostgreSQL at ``settings.state_dsn`` when set, else SQLite at ``settings.conversations_path``."""
    bounds = {"max_conversations": settings.conversation_max, "ttl_seconds": settings.conversation_ttl_seconds,
              "max_turns": settings.conversation_turns,
              "busy_timeout": getattr(settings, "feedback_busy_timeout", 5.0)}
    if getattr(settings, "state_dsn", None):
        from assistant.state.postgres import PostgresConversationStore

        return PostgresConversationStore(settings.state_dsn, **bounds)
    return SqliteConversationStore(settings.conversations_path, **bounds)


def open_feedback_store(settings: Any) -> Any:
    """The feedback store on the same engine as conversations (same public methods either way)."""
    if getattr(settings, "state_dsn", None):
        from assistant.state.feedback_pg import PostgresFeedbackStore

        return PostgresFeedbackStore.from_settings(settings)
    from assistant.feedback import FeedbackStore

    return FeedbackStore.from_settings(settings)
