"""How much the earlier turn's citations should weigh in fusion for a follow-up (dev split only).

Each dev follow-up's history is replayed through the pipeline (the assistant turns' citations
[第N项] / [Task N] become the stored cited units, as the conversation store would hold them), then
the follow-up is searched with ``followup_context_weight`` set to each value given; prints how many
follow-ups cite a grade-2 gold unit among their first three citations. The blind split is never read.

    python benchmarks/followup_context.py 0 0.1 0.25 0.5
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from assistant.config import Settings
from assistant.evaluation.dataset import load_questions
from assistant.retrieval.engine import SearchEngine

_CITATION = re.compile(r"\[\s*(?:第\s*(\d{1,4})\s*项|Task\s+(\d{1,4}))\s*\]", re.IGNORECASE)


@dataclass(frozen=True)
class Turn:
    question: str
    resolved_query: str
    cited_units: list[str]
    lang: str


def replay(engine: SearchEngine, history) -> list[Turn]:
    turns: list[Turn] = []
    for i in range(0, len(history), 2):
        user = history[i].content
        answer = history[i + 1].content if i + 1 < len(history) else ""
        units = list(dict.fromkeys(f"task:{m.group(1) or m.group(2)}" for m in _CITATION.finditer(answer)))
        result = engine.search(user, context=turns)
        turns.append(Turn(user, result.resolved_query or user, units, result.lang))
    return turns


def main(weights: list[float]) -> None:
    settings = Settings()
    questions = [q for q in load_questions(settings.eval_path / "questions.jsonl")
                 if q.type == "followup" and q.answerable]
    for weight in weights:
        engine = SearchEngine.load(settings.model_copy(update={"followup_context_weight": weight}), rebuild="never")
        right = 0
        for question in questions:
            result = engine.search(question.question, context=replay(engine, question.history))
            cited = [h.unit_id for h in result.support][:3]
            right += bool({d for d, g in question.relevance.items() if g == 2} & set(cited))
        print(f"followup_context_weight {weight}: {right}/{len(questions)} follow-ups cite a gold unit in their "
              f"first three citations ({right / len(questions):.3f})")
        engine.close()


if __name__ == "__main__":
    main([float(w) for w in sys.argv[1:]] or [0.0, 0.1, 0.25])
