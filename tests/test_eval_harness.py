"""The evaluation harness: metric values on hand-computed fixtures, the question sets' rules, a real run."""

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
    load_conversations,
    load_questions,
    sample,
    split_files,
)
from assistant.evaluation.metrics import (
    RETRIEVAL_METRICS,
    citation_scores,
    coverage_counts,
    fact_coverage,
    first_tasks,
    language_matches,
    outcome_scores,
    per_query_scores,
    retrieval_metrics,
    top3_task,
)
from assistant.evaluation.overlap import overlap_rates, shares_run
from assistant.evaluation.results import AnswerRecord, Rate

REPO = Path(__file__).resolve().parents[1]
QUESTIONS = REPO / "eval" / "questions.jsonl"
BLIND = REPO / "eval" / "blind" / "questions.jsonl"
CONVERSATIONS = REPO / "eval" / "blind" / "conversations.jsonl"
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
    assert first.student_p == second.student_p  # exact test: identical
    # Monte-Carlo test: equal up to its sampling error (ranx reseeds only the calling thread)
    assert first.fisher_p == pytest.approx(second.fisher_p, abs=0.05)
    assert 0.0 <= first.student_p <= 1.0 and 0.0 <= first.fisher_p <= 1.0
    assert first.mean_control == pytest.approx(retrieval_metrics(QRELS, RUN)["NDCG@10"], abs=1e-6)
    assert sum(first.win_tie_loss.values()) == len(QRELS)
    assert paired_test(QRELS, RUN, RUN, "a", "a").note


def test_answer_metrics():
    assert citation_scores({16, 17, 40}, gold_any={16, 17}, gold_main={16}) == (pytest.approx(2 / 3), 1.0)
    assert citation_scores(set(), {16}, {16}) == (None, 0.0)
    facts = [["捐资", "donat"], ["非营利", "non-profit", "nonprofit"], ["50%"]]
    assert fact_coverage("Foreign investors may DONATE to run Non-Profit homes.", facts) == pytest.approx(2 / 3)
    assert fact_coverage("anything", []) is None
    assert language_matches("zh", "mixed") and language_matches("en", "en") and not language_matches("en", "zh")


# --- coverage, answer floors and conversation scores on hand-made runs -----------------------
def test_coverage_confusion_and_outcome_scores():
    # expected -> predicted: full->full x2, full->partial, full->none, partial->partial, partial->none, none->full
    pairs = [("full", "full"), ("full", "full"), ("full", "partial"), ("full", "none"), ("partial", "partial"),
             ("partial", "none"), ("none", "full")]
    counts = coverage_counts(pairs)
    assert counts == {"full": {"full": 2, "partial": 1, "none": 1}, "partial": {"full": 0, "partial": 1, "none": 1},
                      "none": {"full": 1, "partial": 0, "none": 0}}
    scores = outcome_scores(counts)
    assert (scores["full"].expected, scores["full"].predicted, scores["full"].correct) == (4, 3, 2)
    assert scores["full"].precision == pytest.approx(2 / 3) and scores["full"].recall == pytest.approx(1 / 2)
    assert scores["partial"].precision == pytest.approx(1 / 2) and scores["partial"].recall == pytest.approx(1 / 2)
    assert scores["none"].precision == 0.0 and scores["none"].recall == 0.0
    assert outcome_scores({"full": {"full": 1, "partial": 0, "none": 0}})["none"].precision is None


def test_top3_counts_only_the_first_three_cited_tasks():
    cited = ["section:2.1", "task:5", "task:7", "section:5", "task:9", "task:17"]
    assert first_tasks(cited) == [5, 7, 9]  # sections are skipped, order kept
    assert top3_task(cited, {9}) and not top3_task(cited, {17}) and not top3_task([], {1})
    assert Rate.of([True, False, True]) == Rate(n=3, hits=2, rate=2 / 3) and Rate.of([]).rate is None


def _question(qid: str, coverage: str, relevance: dict, kind: str = "scenario", lang: str = "zh") -> EvalQuestion:
    return EvalQuestion(id=qid, split="blind", lang=lang, type=kind, question="?", relevance=relevance,
                        coverage=coverage)


