"""Metric computation. Retrieval maths is delegated to ``ranx``; this module only maps names.

Contracts are plain dicts, as in BEIR's ``evaluation.py``: qrels are
``{query_id: {doc_id: grade}}`` and runs ``{query_id: {doc_id: score}}``. Output keys are
stable (``NDCG@10``, ``Recall@5``, ``MRR@10``, ``MAP@10``) so reports compare across versions.

Coverage (full / partial / none) is scored as a three-class confusion: per expected class the
predicted counts, per outcome precision and recall. Answer floors use the first three cited tasks.

Relevance levels: nDCG@10 uses the graded labels (linear gain, Järvelin & Kekäläinen, as
trec_eval's ``ndcg_cut``); Recall, MRR and MAP count every doc of grade >= 1 as relevant.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager

from assistant.evaluation.dataset import COVERAGES
from assistant.evaluation.results import OutcomeScores, Significance

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
                metric: str = MAIN_METRIC, n_permutations: int = 10_000, seed: int = 42) -> Significance:
    """Paired significance of ``control`` vs ``treatment`` on per-query ``metric`` (ranx ``compare``).

    Reports the two-sided paired Student's t-test and Fisher's randomization test p-values,
    the means and the per-query win/tie/loss counts of ``control``. Student's t is exact and is
    the p-value to compare across versions; the randomization test is Monte-Carlo
    (``n_permutations``) and not bit-reproducible: ranx seeds only the calling thread while the
    permutations run on numba workers, so its p-value varies by a few thousandths between runs.
    """
    from ranx import compare

    result = Significance(metric=metric, control=control_name, treatment=treatment_name, queries=len(qrels))
    if len(qrels) < 2 or control_name == treatment_name:
        result.note = "not enough queries or identical configurations"
        return result
    ranx_qrels, run_a = _ranx_inputs(qrels, control, control_name)
    _, run_b = _ranx_inputs(qrels, treatment, treatment_name)
    name = RETRIEVAL_METRICS[metric]
    p_values: dict[str, float] = {}
    with _quiet():
        for test in ("student", "fisher"):
            report = compare(ranx_qrels, [run_a, run_b], [name], stat_test=test, n_permutations=n_permutations,
                             random_seed=seed, max_p=0.05, make_comparable=True)
            data = report.to_dict()
            p_values[test] = float(data[control_name]["comparisons"][treatment_name][name])
    result.student_p, result.fisher_p = p_values["student"], p_values["fisher"]
    result.n_permutations, result.seed = n_permutations, seed
    result.mean_control = float(data[control_name]["scores"][name])
    result.mean_treatment = float(data[treatment_name]["scores"][name])
    result.win_tie_loss = {k: int(v) for k, v in data[control_name]["win_tie_loss"][treatment_name][name].items()}
    return result


# --- coverage: does the plan answer it fully, partly or not at all? ------------------------------
def coverage_counts(pairs: Iterable[tuple[str, str]]) -> dict[str, dict[str, int]]:
    """``(group, predicted)`` pairs -> group -> predicted outcome -> count (every outcome listed)."""
    counts: dict[str, dict[str, int]] = {}
    for group, predicted in pairs:
        counts.setdefault(group, dict.fromkeys(COVERAGES, 0))[predicted] += 1
    return counts


def outcome_scores(by_class: Mapping[str, Mapping[str, int]]) -> dict[str, OutcomeScores]:
    """Per predicted outcome: precision (right among predicted) and recall (found among expected)."""
    scores: dict[str, OutcomeScores] = {}
    for outcome in COVERAGES:
        expected = sum(by_class.get(outcome, {}).values())
        predicted = sum(row.get(outcome, 0) for row in by_class.values())
        correct = by_class.get(outcome, {}).get(outcome, 0)
        scores[outcome] = OutcomeScores(expected=expected, predicted=predicted, correct=correct,
                                        precision=correct / predicted if predicted else None,
                                        recall=correct / expected if expected else None)
    return scores


def first_tasks(cited_units: Sequence[str], count: int = 3) -> list[int]:
    """The first ``count`` cited tasks, in citation order (sections skipped)."""
    return [int(u.split(":", 1)[1]) for u in cited_units if u.startswith("task:")][:count]


def top3_task(cited_units: Sequence[str], gold_main: set[int]) -> bool:
    """Whether any grade-2 gold task is among the first three cited tasks."""
    return bool(set(first_tasks(cited_units)) & gold_main)


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
