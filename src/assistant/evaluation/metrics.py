"""Metric computation. Retrieval maths is delegated to ``ranx``; this module only maps names.

Contracts are plain dicts, as in BEIR's ``evaluation.py``: qrels are
``{query_id: {doc_id: grade}}`` and runs ``{query_id: {doc_id: score}}``. Output keys are
stable (``NDCG@10``, ``Recall@5``, ``MRR@10``, ``MAP@10``) so reports compare across versions.

Relevance levels: nDCG@10 uses the graded labels (linear gain, Järvelin & Kekäläinen, as
trec_eval's ``ndcg_cut``); Recall, MRR and MAP count every doc of grade >= 1 as relevant.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

Run = dict[str, dict[str, float]]
Qrels = dict[str, dict[str, int]]

MAIN_METRIC = "NDCG@10"
# stable key -> ranx metric name
RETRIEVAL_METRICS: dict[str, str] = {
    "NDCG@10": "ndcg@10",
    "Recall@1": "recall@1",
    "Recall@3": "recall@3",
    "Recall@5": "recall@5",
    "Recall@10": "recall@10",
    "MRR@10": "mrr@10",
    "MAP@10": "map@10",
}


def _ranx_inputs(qrels: Mapping[str, Mapping[str, int]], run: Mapping[str, Mapping[str, float]], name: str):
    from ranx import Qrels as RanxQrels
    from ranx import Run as RanxRun

    missing = sorted(set(qrels) - set(run))
    if missing:
        raise ValueError(f"run has no results for queries {missing[:5]}")
    # The run is restricted to the judged queries: unjudged queries have no metric.
    sub_run = {q: {d: float(s) for d, s in run[q].items()} for q in qrels}
    sub_qrels = {q: {d: int(g) for d, g in docs.items()} for q, docs in qrels.items()}
    return RanxQrels.from_dict(sub_qrels), RanxRun.from_dict(sub_run, name=name)


@contextmanager
def _quiet() -> Iterator[None]:
    """Silence numba's type-safety chatter for queries with an empty result list."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*unsafe cast.*")
        yield


def per_query_scores(qrels: Mapping[str, Mapping[str, int]], run: Mapping[str, Mapping[str, float]],
                     metrics: Sequence[str] = tuple(RETRIEVAL_METRICS)) -> dict[str, dict[str, float]]:
    """``{query_id: {metric key: value}}`` for every judged query (ranx, ``return_mean=False``)."""
    from ranx import evaluate

    if not qrels:
        return {}
    ranx_qrels, ranx_run = _ranx_inputs(qrels, run, "run")
    names = [RETRIEVAL_METRICS[m] for m in metrics]
    with _quiet():
        evaluate(ranx_qrels, ranx_run, names, return_mean=False, make_comparable=True, save_results_in_run=True)
    return {q: {key: float(ranx_run.scores[RETRIEVAL_METRICS[key]][q]) for key in metrics} for q in qrels}


def retrieval_metrics(qrels: Mapping[str, Mapping[str, int]], run: Mapping[str, Mapping[str, float]],
                      metrics: Sequence[str] = tuple(RETRIEVAL_METRICS)) -> dict[str, float]:
    """Mean of each metric over the judged queries (ranx ``evaluate``); empty when nothing is judged."""
    from ranx import evaluate

    if not qrels:
        return {}
    ranx_qrels, ranx_run = _ranx_inputs(qrels, run, "run")
    names = [RETRIEVAL_METRICS[m] for m in metrics]
    with _quiet():
        scores = evaluate(ranx_qrels, ranx_run, names, make_comparable=True)
    if len(names) == 1:
        scores = {names[0]: scores}
    return {key: float(scores[RETRIEVAL_METRICS[key]]) for key in metrics}