def test_answer_floors_by_hand():
    from assistant.evaluation.answers import coverage_results, floors

    questions = [
        _question("a", "full", {"task:1": 2}), _question("b", "full", {"task:2": 2, "task:3": 1}, lang="en"),
        _question("c", "partial", {"task:4": 2}, "near_miss"), _question("d", "partial", {"task:5": 2}, "near_miss"),
        _question("e", "full", {"section:5": 2}, "body"), _question("f", "none", {}, "out_of_scope"),
        _question("g", "none", {}, "out_of_scope")]
    records = {
        "a": AnswerRecord(coverage="full", cited_units=["task:9", "task:8", "task:7", "task:1"], top3_task=False),
        "b": AnswerRecord(coverage="partial", cited_units=["task:3", "task:2"], top3_task=True),
        "c": AnswerRecord(coverage="full", cited_units=["task:4"], top3_task=True),
        "d": AnswerRecord(coverage="none", cited_units=[], top3_task=False),
        "e": AnswerRecord(coverage="none", cited_units=[]),
        "f": AnswerRecord(coverage="full", cited_units=["task:1"]),
        "g": AnswerRecord(coverage="none")}
    result = floors(questions, records)
    assert result.top3_task == Rate(n=4, hits=2, rate=0.5)  # a, b, c, d have grade-2 task gold; e does not
    assert result.answerable_none == Rate(n=5, hits=2, rate=0.4)  # d and e
    assert result.oos_full == Rate(n=2, hits=1, rate=0.5)  # f
    assert result.near_miss_hedged == Rate(n=2, hits=1, rate=0.5)  # d (c was answered full)
    assert result.top3_by_lang["en"].rate == 1.0 and result.top3_by_type["near_miss"].rate == 0.5
    coverage = coverage_results(questions, {q: r.coverage for q, r in records.items()}, "answers")
    assert coverage.by_class["full"] == {"full": 1, "partial": 1, "none": 1}
    assert coverage.by_type["out_of_scope"] == {"full": 1, "partial": 0, "none": 1}
    assert coverage.type_class == {"scenario": "full", "near_miss": "partial", "body": "full", "out_of_scope": "none"}
    assert coverage.accuracy == pytest.approx(2 / 7)  # a and g


def test_conversation_turn_scores_by_hand():
    from assistant.evaluation.dataset import ConversationTurn
    from assistant.evaluation.dialogues import kind_scores, score_turn
    from assistant.evaluation.results import TurnResult

    previous = AnswerRecord(coverage="full", cited_units=["task:2", "section:2.1", "task:3"])
    ordinal = ConversationTurn(question="第二条呢", kind="ordinal", refers_to=2, relevance={}, coverage="full",
                               resolved="x")
    assert score_turn(ordinal, AnswerRecord(coverage="full", cited_units=["section:2.1", "task:2"]),
                      previous) == ("section:2.1", True)
    assert score_turn(ordinal, AnswerRecord(coverage="full", cited_units=["task:2", "section:2.1"]),
                      previous) == ("section:2.1", False)  # the first citation must be the referred unit
    third = ordinal.model_copy(update={"refers_to": 4})
    assert score_turn(third, AnswerRecord(cited_units=["task:3"]), previous) == (None, False)  # cited too few
    ellipsis = ConversationTurn(question="那医院呢", kind="ellipsis", relevance={"task:16": 2, "task:17": 1},
                                coverage="full", resolved="x")
    assert score_turn(ellipsis, AnswerRecord(cited_units=["task:17", "task:16"], top3_task=True), None) == (None, True)
    off = ConversationTurn(question="台湾呢", kind="out_of_scope", relevance={}, coverage="none", resolved="x")
    assert score_turn(off, AnswerRecord(coverage="full"), None) == (None, None)

    def turn(kind, coverage, answered, top3=None, expected=None):
        return TurnResult(conversation="c001", turn=2, kind=kind, lang="zh", coverage=coverage,
                          answer=AnswerRecord(coverage=answered), top3=top3, expected_unit=expected)

    scores = kind_scores([turn("ellipsis", "full", "full", True), turn("ellipsis", "partial", "none", False),
                          turn("ordinal", "full", "full", False), turn("out_of_scope", "none", "full"),
                          turn("out_of_scope", "none", "none")])
    assert scores.turns == 5 and scores.top3 == Rate(n=3, hits=1, rate=1 / 3)
    assert scores.answerable_none == Rate(n=3, hits=1, rate=1 / 3) and scores.oos_full.rate == 0.5
    assert scores.unresolvable_ordinals == 1


