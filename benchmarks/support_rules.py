"""The support rules (which ranked units an answer cites) measured on the dev split only.

For each variant of the constants in ``assistant.retrieval.rerank`` (JSON objects on the command
line), prints: the share of dev questions with task gold whose first three support units hold a
grade-2 gold unit, the mean share of support units that are gold (citation precision), and the mean
share of grade-2 gold units cited for multi-task questions. The blind split is never read.

    python benchmarks/support_rules.py '{}' '{"CLOSE_SCORE": 0.85}'
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import assistant.retrieval.rerank as rules
from assistant.config import Settings
from assistant.evaluation.dataset import load_questions
from assistant.retrieval.engine import SearchEngine


def main(variants: list[dict]) -> None:
    settings = Settings()
    engine = SearchEngine.load(settings, rebuild="never")
    questions = [q for q in load_questions(settings.eval_path / "questions.jsonl")
                 if q.relevance and q.type != "followup"]
    for variant in variants:
        for name, value in variant.items():
            setattr(rules, name, value)
        top3, precision, multi = [], [], []
        for question in questions:
            support = [h.unit_id for h in engine.search(question.question).support]
            gold2 = {d for d, g in question.relevance.items() if g == 2}
            top3.append(bool(gold2 & set(support[:3])))
            if support:
                precision.append(len(set(support) & set(question.relevance)) / len(support))
            if question.type == "multi_task":
                multi.append(len(gold2 & set(support)) / len(gold2))
        print(f"{json.dumps(variant)}: top-3 {sum(top3) / len(top3):.4f}, citation precision "
              f"{sum(precision) / len(precision):.4f}, multi-task recall {sum(multi) / len(multi):.3f}")


if __name__ == "__main__":
    main([json.loads(a) for a in sys.argv[1:]] or [{}])
