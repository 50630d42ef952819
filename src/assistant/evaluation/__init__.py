"""The benchmark harness: question sets, ranx metrics, coverage, answers, conversations, reports.

Command line::

    policy-assistant eval [--split blind|dev|all] [--retrievers bm25,use,e5] [--no-ablation]
                          [--no-answers] [--output DIR] [--limit N] [--baseline]

``--split`` defaults to ``blind`` (``eval/blind/``: 300 questions and 48 conversations written
blind, never tuned on); ``dev`` is ``eval/questions.jsonl`` and ``eval/dev/``. Each run writes
``<DIR or eval/reports>/<UTC timestamp>/`` with ``report.md``, ``results.json`` (the
:class:`~assistant.evaluation.results.EvalResults` model: dataset sha256s, models, library
versions, git commit, every metric, per-query and per-turn records), ``run.trec``/``qrels.trec``
(trec_eval format, the default hybrid), ``runs/<configuration>.trec`` (ablation),
``retrievers.png``, ``breakdown.png`` and ``worst.md``. ``--baseline`` (whole blind split only)
also rewrites ``eval/BASELINE.md``. ``--limit N`` takes N questions round-robin over types and
ceil(N/4) conversations (smoke runs; not comparable with full runs).

Library entry point: ``run_eval(engine, settings, EvalOptions(...))`` then
``report.write_report(run, folder)``. The regression gate (``tests/test_regression_gate.py``)
checks the gated metrics (``floors.GATED``) of the blind split against ``eval/floors.json``.
"""

from assistant.evaluation.dataset import (
    Conversation,
    DatasetError,
    EvalQuestion,
    build_qrels,
    load_conversations,
    load_questions,
    sample,
)
from assistant.evaluation.floors import GATED, check_floors, load_floors
from assistant.evaluation.metrics import MAIN_METRIC, RETRIEVAL_METRICS, per_query_scores, retrieval_metrics
from assistant.evaluation.results import EvalResults
from assistant.evaluation.runner import EvalOptions, EvalRun, run_eval

__all__ = [
    "GATED",
    "MAIN_METRIC",
    "RETRIEVAL_METRICS",
    "Conversation",
    "DatasetError",
    "EvalOptions",
    "EvalQuestion",
    "EvalResults",
    "EvalRun",
    "build_qrels",
    "check_floors",
    "load_conversations",
    "load_floors",
    "load_questions",
    "per_query_scores",
    "retrieval_metrics",
    "run_eval",
    "sample",
]
