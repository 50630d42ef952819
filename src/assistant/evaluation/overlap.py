"""Set health: the overlap rule of ``eval/README.md``, re-implemented (a question that shares a run
of 6+ characters with the Chinese text of its gold task is copied, not asked)."""

from __future__ import annotations

from collections.abc import Sequence

from assistant.evaluation.dataset import EvalQuestion
from assistant.ingest.models import Corpus


def shares_run(question: str, text: str, k: int = 6) -> bool:
    """Whether ``question`` shares a run of ``k`` consecutive characters with ``text`` (raw, unnormalised)."""
    return any(question[i:i + k] in text for i in range(len(question) - k + 1))


def overlapping(question: EvalQuestion, corpus: Corpus, min_grade: int = 1, k: int = 6) -> bool:
    """The overlap rule for one question: any k-run shared with the Chinese text of a gold task."""
    texts = [task.text for n in question.gold_tasks(min_grade) if (task := corpus.task(n)) is not None]
    return any(shares_run(question.question, text, k) for text in texts)


def overlap_rates(questions: Sequence[EvalQuestion], corpus: Corpus, min_grade: int = 1) -> dict[str, dict]:
    """Overlapping questions per split present: ``{"dev": {"n": .., "overlapping": .., "rate": .., "ids": [..]}}``."""
    result: dict[str, dict] = {}
    for split in sorted({q.split for q in questions}):
        group = [q for q in questions if q.split == split]
        hits = [q.id for q in group if overlapping(q, corpus, min_grade)]
        result[split] = {"n": len(group), "overlapping": len(hits), "rate": len(hits) / len(group), "ids": hits}
    return result
