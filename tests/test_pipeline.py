"""The one query pipeline on the real index: stages, provenance, follow-ups, structure facts."""

from __future__ import annotations

from assistant.state import TurnRecord


def _turn(question: str, cited: list[str], lang: str = "zh", resolved: str | None = None) -> TurnRecord:
    return TurnRecord(question, resolved or question, cited, "full", lang)


def test_result_carries_provenance_decision_and_stage_timings(engine):
    result = engine.search("外资能办养老机构吗？", top_k=5)
    assert result.coverage == "full" and result.in_scope
    first = result.hits[0]
    assert first.unit_id == "task:17" and first.support and first.fused_rank == 1
    assert {"bm25_k", "use_k"} & set(first.retrievers)  # the knowledge views found it
    assert {"analysis", "fusion", "rerank", "answerability", "total"} <= set(result.timings_ms)
    payload = result.to_json()
    assert payload["coverage"] == "full" and payload["decision"]["coverage"] == "full"
    assert payload["results"][0]["support"] is True


def test_support_is_a_subsequence_of_the_ranking(engine):
    for question in ("List the measures on green finance.", "外国人来厦门有哪些签证便利？",
                     "Can foreign nurses work here?"):
        result = engine.search(question, top_k=10)
        ranking = [h.unit_id for h in result.hits]
        support = [h.unit_id for h in result.support]
        assert support and [u for u in ranking if u in support] == support


def test_rerank_stage_can_be_switched_per_call(engine):
    question = "外资能不能办医院？"
    on, off = engine.search(question, top_k=10, rerank=True), engine.search(question, top_k=10, rerank=False)
    assert {h.unit_id for h in on.hits[:5]} and all(h.alignment is not None for h in on.hits[:3])
    assert off.hits[0].fused_rank == 1  # without re-ordering the ranking is the fusion's


def test_focus_weighs_the_asking_clause_of_a_long_question(engine):
    question = ("We're a Dutch studio of twelve people making mobile games, based in Rotterdam — could we run our "
                "overseas publishing of games from an office in Xiamen?")
    result = engine.search(question, top_k=3)
    assert result.analysis.focus and "publishing" in result.analysis.focus
    assert result.hits[0].unit_id == "task:8"


def test_structure_questions_are_answered_from_the_corpus(engine):
    count = engine.search("附件一共有多少项任务？")
    assert count.structure is not None and count.structure.kind == "count" and count.coverage == "full"
    finance = engine.search("附件里金融这一类有哪些任务？")
    assert finance.structure is not None and finance.structure.kind == "category_tasks"
    tasks = [h.task for h in finance.support]
    assert tasks == [t.number for t in engine.corpus.tasks if t.category_no == finance.structure.category]
    differentiated = engine.search("Which are the differentiated pilot tasks?")
    assert [h.task for h in differentiated.support if h.task] == [12, 44, 50, 67, 72]
    # a topical list question is not a structure question
    assert engine.search("What measures does the plan have for visas?").structure is None


def test_followup_ordinal_pins_the_cited_unit_exactly(engine):
    turns = [_turn("外国人来厦门有哪些签证便利？", ["task:74", "task:75"])]
    result = engine.search("第二条详细说说", context=turns)
    assert result.followup == "ordinal" and result.hits[0].unit_id == "task:75" and result.hits[0].support
    english = engine.search("tell me more about the first one", context=[_turn("visa measures?", ["task:74",
                                                                                                  "task:75"], "en")])
    assert english.hits[0].unit_id == "task:74"
    after = engine.search("下一项呢", context=[_turn("第48项是什么？", ["task:48"])])
    assert after.hits[0].unit_id == "task:49"


def test_followup_ellipsis_substitutes_the_new_object(engine):
    result = engine.search("那医院呢？", context=[_turn("外资能办养老机构吗？", ["task:17"])])
    assert result.followup == "substitution" and "医院" in result.resolved_query
    assert 16 in [h.task for h in result.hits[:3]]  # non-profit medical institutions
    assert result.hits[0].unit_id != "task:17"  # not the care-home task it replaced


def test_followup_narrowing_stays_within_the_previous_citations(engine):
    previous = ["task:25", "task:26", "task:27", "task:28", "task:29", "task:30", "task:65", "task:66"]
    result = engine.search("which of those are about leasing?", context=[_turn("finance measures?", previous, "en")])
    assert result.followup == "narrowing"
    assert result.support and all(h.unit_id in previous for h in result.support[:2])


def test_a_self_contained_question_drags_no_old_context(engine):
    alone = engine.search("Can foreign companies run elderly care homes?")
    switched = engine.search("Can foreign companies run elderly care homes?",
                             context=[_turn("外资做VPN持股上限多少？", ["task:1"])])
    assert switched.followup == "none" and switched.resolved_query is None
    assert [h.unit_id for h in switched.hits] == [h.unit_id for h in alone.hits]