def test_floor_checks_respect_direction(tmp_path):
    from assistant.evaluation.floors import GATED, check_floors, load_floors

    floors = {"split": "blind", "floors": {name: {direction: 0.5} for name, (direction, _) in GATED.items()}}
    values = dict.fromkeys(GATED, 0.5) | {"answers.top3_task": 0.49, "answers.oos_full": 0.51,
                                          "conversations.followup_top3": None}
    failed = {c.name for c in check_floors(values, floors) if not c.ok}
    assert failed == {"answers.top3_task", "answers.oos_full", "conversations.followup_top3"}
    path = tmp_path / "floors.json"
    path.write_text(json.dumps({**floors, "floors": {"answers.top3_task": {"max": 0.5}}}), encoding="utf-8")
    with pytest.raises(ValueError, match="floors must be exactly"):
        load_floors(path)


def test_ablation_is_small_and_has_no_pairs():
    from assistant.evaluation.ablation import configurations

    names = ["bm25", "bm25_k", "e5", "use", "e5_k", "use_k"]
    configs = {c.name: c for c in configurations(names, ablation=True, rerank_default=True)}
    assert list(configs)[:5] == ["hybrid", "hybrid_no_lookup", "hybrid_no_rerank", "text_only", "knowledge_only"]
    assert set(configs) - {"hybrid", "hybrid_no_lookup", "hybrid_no_rerank", "text_only", "knowledge_only"} == set(
        names)
    assert configs["hybrid_no_rerank"].rerank is False and configs["hybrid_no_lookup"].lookup is False
    assert set(configs["knowledge_only"].retrievers) == {"bm25_k", "use_k", "e5_k"}
    assert configurations(names, ablation=True, rerank_default=False)[2].name == "hybrid_rerank_on"
    assert [c.name for c in configurations(["bm25", "use", "e5"], ablation=True)] == [
        "hybrid", "hybrid_no_lookup", "hybrid_no_rerank", "bm25", "use", "e5"]  # text-only would be the hybrid
    assert [c.name for c in configurations(names, ablation=False)] == ["hybrid"]


def test_scripted_history_becomes_prior_turns():
    from assistant.evaluation.ablation import scripted_context
    from assistant.evaluation.dataset import HistoryTurn

    question = EvalQuestion(id="q1", split="dev", lang="zh", type="followup", question="那医院呢？",
                            history=[HistoryTurn(role="user", content="外资能办养老院吗？"),
                                     HistoryTurn(role="assistant", content="可以 [第17项]，另见 [Task 16]。")],
                            relevance={"task:16": 2}, coverage="full")
    (turn,) = scripted_context(question)
    assert turn.question == turn.resolved_query == "外资能办养老院吗？"
    assert turn.cited_units == ["task:17", "task:16"] and turn.lang == "zh"
    assert scripted_context(question.model_copy(update={"history": []})) == []


# --- the question sets --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def corpus(settings):
    from assistant.ingest.corpus import load_corpus

    return load_corpus(settings)


@pytest.fixture(scope="module")
def questions(corpus) -> list[EvalQuestion]:
    return load_questions(QUESTIONS, corpus)  # validates; also checks gold ids against the corpus


@pytest.fixture(scope="module")
def blind(corpus) -> list[EvalQuestion]:
    return load_questions(BLIND, corpus, split="blind")


def test_the_sets_load_and_their_gold_exists(questions, blind, corpus):
    known = {f"task:{t.number}" for t in corpus.tasks} | {f"section:{s.id}" for s in corpus.sections}
    assert {doc for q in questions + blind for doc in q.relevance} <= known
    assert len(questions) >= 300 and all(q.split == "dev" for q in questions)
    assert len(blind) == 300 and {q.coverage for q in blind} == {"full", "partial", "none"}
    conversations = load_conversations(CONVERSATIONS, corpus)
    assert len(conversations) == 48 and all(c.turns[0].kind == "first" for c in conversations)
    # written independently; two short natural questions coincide ("What is task 1?", 厦门现在最低工资标准是多少)
    assert len({q.question for q in questions} & {q.question for q in blind}) <= 3


