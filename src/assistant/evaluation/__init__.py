"""The benchmark harness: question set, ranx metrics, ablation, scope, answers, reports.

Command line::

    policy-assistant eval [--split dev|test|all] [--retrievers bm25,use,e5] [--no-ablation]
                          [--no-answers] [--output DIR] [--limit N] [--baseline]

``--split`` defaults to ``test``; tune on ``dev``. Each run writes ``<DIR or eval/reports>/<UTC
timestamp>/`` with ``report.md``, ``results.json`` (dataset sha256, models, library versions,
git commit, every metric and per-query scores), ``run.trec``/``qrels.trec`` (trec_eval format,
the default hybrid), ``runs/<configuration>.trec`` (ablation), ``retrievers.png``,
``breakdown.png`` and ``worst.md``. ``--baseline`` (whole test split only) also rewrites the
committed ``eval/BASELINE.md``. ``--limit N`` takes N questions round-robin over types (smoke
runs; not comparable with full runs).

To compare two versions, compare their ``results.json`` (stable metric keys) or load both
``run.trec`` files with ``ranx.Run.from_file`` and ``ranx.compare`` them on the same qrels.

Library entry point: ``run_eval(engine, settings, EvalOptions(...))`` then
``report.write_report(run, folder)``. The regression gate (``tests/test_regression_gate.py``)
checks nDCG@10 and Recall@5 of the test split against ``eval/floors.json``.
"""

from assistant.evaluation.dataset import DatasetError, EvalQuestion, build_qrels, load_questions, select
from assistant.evaluation.metrics import MAIN_METRIC, RETRIEVAL_METRICS, per_query_scores, retrieval_metrics
from assistant.evaluation.runner import EvalOptions, EvalRun, run_eval

__all__ = [
    "MAIN_METRIC",
    "RETRIEVAL_METRICS",
    "DatasetError",
    "EvalOptions",
    "EvalQuestion",
    "EvalRun",
    "build_qrels",
    "load_questions",
    "per_query_scores",
    "retrieval_metrics",
    "run_eval",
    "select",
]
