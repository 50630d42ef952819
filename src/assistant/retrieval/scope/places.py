"""Places the plan does not cover: a question about another city's policy is out of scope.

The plan is Xiamen's. A question naming Shanghai, Shenzhen or Hainan asks about another
locality's rules, however close its topic is to a task; retrieval alone cannot tell, since the
topic words match. The gazetteer (``ingest/annotations/vocabulary/gazetteer.json``) lists the
provincial-level divisions of China and its larger cities; a name counts only when the plan's own
text (Chinese or English) never mentions it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from assistant.ingest.vocabulary import Gazetteer


class PlaceCheck:
    """Finds gazetteer places in a question that the plan's text never names."""

    def __init__(self, gazetteer: Gazetteer, plan_texts: Iterable[str]) -> None:
        text = "\n".join(plan_texts)
        unknown = [p for p in gazetteer.places
                   if p.zh not in text and not re.search(rf"\b{re.escape(p.en)}\b", text, re.IGNORECASE)]
        parts = [re.escape(p.zh) for p in unknown] + [rf"\b{re.escape(p.en)}\b" for p in unknown]
        self._pattern = re.compile("|".join(parts), re.IGNORECASE) if parts else None

    def unknown(self, question: str) -> set[str]:
        """Places named in ``question`` that the plan does not mention."""
        if self._pattern is None:
            return set()
        return {m.group(0).lower() for m in self._pattern.finditer(question)}