def test_the_dev_split_has_both_question_files_and_its_blind_written_rows_are_dev(corpus):
    files, conversation_files = split_files(REPO / "eval", "dev")
    assert set(files) == {"dev", "dev_blind_written"} and set(conversation_files) == {"dev"}
    written = load_questions(files["dev_blind_written"], corpus, "dev_blind_written")
    assert len(written) >= 250 and all(q.split == "dev" and q.id.startswith("d") for q in written)
    assert {q.coverage for q in written} == {"full", "partial", "none"}
    blind_ids = {q.question for q in load_questions(BLIND, corpus, split="blind")}
    assert len({q.question for q in written} & blind_ids) <= 3
    assert set(split_files(REPO / "eval", "blind")[0]) == {"blind"}
    assert set(split_files(REPO / "eval", "all")[0]) == {"dev", "dev_blind_written", "blind"}


def test_overlap_rule_holds_per_split(questions, blind, corpus):
    for min_grade in (1, 2):
        rates = overlap_rates(questions + blind, corpus, min_grade)
        assert set(rates) == {"dev", "blind"}
        for split, rate in rates.items():
            assert rate["overlapping"] * 5 <= rate["n"], (min_grade, split, rate["ids"])
    assert shares_run("外资养老机构可以吗", "支持外资养老机构发展") and not shares_run("外资养老院", "外资养老机构")


def test_every_task_is_grade_2_gold_in_a_question_that_is_not_a_lookup(questions, blind, corpus):
    for group in (questions, blind):
        covered = set().union(*(q.gold_tasks(min_grade=2) for q in group if q.type != "lookup"))
        assert covered == {t.number for t in corpus.tasks}


def test_every_category_appears_in_several_questions(questions, corpus):
    counts = Counter(n for q in questions for n in q.categories(corpus))
    assert set(counts) == {c.number for c in corpus.categories}
    assert min(counts.values()) >= 8, counts


def test_unanswerable_questions_have_no_qrels(questions, blind):
    qrels = build_qrels(questions + blind)
    assert all((q.id in qrels) == q.answerable for q in questions + blind)


def test_limit_spreads_over_types(blind):
    picked = sample(blind, limit=13)
    assert len(picked) == 13 and len({q.type for q in picked}) == 13
    assert sample(blind) == blind


DEV = {"id": "q0001", "split": "dev", "lang": "zh", "type": "paraphrase", "question": "外资能办养老院吗",
       "relevance": {"task:17": 2}, "in_scope": True, "facts": [["捐资", "donat"]]}
BLIND_ROW = {"id": "b0001", "lang": "en", "type": "near_miss", "question": "What is the fee?",
             "relevance": {"task:17": 2}, "coverage": "partial", "missing_detail": "fee", "facts": [["donat"]],
             "tags": []}
TURN = {"question": "外资能办养老院吗", "kind": "first", "relevance": {"task:17": 2}, "coverage": "full",
        "resolved": "外资能否举办养老机构？"}
CONVERSATION = {"id": "c001", "lang": "zh", "turns": [
    TURN, {"question": "第一个具体说说", "kind": "ordinal", "refers_to": 1, "relevance": {}, "coverage": "full",
           "resolved": "上一回答引用的第一项"}]}


@pytest.mark.parametrize(("change", "message"), [
    ({"relevance": {"task17": 2}}, "doc ids"),
    ({"relevance": {"task:17": 3}}, "relevance"),
    ({"relevance": {"task:17": 1}}, "grade-2"),
    ({"in_scope": False}, "empty relevance"),
    ({"facts": []}, "facts"),
    ({"type": "followup"}, "history"),
    ({"split": "test"}, "split"),
    ({"unexpected": 1}, "unexpected"),
])
def test_invalid_dev_rows_are_rejected_with_the_line(tmp_path, change, message):
    path = tmp_path / "questions.jsonl"
    path.write_text(json.dumps(DEV) + "\n" + json.dumps({**DEV, "id": "q0002", **change}) + "\n", encoding="utf-8")
    with pytest.raises(DatasetError, match=r"questions\.jsonl:2") as caught:
        load_questions(path)
    assert message in str(caught.value)


@pytest.mark.parametrize(("change", "message"), [
    ({"coverage": "none"}, "empty relevance"),
    ({"missing_detail": None}, "missing_detail"),
    ({"coverage": "maybe"}, "coverage"),
    ({"type": "colloquial"}, "type"),
    ({"id": "q0002"}, "id"),
    ({"tags": "x", "extra": 1}, "extra"),
])
def test_invalid_blind_rows_are_rejected_with_the_line(tmp_path, change, message):
    path = tmp_path / "questions.jsonl"
    path.write_text(json.dumps(BLIND_ROW) + "\n\n" + json.dumps({**BLIND_ROW, "id": "b0002", **change}) + "\n",
                    encoding="utf-8")
    with pytest.raises(DatasetError, match=r"questions\.jsonl:3") as caught:  # the blank line still counts
        load_questions(path, split="blind")
    assert message in str(caught.value)


