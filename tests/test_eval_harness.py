"""The evaluation harness: metric values on a hand-computed fixture, the eval set's rules, reports."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import pytest

from assistant.evaluation.dataset import (
    DatasetError,
    EvalQuestion,
    build_qrels,
    load_questions,
    overlap_rates,
    select,
    shares_run,
)
from assistant.evaluation.metrics import (
    RETRIEVAL_METRICS,
    citation_scores,
    fact_coverage,
    language_matches,
    per_query_scores,
    retrieval_metrics,
    scope_metrics,
)

REPO = Path(__file__).resolve().parents[1]
QUESTIONS = REPO / "eval" / "questions.jsonl"
STABLE_KEYS = ["NDCG@10", "Recall@1", "Recall@3", "Recall@5", "Recall@10", "MRR@10", "MAP@10"]


# --- metric values on a tiny fixture, computed by hand ------------------------------------
# nDCG uses linear gain: DCG@10 = sum(grade_i / log2(rank_i + 1)); IDCG from the ideal order.
# Recall, MRR and MAP count every doc of grade >= 1 as relevant; AP divides by all relevant docs.
QRELS = {
    "q1": {"d1": 2, "d2": 1},
    "q2": {"d3": 1},
    "q3": {"d4": 2, "d5": 2, "d6": 1},
    "q4": {"d7": 1},
}
RUN = {
    # q1: d2 (grade 1) at rank 1, d1 (grade 2) at rank 2
    "q1": {"d2": 0.9, "d1": 0.8, "x1": 0.7},
    # q2: the only relevant doc at rank 3
    "q2": {"x2": 0.9, "x3": 0.8, "d3": 0.7},
    # q3: d5 (grade 2) at rank 2, d4 (grade 2) at rank 7, d6 never retrieved
    "q3": {"x4": 0.9, "d5": 0.8, "x5": 0.7, "x6": 0.6, "x7": 0.5, "x8": 0.4, "d4": 0.3},
    # q4: the relevant doc at rank 11, beyond every cut-off
    "q4": {f"y{i}": 1.0 - i / 100 for i in range(10)} | {"d7": 0.5},
    # q5 has no qrels (e.g. out of scope): it must not count
    "q5": {"d1": 1.0},
}
LOG3 = math.log2(3)
HAND = {
    "q1": {
        # DCG = 1/log2(2) + 2/log2(3); IDCG = 2/log2(2) + 1/log2(3)
        "NDCG@10": (1 + 2 / LOG3) / (2 + 1 / LOG3),  # 0.8597187
        "Recall@1": 1 / 2, "Recall@3": 1.0, "Recall@5": 1.0, "Recall@10": 1.0,
        "MRR@10": 1.0,
        "MAP@10": (1 / 1 + 2 / 2) / 2,  # precision at ranks 1 and 2
    },
    "q2": {
        "NDCG@10": (1 / math.log2(4)) / 1,  # 0.5
        "Recall@1": 0.0, "Recall@3": 1.0, "Recall@5": 1.0, "Recall@10": 1.0,
        "MRR@10": 1 / 3,
        "MAP@10": 1 / 3,
    },
    "q3": {
        # DCG = 2/log2(3) + 2/log2(8); IDCG = 2/log2(2) + 2/log2(3) + 1/log2(4)
        "NDCG@10": (2 / LOG3 + 2 / 3) / (2 + 2 / LOG3 + 1 / 2),  # 0.5126524
        "Recall@1": 0.0, "Recall@3": 1 / 3, "Recall@5": 1 / 3, "Recall@10": 2 / 3,
        "MRR@10": 1 / 2,
        "MAP@10": (1 / 2 + 2 / 7) / 3,  # hits at ranks 2 and 7, three relevant docs
    },
    "q4": dict.fromkeys(STABLE_KEYS, 0.0),
}


def test_metric_keys_are_stable():
    assert list(RETRIEVAL_METRICS) == STABLE_KEYS


def test_per_query_values_match_hand_computation():
    scores = per_query_scores(QRELS, RUN)
    assert set(scores) == {"q1", "q2", "q3", "q4"}  # q5 has no qrels
    for qid, expected in HAND.items():
        for key, value in expected.items():
            assert scores[qid][key] == pytest.approx(value, abs=1e-6), (qid, key)


def test_mean_values_match_hand_computation():
    means = retrieval_metrics(QRELS, RUN)
    assert list(means) == STABLE_KEYS
    assert means["NDCG@10"] == pytest.approx((0.8597186998521972 + 0.5 + 0.512652365179441 + 0) / 4, abs=1e-6)
    assert means["Recall@1"] == pytest.approx(0.125, abs=1e-6)
    assert means["Recall@3"] == pytest.approx(7 / 12, abs=1e-6)
    assert means["Recall@5"] == pytest.approx(7 / 12, abs=1e-6)
    assert means["Recall@10"] == pytest.approx(2 / 3, abs=1e-6)
    assert means["MRR@10"] == pytest.approx(11 / 24, abs=1e-6)
    assert means["MAP@10"] == pytest.approx((1 + 1 / 3 + (1 / 2 + 2 / 7) / 3) / 4, abs=1e-6)


def test_group_means_use_only_the_group():
    assert retrieval_metrics({"q2": QRELS["q2"]}, RUN)["NDCG@10"] == pytest.approx(0.5, abs=1e-6)
    assert retrieval_metrics({}, RUN) == {}


def test_a_query_without_results_scores_zero():
    scores = per_query_scores({"q1": QRELS["q1"], "q2": QRELS["q2"]}, {"q1": RUN["q1"], "q2": {}})
    assert scores["q2"] == dict.fromkeys(STABLE_KEYS, 0.0)
    assert scores["q1"]["NDCG@10"] == pytest.approx(HAND["q1"]["NDCG@10"], abs=1e-6)


def test_a_run_missing_a_judged_query_is_an_error():
    with pytest.raises(ValueError, match="no results"):
        retrieval_metrics(QRELS, {"q1": RUN["q1"]})


def test_paired_test_is_stable():
    from assistant.evaluation.metrics import paired_test

    other = {q: {d: -score for d, score in docs.items()} for q, docs in RUN.items()}  # reversed rankings
    first = paired_test(QRELS, RUN, other, "a", "b", n_permutations=2000)
    second = paired_test(QRELS, RUN, other, "a", "b", n_permutations=2000)
    assert first["student"] == second["student"]  # exact test: identical
    # Monte-Carlo test: equal up to its sampling error (ranx reseeds only the calling thread)
    assert first["fisher"]["p_value"] == pytest.approx(second["fisher"]["p_value"], abs=0.05)
    assert 0.0 <= first["student"]["p_value"] <= 1.0 and 0.0 <= first["fisher"]["p_value"] <= 1.0
    assert first["mean_control"] == pytest.approx(retrieval_metrics(QRELS, RUN)["NDCG@10"], abs=1e-6)
    assert sum(first["win_tie_loss"].values()) == len(QRELS)


def test_scope_metrics_positive_class_is_out_of_scope():
    gold = {"a": False, "b": False, "c": False, "d": True, "e": True}
    predicted = {"a": False, "b": True, "c": True, "d": False, "e": True}  # tp=1, fn=2, fp=1, tn=1
    scope = scope_metrics(gold, predicted)
    assert (scope["tp"], scope["fn"], scope["fp"], scope["tn"]) == (1, 2, 1, 1)
    assert scope["precision"] == pytest.approx(1 / 2)
    assert scope["recall"] == pytest.approx(1 / 3)
    assert scope["f1"] == pytest.approx(2 * (1 / 2) * (1 / 3) / (1 / 2 + 1 / 3))
    assert scope["confident_oos_rate"] == pytest.approx(2 / 3)
    assert scope["false_flag_rate"] == pytest.approx(1 / 2)
    nothing_flagged = scope_metrics({"a": False, "b": True}, {"a": True, "b": True})
    assert nothing_flagged["precision"] is None and nothing_flagged["recall"] == 0.0 and nothing_flagged["f1"] == 0.0


def test_answer_metrics():
    assert citation_scores({16, 17, 40}, gold_any={16, 17}, gold_main={16}) == (pytest.approx(2 / 3), 1.0)
    assert citation_scores(set(), {16}, {16}) == (None, 0.0)
    facts = [["捐资", "donat"], ["非营利", "non-profit", "nonprofit"], ["50%"]]
    assert fact_coverage("Foreign investors may DONATE to run Non-Profit homes.", facts) == pytest.approx(2 / 3)
    assert fact_coverage("anything", []) is None
    assert language_matches("zh", "mixed") and language_matches("en", "en") and not language_matches("en", "zh")


# --- the question set ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def corpus(settings):
    from assistant.ingest.corpus import load_corpus

    return load_corpus(settings)


@pytest.fixture(scope="module")
def questions(corpus) -> list[EvalQuestion]:
    return load_questions(QUESTIONS, corpus)  # validates; also checks gold ids against the corpus


def test_every_gold_doc_id_exists_in_the_corpus(questions, corpus):
    known = {f"task:{t.number}" for t in corpus.tasks} | {f"section:{s.id}" for s in corpus.sections}
    assert {doc for q in questions for doc in q.relevance} <= known


def test_overlap_rule_holds_overall_and_per_split(questions, corpus):
    for min_grade in (1, 2):
        rates = overlap_rates(questions, corpus, min_grade)
        for split in ("all", "dev", "test"):
            assert rates[split]["n"] > 0
            assert rates[split]["overlapping"] * 5 <= rates[split]["n"], (min_grade, split, rates[split]["ids"])
    assert shares_run("外资养老机构可以吗", "支持外资养老机构发展") and not shares_run("外资养老院", "外资养老机构")


def test_dev_and_test_are_disjoint(questions):
    dev = [q for q in questions if q.split == "dev"]
    test = [q for q in questions if q.split == "test"]
    assert dev and test
    assert not {q.id for q in dev} & {q.id for q in test}
    assert not {q.question for q in dev} & {q.question for q in test}


def test_every_task_is_grade_2_gold_in_a_question_that_is_not_a_lookup(questions, corpus):
    covered = set().union(*(q.gold_tasks(min_grade=2) for q in questions if q.type != "lookup"))
    assert covered == {t.number for t in corpus.tasks}


def test_every_category_appears_in_several_questions(questions, corpus):
    counts = Counter(n for q in questions for n in q.categories(corpus))
    assert set(counts) == {c.number for c in corpus.categories}
    assert min(counts.values()) >= 8, counts
    for split in ("dev", "test"):
        per_split = Counter(n for q in questions if q.split == split for n in q.categories(corpus))
        assert set(per_split) == {c.number for c in corpus.categories}, split


def test_every_type_and_language_is_in_both_splits(questions):
    for split in ("dev", "test"):
        assert {q.type for q in questions if q.split == split} == {q.type for q in questions}
        assert {q.lang for q in questions if q.split == split} == {"zh", "en", "mixed"}


def test_out_of_scope_questions_have_no_qrels(questions):
    qrels = build_qrels(questions)
    assert all(q.id not in qrels for q in questions if not q.in_scope)
    assert all(q.id in qrels for q in questions if q.in_scope)


def test_limit_spreads_over_types(questions):
    sample = select(questions, "dev", limit=9)
    assert len(sample) == 9 and len({q.type for q in sample}) == 9
    assert all(q.split == "dev" for q in sample)
    assert select(questions, "all") == questions


GOOD = {"id": "q0001", "split": "dev", "lang": "zh", "type": "paraphrase", "question": "外资能办养老院吗",
        "relevance": {"task:17": 2}, "in_scope": True, "facts": [["捐资", "donat"]]}


@pytest.mark.parametrize(("change", "message"), [
    ({"relevance": {"task17": 2}}, "doc ids"),
    ({"relevance": {"task:17": 3}}, "relevance"),
    ({"relevance": {"task:17": 1}}, "grade-2"),
    ({"in_scope": False}, "empty relevance"),
    ({"facts": []}, "facts"),
    ({"type": "followup"}, "history"),
    ({"split": "train"}, "split"),
    ({"unexpected": 1}, "unexpected"),
])
def test_invalid_rows_are_rejected_with_the_line(tmp_path, change, message):
    path = tmp_path / "questions.jsonl"
    path.write_text(json.dumps(GOOD) + "\n" + json.dumps({**GOOD, "id": "q0002", **change}) + "\n",
                    encoding="utf-8")
    with pytest.raises(DatasetError, match=r"questions\.jsonl:2") as caught:
        load_questions(path)
    assert message in str(caught.value)


def test_duplicate_ids_and_unknown_docs_are_rejected(tmp_path, corpus):
    path = tmp_path / "questions.jsonl"
    path.write_text(json.dumps(GOOD) + "\n" + json.dumps(GOOD) + "\n", encoding="utf-8")
    with pytest.raises(DatasetError, match="duplicate id q0001"):
        load_questions(path)
    path.write_text(json.dumps({**GOOD, "relevance": {"task:112": 2}}) + "\n", encoding="utf-8")
    with pytest.raises(DatasetError, match="task:112"):
        load_questions(path, corpus)


# --- a small real run ---------------------------------------------------------------------
RESULT_KEYS = {"schema_version", "created_at", "command", "split", "limit", "dataset", "system",
               "followup_resolution", "retrieval", "scope", "answers", "latency_ms", "per_query", "notes"}


@pytest.fixture(scope="module")
def small_run(engine, settings, tmp_path_factory):
    from assistant.evaluation import EvalOptions, run_eval
    from assistant.evaluation.report import write_report

    run = run_eval(engine, settings, EvalOptions(split="dev", limit=12, progress=False))
    folder = write_report(run, tmp_path_factory.mktemp("reports"))
    return run, folder


def test_report_files_and_keys(small_run):
    from assistant.evaluation.report import REPORT_FILES

    _, folder = small_run
    assert folder.name.endswith("Z")  # UTC timestamp
    for name in REPORT_FILES:
        assert (folder / name).stat().st_size > 0, name
    results = json.loads((folder / "results.json").read_text(encoding="utf-8"))
    assert set(results) == RESULT_KEYS
    assert results["split"] == "dev" and results["limit"] == 12 and results["dataset"]["questions"] == 12
    assert len(results["dataset"]["sha256"]) == 64
    assert {m["name"] for m in results["system"]["models"]} == {"use", "e5"}
    assert {"ranx", "faiss-cpu", "llama-index-core", "bm25s", "numpy", "python"} <= set(
        results["system"]["libraries"])
    assert "commit" in results["system"]["git"]
    configs = results["retrieval"]["configs"]
    assert {"hybrid", "hybrid_no_lookup", "bm25", "use", "e5", "bm25+e5", "bm25+use", "e5+use"} == set(configs)
    assert configs["hybrid_no_lookup"]["lookup"] is False
    for config in configs.values():
        assert list(config["metrics"]) == STABLE_KEYS
        assert all(0.0 <= v <= 1.0 for v in config["metrics"].values())
    breakdown = results["retrieval"]["breakdown"]
    assert set(breakdown) == {"lang", "type", "category"}
    assert "out_of_scope" not in breakdown["type"]  # no qrels: scored by the scope metrics
    governing = results["retrieval"]["governing"]
    assert set(governing) <= {"zh", "en"} and governing
    for entry in governing.values():
        assert entry["n"] > 0 and set(entry["metrics"]) == {"Recall@1", "Recall@5", "Recall@10"}
        assert entry["metrics"]["Recall@1"] <= entry["metrics"]["Recall@5"] <= entry["metrics"]["Recall@10"]
    significance = results["retrieval"]["significance"]
    assert significance["best_single"] in ("bm25", "use", "e5")
    assert 0.0 <= significance["student"]["p_value"] <= 1.0 and 0.0 <= significance["fisher"]["p_value"] <= 1.0
    assert {"precision", "recall", "f1", "confident_oos_rate"} <= set(results["scope"])
    assert results["scope"]["out_of_scope"] >= 1  # the sample spans every type
    latency = results["latency_ms"]["retrieval"]
    assert {"bm25", "use", "e5", "fusion", "total"} <= set(latency)
    assert all({"p50", "p95"} <= set(v) for v in latency.values())
    assert results["latency_ms"]["cold_query_cache"], "no query cache found to clear: latency would be warm"
    assert results["answers"]["status"] in ("run", "skipped")
    if results["answers"]["status"] == "run":
        assert {"citation_precision", "citation_recall", "fact_coverage", "language_match"} <= set(results["answers"])
    else:
        assert "skipped" in results["answers"]["note"]


def test_trec_files_agree_with_the_metrics(small_run):
    from ranx import Qrels, Run, evaluate

    run, folder = small_run
    qrels = Qrels.from_file(str(folder / "qrels.trec"), kind="trec")
    trec_run = Run.from_file(str(folder / "run.trec"), kind="trec")
    assert set(qrels.keys()) == set(run.qrels)
    ndcg = evaluate(qrels, trec_run, "ndcg@10", make_comparable=True)
    assert ndcg == pytest.approx(run.results["retrieval"]["configs"]["hybrid"]["metrics"]["NDCG@10"], abs=1e-6)
    assert (folder / "runs" / "bm25.trec").exists()


def test_worst_and_report_markdown(small_run):
    _, folder = small_run
    worst = (folder / "worst.md").read_text(encoding="utf-8")
    assert worst.count("\n## q") >= 1 and "**Gold:**" in worst and "**Top 5:**" in worst
    report = (folder / "report.md").read_text(encoding="utf-8")
    for heading in ("### Retrieval", "### hybrid by language", "### hybrid by question type", "### Scope",
                    "### Latency", "retrievers.png", "breakdown.png", "| **hybrid** |"):
        assert heading in report
    assert (folder / "retrievers.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_eval_command(engine, settings, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import assistant.cli as cli

    monkeypatch.setattr(cli, "get_settings", lambda: settings)
    monkeypatch.setattr(cli, "load_engine", lambda rebuild="if_needed": engine)
    runner = CliRunner()
    done = runner.invoke(cli.app, ["eval", "--split", "test", "--limit", "4", "--no-ablation", "--no-answers",
                                   "--output", str(tmp_path)])
    assert done.exit_code == 0, done.output
    assert "hybrid" in done.output and "NDCG@10" in done.output and "report:" in done.output
    (folder,) = tmp_path.iterdir()
    results = json.loads((folder / "results.json").read_text(encoding="utf-8"))
    assert results["command"] == "policy-assistant eval --split test --no-ablation --no-answers --limit 4"
    assert set(results["retrieval"]["configs"]) == {"hybrid"} and results["answers"]["status"] == "skipped"
    assert not (folder / "runs").exists()

    bad = runner.invoke(cli.app, ["eval", "--split", "train"])
    assert bad.exit_code == 2 and "unknown split" in bad.output
    bad = runner.invoke(cli.app, ["eval", "--retrievers", "bm25,nope", "--output", str(tmp_path)])
    assert bad.exit_code == 2 and "unknown retrievers" in bad.output