def paired_test(qrels: Mapping[str, Mapping[str, int]], control: Mapping[str, Mapping[str, float]],
                treatment: Mapping[str, Mapping[str, float]], control_name: str, treatment_name: str,
                metric: str = MAIN_METRIC, n_permutations: int = 10_000, seed: int = 42) -> dict[str, Any]:
    """Paired significance of ``control`` vs ``treatment`` on per-query ``metric`` (ranx ``compare``).

    Reports the two-sided paired Student's t-test and Fisher's randomization test p-values,
    the means and the per-query win/tie/loss counts of ``control``. Student's t is exact and is
    the p-value to compare across versions; the randomization test is Monte-Carlo
    (``n_permutations``) and not bit-reproducible: ranx seeds only the calling thread while the
    permutations run on numba workers, so its p-value varies by a few thousandths between runs.
    """
    from ranx import compare

    result: dict[str, Any] = {"metric": metric, "control": control_name, "treatment": treatment_name,
                              "queries": len(qrels)}
    if len(qrels) < 2 or control_name == treatment_name:
        result["note"] = "not enough queries or identical configurations"
        return result
    ranx_qrels, run_a = _ranx_inputs(qrels, control, control_name)
    _, run_b = _ranx_inputs(qrels, treatment, treatment_name)
    name = RETRIEVAL_METRICS[metric]
    with _quiet():
        for test in ("student", "fisher"):
            report = compare(ranx_qrels, [run_a, run_b], [name], stat_test=test, n_permutations=n_permutations,
                             random_seed=seed, max_p=0.05, make_comparable=True)
            data = report.to_dict()
            result[test] = {"p_value": float(data[control_name]["comparisons"][treatment_name][name])}
            if test == "fisher":
                result[test]["n_permutations"] = n_permutations
                result[test]["seed"] = seed
            result["mean_control"] = float(data[control_name]["scores"][name])
            result["mean_treatment"] = float(data[treatment_name]["scores"][name])
            result["win_tie_loss"] = {k: int(v) for k, v in
                                      data[control_name]["win_tie_loss"][treatment_name][name].items()}
    return result


# --- scope: is the question covered by the plan? ------------------------------------------
def scope_metrics(gold_in_scope: Mapping[str, bool], predicted_in_scope: Mapping[str, bool]) -> dict[str, Any]:
    """Precision, recall and F1 of the out-of-scope flag (positive class = out of scope).

    ``confident_oos_rate`` is the share of out-of-scope questions answered as in scope;
    ``false_flag_rate`` the share of in-scope questions wrongly flagged (the issue's ≤ 5% floor).
    Undefined ratios (no positives predicted or none in the gold) are ``None``.
    """
    ids = list(gold_in_scope)
    tp = sum(1 for q in ids if not gold_in_scope[q] and not predicted_in_scope[q])
    fp = sum(1 for q in ids if gold_in_scope[q] and not predicted_in_scope[q])
    fn = sum(1 for q in ids if not gold_in_scope[q] and predicted_in_scope[q])
    tn = len(ids) - tp - fp - fn
    precision = tp / (tp + fp) if tp + fp else None
    recall = tp / (tp + fn) if tp + fn else None
    f1 = 2 * tp / (2 * tp + fp + fn) if 2 * tp + fp + fn else None
    out_of_scope = tp + fn
    return {"questions": len(ids), "out_of_scope": out_of_scope, "tp": tp, "fp": fp, "fn": fn, "tn": tn,
            "precision": precision, "recall": recall, "f1": f1,
            "confident_oos_rate": fn / out_of_scope if out_of_scope else None,
            "false_flag_rate": fp / (fp + tn) if fp + tn else None}


# --- answers --------------------------------------------------------------------------------
def citation_scores(cited: set[int], gold_any: set[int], gold_main: set[int]) -> tuple[float | None, float | None]:
    """Citation precision (cited tasks that are gold at grade >= 1) and recall (grade-2 tasks cited)."""
    precision = len(cited & gold_any) / len(cited) if cited else None
    recall = len(cited & gold_main) / len(gold_main) if gold_main else None
    return precision, recall


def fact_coverage(answer: str, facts: Sequence[Sequence[str]]) -> float | None:
    """Share of facts stated: a fact counts when any alternative occurs (case-insensitive substring)."""
    if not facts:
        return None
    text = answer.casefold()
    return sum(1 for fact in facts if any(alt.casefold() in text for alt in fact)) / len(facts)


def language_matches(answer_lang: str, question_lang: str) -> bool:
    """Answer language equals the question's; a mixed (Chinese + English words) question accepts zh."""
    expected = "zh" if question_lang == "mixed" else question_lang
    return answer_lang == expected


def mean(values: Sequence[float | None]) -> float | None:
    """Mean of the defined values, ``None`` when there are none."""
    defined = [v for v in values if v is not None]
    return sum(defined) / len(defined) if defined else None