@pytest.mark.parametrize(("turns", "message"), [
    ([TURN], "at least 2"),
    ([TURN, {**TURN, "kind": "first"}], "kind first"),
    ([TURN, {**CONVERSATION["turns"][1], "refers_to": None}], "refers_to"),
    ([TURN, {**TURN, "kind": "ellipsis", "refers_to": 1}], "refers_to"),
    ([TURN, {**TURN, "kind": "out_of_scope"}], "coverage none"),
    ([TURN, {**TURN, "kind": "pronoun", "coverage": "partial"}], "missing_detail"),
    ([TURN, {**TURN, "kind": "pronoun", "speaker": "me"}], "extra"),
])
def test_invalid_conversations_are_rejected_with_the_line(tmp_path, turns, message):
    path = tmp_path / "conversations.jsonl"
    path.write_text(json.dumps(CONVERSATION) + "\n" + json.dumps({**CONVERSATION, "id": "c002", "turns": turns})
                    + "\n", encoding="utf-8")
    with pytest.raises(DatasetError, match=r"conversations\.jsonl:2") as caught:
        load_conversations(path)
    assert message in str(caught.value)


def test_duplicate_ids_unknown_docs_and_missing_files_are_rejected(tmp_path, corpus):
    path = tmp_path / "questions.jsonl"
    path.write_text(json.dumps(DEV) + "\n" + json.dumps(DEV) + "\n", encoding="utf-8")
    with pytest.raises(DatasetError, match=r"questions\.jsonl:2: duplicate id q0001 \(first on line 1\)"):
        load_questions(path)
    path.write_text(json.dumps({**DEV, "relevance": {"task:112": 2}}) + "\n", encoding="utf-8")
    with pytest.raises(DatasetError, match="task:112"):
        load_questions(path, corpus)
    with pytest.raises(DatasetError, match="not found"):
        load_conversations(tmp_path / "nope.jsonl")


# --- a small real run ---------------------------------------------------------------------
RESULT_KEYS = {"schema_version", "created_at", "command", "split", "limit", "dataset", "system", "retrieval",
               "coverage", "answers", "conversations", "latency_ms", "gated", "per_query", "notes"}


@pytest.fixture(scope="module")
def small_run(engine, settings, tmp_path_factory):
    from assistant.evaluation import EvalOptions, run_eval
    from assistant.evaluation.report import write_report

    run = run_eval(engine, settings, EvalOptions(split="blind", limit=13, progress=False))
    folder = write_report(run, tmp_path_factory.mktemp("reports"))
    return run, folder


def test_report_files_and_results(small_run, engine):
    from assistant.evaluation.floors import GATED
    from assistant.evaluation.report import REPORT_FILES
    from assistant.evaluation.results import EvalResults

    run, folder = small_run
    assert folder.name.endswith("Z")  # UTC timestamp
    for name in REPORT_FILES:
        assert (folder / name).stat().st_size > 0, name
    raw = json.loads((folder / "results.json").read_text(encoding="utf-8"))
    assert set(raw) == RESULT_KEYS
    results = EvalResults.model_validate(raw)  # the file is the model
    assert results.split == "blind" and results.limit == 13 and results.dataset.questions == 13
    assert results.dataset.files["blind"].rows == 300 and results.dataset.files["conversations_blind"].rows == 48
    assert results.dataset.conversations == 4 and len(results.dataset.files["blind"].sha256) == 64
    assert {m["name"] for m in results.system.models} == {"use", "e5"}
    configs = results.retrieval.configs
    assert {"hybrid", "hybrid_no_lookup", *engine.retriever_names} <= set(configs)
    assert len(configs) == 3 + 2 * ({"bm25_k", "use_k", "e5_k"} <= set(engine.retriever_names)) + len(
        engine.retriever_names)
    for config in configs.values():
        assert list(config.metrics) == STABLE_KEYS and all(0.0 <= v <= 1.0 for v in config.metrics.values())
    assert {"lang", "type", "coverage", "category"} == set(results.retrieval.breakdown)
    assert "out_of_scope" not in results.retrieval.breakdown["type"]  # no qrels: scored by coverage
    assert results.coverage.source == "answers" and results.coverage.questions == 13
    assert set(results.coverage.by_type) == {q.type for q in run.questions}
    floors = results.answers.floors
    assert results.answers.status == "run" and results.answers.errors == 0 and floors is not None
    assert floors.top3_task.n > 0 and floors.oos_full.n >= 1 and floors.near_miss_hedged.n >= 1
    conversations = results.conversations
    assert conversations.status == "run" and conversations.turns == len(conversations.per_turn) > 4
    assert conversations.followups.turns == conversations.turns - 4
    assert "first" in conversations.by_kind and "ordinal" in conversations.by_kind  # c001 has an ordinal turn
    ordinal = next(t for t in conversations.per_turn if t.kind == "ordinal")
    assert ordinal.top3 is not None
    assert set(results.gated) == set(GATED)
    assert all(v is None or 0.0 <= v <= 1.0 for v in results.gated.values())
    assert {"total", "bm25", "e5", "use"} <= set(results.latency_ms.retrieval) and results.latency_ms.answers
    record = results.per_query[run.questions[0].id]
    assert record.answer is not None and record.search_coverage in ("full", "partial", "none")


