"""The benchmark harness: question set, ranx metrics, ablation, scope, answers, reports.

Entry point: ``run_eval(engine, settings, EvalOptions(...))`` then ``write_report(run, folder)``;
the CLI is ``policy-assistant eval``.
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
