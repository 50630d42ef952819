"""Gradio entry point: ``python ui/app.py`` serves the chat UI alone (no JSON API) on 127.0.0.1.

Configuration comes from the ``ASSISTANT_*`` environment variables (host, port, index,
feedback database). For the API and the UI together use ``policy-assistant serve``.
"""

from __future__ import annotations

import logging

from assistant.config import get_settings
from assistant.retrieval.engine import SearchEngine
from assistant.state import open_feedback_store
from assistant.web.gradio_app import build_ui, ui_css, ui_theme


def main() -> None:
    """Load the engine and the assistant once, then launch the UI (never with a share link)."""
    from assistant.answer.chat import Assistant

    logging.basicConfig(level=logging.INFO)
    settings = get_settings()
    engine = SearchEngine.load(settings, rebuild="if_needed")
    store = open_feedback_store(settings)  # PostgreSQL with ASSISTANT_STATE_DSN, else the SQLite file
    demo = build_ui(Assistant(engine, settings), engine, store, settings)
    demo.launch(server_name=settings.host, server_port=settings.port, share=False, show_error=False,
                theme=ui_theme(), css=ui_css(), footer_links=["settings"], ssr_mode=False)


if __name__ == "__main__":
    main()