def test_trec_files_agree_with_the_metrics(small_run):
    from ranx import Qrels, Run, evaluate

    run, folder = small_run
    qrels = Qrels.from_file(str(folder / "qrels.trec"), kind="trec")
    trec_run = Run.from_file(str(folder / "run.trec"), kind="trec")
    assert set(qrels.keys()) == set(run.qrels)
    ndcg = evaluate(qrels, trec_run, "ndcg@10", make_comparable=True)
    assert ndcg == pytest.approx(run.results.retrieval.configs["hybrid"].metrics["NDCG@10"], abs=1e-6)
    assert (folder / "runs" / "bm25.trec").exists()


def test_worst_report_and_baseline_markdown(small_run):
    from assistant.evaluation.report import render_baseline

    run, folder = small_run
    worst = (folder / "worst.md").read_text(encoding="utf-8")
    assert worst.count("\n## b") >= 1 and "**Gold:**" in worst and "**Top 5:**" in worst
    report = (folder / "report.md").read_text(encoding="utf-8")
    for heading in ("### Gated metrics", "### Retrieval", "### hybrid by language", "### hybrid by question type",
                    "### hybrid by expected coverage", "### Coverage", "### Answers", "### Conversations",
                    "### Latency", "retrievers.png", "| **hybrid** |", "| **all follow-ups** |"):
        assert heading in report, heading
    baseline = render_baseline(run.results)
    assert baseline.startswith("# Baseline (blind split)") and "| ordinal |" in baseline
    assert (folder / "retrievers.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_eval_command(engine, settings, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import assistant.cli as cli

    monkeypatch.setattr(cli, "get_settings", lambda: settings)
    monkeypatch.setattr(cli, "load_engine", lambda rebuild="if_needed": engine)
    runner = CliRunner()
    done = runner.invoke(cli.app, ["eval", "--split", "dev", "--limit", "9", "--no-ablation", "--no-answers",
                                   "--output", str(tmp_path)])
    assert done.exit_code == 0, done.output
    assert "hybrid" in done.output and "NDCG@10" in done.output and "report:" in done.output
    (folder,) = tmp_path.iterdir()
    results = json.loads((folder / "results.json").read_text(encoding="utf-8"))
    assert results["command"] == "policy-assistant eval --split dev --no-ablation --no-answers --limit 9"
    assert set(results["retrieval"]["configs"]) == {"hybrid"} and results["answers"]["status"] == "skipped"
    assert results["coverage"]["source"] == "search" and results["conversations"]["status"] == "skipped"
    assert not (folder / "runs").exists()

    bad = runner.invoke(cli.app, ["eval", "--split", "test"])
    assert bad.exit_code == 2 and "unknown split" in bad.output
    bad = runner.invoke(cli.app, ["eval", "--baseline", "--limit", "3"])
    assert bad.exit_code == 2 and "--baseline" in bad.output
    bad = runner.invoke(cli.app, ["eval", "--retrievers", "bm25,nope", "--output", str(tmp_path)])
    assert bad.exit_code == 2 and "unknown retrievers" in bad.output
