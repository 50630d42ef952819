"""The leakage guard between the task knowledge and every question set that measures or calibrates.

Example questions in the task knowledge are document expansion: they must not restate a question of
the eval set (dev or blind), its conversations or the calibration set, or the measurement would
reward memorising it. Measure: Jaccard similarity of the character-trigram sets of the two texts
after NFKC, lower-casing and removing everything but letters and digits. Threshold: 0.6 (two
questions that share 60% of their trigrams are the same question reworded at most lightly;
independently written questions on the same task sit at a median of 0.17 and 0.35 at the 90th
percentile, measured when the guard was written).
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterable
from pathlib import Path

THRESHOLD = 0.6
_NOT_WORD = re.compile(r"[\W_]+")


def trigrams(text: str) -> frozenset[str]:
    normal = _NOT_WORD.sub("", unicodedata.normalize("NFKC", text).lower())
    return frozenset(normal[i:i + 3] for i in range(max(len(normal) - 2, 1)))


def similarity(a: frozenset[str], b: frozenset[str]) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


def measured_questions(eval_dir: Path) -> list[str]:
    """Every question of the eval set (dev and blind, with conversation turns) and the calibration set."""
    questions: list[str] = []
    for path in (eval_dir / "questions.jsonl", eval_dir / "calibration.jsonl", eval_dir / "dev" / "questions.jsonl",
                 eval_dir / "dev" / "conversations.jsonl", eval_dir / "blind" / "questions.jsonl",
                 eval_dir / "blind" / "conversations.jsonl"):
        if not path.exists():
            continue
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                row = json.loads(line)
                questions += [t["question"] for t in row.get("turns", [])] or [row["question"]]
                questions += [t["content"] for t in row.get("history", []) if t.get("role") == "user"]
    return questions


def leaks(examples: Iterable[tuple[str, str]], questions: Iterable[str],
          threshold: float = THRESHOLD) -> list[tuple[str, str, str, float]]:
    """(unit, example, measured question, similarity) for every example at or above ``threshold``."""
    measured = [(q, trigrams(q)) for q in questions]
    found = []
    for unit, example in examples:
        grams = trigrams(example)
        best = max(((q, similarity(grams, g)) for q, g in measured), key=lambda x: x[1], default=("", 0.0))
        if best[1] >= threshold:
            found.append((unit, example, best[0], round(best[1], 3)))
    return found
