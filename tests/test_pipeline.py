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


def test_metadata_asked_in_so_many_words_is_stated_by_the_parsed_metadata(engine):
    number = engine.search("这个方案的文号是多少")
    assert number.structure is not None and number.structure.kind == "metadata"
    assert number.structure.intents == ("number",) and number.coverage == "full"
    assert [h.unit_id for h in number.support] == ["section:notice"]
    both = engine.search("这文件是啥时候印发的，哪个部门印发？")
    assert both.structure is not None and set(both.structure.intents) == {"issuer", "date"}
    # a bare "when" of a task's procedure, or "which department" of something just discussed, is not metadata
    window = engine.search("When does the application window for professional title evaluation open under the plan?")
    assert window.structure is None and window.coverage != "full"
    assert engine.search("Which department handles cross-border data under the plan?").structure is None


def test_category_counts_by_classifier_and_common_task_counts(engine):
    # "几条" / "哪几项" count tasks when the question names a category (no word 任务 needed)
    health = engine.search("医疗健康那一类一共几条？")
    assert health.structure is not None and health.structure.kind == "category_tasks"
    assert [h.task for h in health.support] == [
        t.number for t in engine.corpus.tasks if t.category_no == health.structure.category]
    # 共性 + 差异化: the two numbers the body states (sections 2.1 and 2.2), not the list of five
    both = engine.search("共性的和差异化的各有几项？")
    assert both.structure is not None and both.structure.kind == "count"
    assert [h.unit_id for h in both.support] == ["section:2.1", "section:2.2"]
    # "哪些条件" is not a count of 条, and a topic without a category word is not a structure question
    assert engine.search("这类机构要满足哪些条件？").structure is None
    assert engine.search("签证方面有哪几条便利？").structure is None


def test_followup_ordinal_pins_the_cited_unit_exactly(engine):
    turns = [_turn("外国人来厦门有哪些签证便利？", ["task:74", "task:75"])]
    result = engine.search("第二条详细说说", context=turns)
    assert result.followup == "ordinal" and result.hits[0].unit_id == "task:75" and result.hits[0].support
    english = engine.search("tell me more about the first one", context=[_turn("visa measures?", ["task:74",
                                                                                                  "task:75"], "en")])
    assert english.hits[0].unit_id == "task:74"
    after = engine.search("下一项呢", context=[_turn("第48项是什么？", ["task:48"])])
    assert after.hits[0].unit_id == "task:49"


def test_attached_followup_is_full_only_when_its_citations_name_what_it_asks(engine):
    turns = [_turn("Does the plan make capital account transactions easier?", ["task:27"], "en")]
    # read with the conversation it cites task 27, which holds none of "euro exchange rate today"
    rate = engine.search("What is the euro exchange rate today?", context=turns)
    assert rate.followup in ("attachment", "none") and rate.coverage != "full"
    # a follow-up about the cited task itself keeps the full answer
    users = engine.search("Who can use it?", context=turns)
    assert users.followup == "attachment" and users.hits[0].unit_id == "task:27"
    # "it" points at the cited task: its other words ("supposed", "serve") are what it asks of it
    serve = engine.search("Who is it supposed to serve?", context=turns)
    assert serve.followup == "attachment" and serve.coverage == "full" and serve.support[0].unit_id == "task:27"


def test_content_reference_picks_the_unit_it_describes(engine):
    # the visa answer listed 75, 74, 73; "tell me more about the first one" then cited 75 alone
    turns = [_turn("签证方面有哪些便利措施？", ["task:75", "task:74", "task:73"]),
             _turn("第一条详细说说", ["task:75"])]
    transit = engine.search("那个过境免签的具体怎么说", context=turns)
    assert transit.followup == "reference" and transit.support[0].unit_id == "task:73"
    before = engine.search("过境免签那条能跨省停留吗", context=turns)
    assert before.followup == "reference" and before.support[0].unit_id == "task:73"
    # English "the … one", about a unit shown two answers back (as related: still on the screen)
    english = [TurnRecord("What does the plan offer on green finance?", "What does the plan offer on green finance?",
                          ["task:32", "task:35"], "full", "en", related_units=["task:34", "task:33"]),
               _turn("tell me more about the second one", ["task:35"], "en")]
    funds = engine.search("and the ESG funds one?", context=english)
    assert funds.followup == "reference" and funds.support[0].unit_id == "task:33"
    # deictic words describe nothing ("the other one"), and "这个方案" is the plan itself
    other = engine.search("and the other one?", context=english)
    assert other.followup != "reference"
    plan = engine.search("这个方案是什么时候印发的？", context=turns)
    assert plan.followup == "none" and plan.resolved_query is None


def test_a_topic_switch_opener_reads_the_question_alone_without_it(engine):
    turns = [_turn("罕见病药品进口有什么便利？", ["task:21"])]
    alone = engine.search("外资能办养老院吗？")
    switched = engine.search("换个事，外资能办养老院吗？", context=turns)
    assert switched.followup == "none" and switched.resolved_query == "外资能办养老院吗？"
    assert [h.unit_id for h in switched.hits[:5]] == [h.unit_id for h in alone.hits[:5]]
    assert switched.coverage == alone.coverage
    english = engine.search("Separately, can foreign firms run care homes?", context=[_turn("VPN?", ["task:1"], "en")])
    assert english.resolved_query == "Can foreign firms run care homes?" and english.support[0].unit_id == "task:17"


def test_a_continuation_does_not_replace_a_partial_answer_missing_the_same_detail(engine):
    from assistant.retrieval.followup_decision import answers_better
    from assistant.retrieval.scope.decision import Decision

    alone = Decision("partial", 0.4, ("status",), "the cited units do not state the detail asked for")
    attached = Decision("partial", 0.6, ("status",), "the cited units do not state the detail asked for")
    assert not answers_better(attached, alone)
    assert answers_better(Decision("partial", 0.6, (), "r"), Decision("partial", 0.4, (), "r"))
    assert answers_better(Decision("full", 0.9, (), "r"), alone)


def test_a_substituted_new_object_held_elsewhere_is_read_alone(engine):
    # "锂电池" and "运输" are held by task 47, not by the care-home task: the old frame does not fit
    turns = [_turn("外资能办养老机构吗？", ["task:17"])]
    batteries = engine.search("那锂电池运输呢？", context=turns)
    assert batteries.followup == "none" and batteries.support[0].unit_id == "task:47"
    # a bare object the old citations hold keeps the frame
    hospitals = engine.search("那医院呢？", context=turns)
    assert hospitals.followup == "substitution"


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


def test_a_narrowing_reaches_the_category_the_last_answer_was_drawn_from(engine):
    # the last answer cited one transport task; "those" are its category's tasks, and the ship-fuel ones hold the words
    turns = [_turn("Which transport measures does the plan have?", ["task:46"], "en")]
    fuel = engine.search("Which of those are about ship fuel?", context=turns)
    assert fuel.followup == "narrowing"
    assert {h.unit_id for h in fuel.hits[:3]} <= {"task:48", "task:49", "task:50"}
    drugs = engine.search("其中跟药品有关的是哪些", context=[_turn("医疗健康领域有哪些开放措施？", ["task:13"])])
    assert drugs.followup == "narrowing" and "——中" not in drugs.resolved_query  # "其中" is a cue, not "其"+"中"
    assert {"task:19", "task:21"} <= {h.unit_id for h in drugs.support}
    # a shown task that holds the words keeps the narrowing to the shown tasks
    leasing = engine.search("which of those are about leasing?",
                            context=[_turn("finance measures?", ["task:64", "task:65", "task:66"], "en")])
    assert leasing.support and leasing.support[0].unit_id in ("task:64", "task:65", "task:66")


def test_a_narrowing_lists_the_shown_tasks_that_hold_any_one_of_its_alternatives(engine):
    # "A or B": a task about either one is meant; the others the last answer showed are left out
    medical = _turn("医疗健康这块有哪些措施？", ["task:19", "task:20", "task:21", "task:22", "task:23"])
    either = engine.search("其中跟数据或者中医有关的是哪几条", context=[medical])
    assert either.followup == "narrowing" and either.coverage == "full"
    assert [h.unit_id for h in either.support] == ["task:22", "task:23"]  # in the order they were shown
    finance = _turn("What does the plan do for finance?", ["task:34", "task:35", "task:64", "task:65", "task:66"], "en")
    english = engine.search("Which of those involve credit ratings or chip equipment?", context=[finance])
    assert [h.unit_id for h in english.support] == ["task:35", "task:64"]
    # "哪几条" asks which of them, like "哪几项"
    assert engine.snapshot.followup.narrowing_alternatives("跟职业资格、执业有关的是哪几条") == ("职业资格", "执业")


def test_a_question_counting_the_plans_own_items_is_answered_by_the_list(engine):
    analyse = engine.snapshot.analyzer.analyse
    # "how many of its tasks": the cited tasks are the count; a count of anything else still asks a figure
    assert "quantity" not in analyse("数字身份和电子签名跨境互认，方案里有多少项相关的？").asked
    assert "quantity" not in analyse("How many measures are about e-signatures?").asked
    assert "quantity" in analyse("外资持股比例上限是多少？").asked
    assert "quantity" in analyse("跨境服务贸易负面清单一共有多少条？").asked  # the items of another list
    result = engine.search("数字身份和电子签名跨境互认，方案里有多少项相关的？")
    assert result.coverage == "full" and {"task:97", "task:98"} & {h.unit_id for h in result.support}


def test_a_follow_up_naming_a_body_the_plan_never_mentions_is_not_answered_fully(engine):
    from assistant.retrieval.followup_decision import unknown_names

    fuel = _turn("What does the plan say about bio-blended marine fuel?", ["task:50", "task:48"], "en")
    imo = engine.search("And how does the IMO count bio-blends under its carbon intensity rules?", context=[fuel])
    assert imo.coverage != "full" and "IMO" in imo.decision.reason
    # a name the plan holds keeps the answer full; the same question alone is left to the scope model
    assert unknown_names(engine.snapshot, "And PEPPOL, which platform is that?") == []
    assert unknown_names(engine.snapshot, "Would CAAC accept our EASA approval?") == ["CAAC", "EASA"]
    peppol = engine.search("And PEPPOL, can e-invoices connect to it?",
                           context=[_turn("电子发票跨境互认有什么措施？", ["task:99"])])
    assert peppol.coverage == "full" and peppol.support[0].unit_id == "task:99"


def test_a_self_contained_question_drags_no_old_context(engine):
    alone = engine.search("Can foreign companies run elderly care homes?")
    switched = engine.search("Can foreign companies run elderly care homes?",
                             context=[_turn("外资做VPN持股上限多少？", ["task:1"])])
    assert switched.followup == "none" and switched.resolved_query is None
    assert [h.unit_id for h in switched.hits] == [h.unit_id for h in alone.hits]


def test_e5_scores_the_whole_question_and_use_also_its_asking_clause(engine):
    from assistant.retrieval.pipeline import _retriever_texts

    question = ("We're a Dutch studio of twelve people making mobile games, based in Rotterdam — could we run our "
                "overseas publishing of games from an office in Xiamen?")
    analysis = engine.snapshot.analyzer.analyse(question)
    texts = _retriever_texts(engine.snapshot, analysis, engine.retriever_names)
    assert analysis.focus and texts["e5"] == [analysis.text] and texts["e5_k"] == [analysis.text]
    assert texts["use"] == [analysis.text, analysis.focus] and texts["bm25"] == [analysis.text, analysis.focus]
    # the neighbour features read the same vectors: no search encodes a second text with e5
    engine.clear_query_cache()
    engine.search(question)
    assert len(engine.snapshot.encoders["e5"]) == 1


def test_an_ordinal_counts_through_the_related_units_the_answer_listed(engine):
    last = TurnRecord("外资能办养老院吗？", "外资能办养老院吗？", ["task:17"], "full", "zh",
                      related_units=["task:16", "task:15"])
    result = engine.search("第三个具体说说", context=[last])
    assert result.followup == "ordinal" and result.hits[0].unit_id == "task:15" and result.hits[0].support
    # the turn is about that unit: it is retrieved (and remembered) with the unit's own text
    assert result.resolved_query and result.resolved_query[:12] in engine.index.node("task:15").text
    mixed = engine.search("first one 详细讲讲", context=[last])  # an English ordinal in a Chinese question
    assert mixed.followup == "ordinal" and mixed.hits[0].unit_id == "task:17"
    beyond = engine.search("第五个呢", context=[last])  # a position the answer never listed: its topic
    assert beyond.followup == "attachment" and beyond.hits[0].unit_id == "task:17"


def test_a_short_question_without_cues_is_also_read_as_a_continuation(engine):
    turns = [_turn("离境退税厦门有吗？", ["task:38"])]
    alone = engine.search("退多少？")
    continued = engine.search("退多少？", context=turns)
    assert alone.coverage == "none"
    assert continued.coverage == "partial" and continued.support and continued.support[0].unit_id == "task:38"
    assert continued.followup == "attachment" and "退税" in continued.resolved_query
    # a short question with a topic of its own is kept as it is: a topic switch
    switched = engine.search("数字人民币能跨境结算吗？", context=turns)
    assert switched.followup == "none" and switched.support[0].unit_id == "task:36"


def test_the_lead_tasks_annex_neighbours_follow_the_cited_units(engine):
    from assistant.retrieval.neighbours import neighbours_after_support

    nodes = engine.index.nodes
    position = {n.node_id: i for i, n in enumerate(nodes)}
    order = [(position[u], 1.0 - i / 10) for i, u in enumerate(["task:14", "task:80", "task:43", "task:13"])]
    moved = neighbours_after_support(order, [position["task:14"]], nodes)
    assert [nodes[p].node_id for p, _ in moved] == ["task:14", "task:13", "task:80", "task:43"]
    # a neighbour in another category, or a lead that is a body section, moves nothing
    other = [(position[u], 1.0) for u in ["task:24", "task:9", "task:25"]]  # 24 and 25: another category
    assert nodes[other[0][0]].metadata["category_no"] != nodes[other[1][0]].metadata["category_no"]
    assert neighbours_after_support(other, [other[0][0]], nodes) == other
    assert [nodes[p].node_id for p, _ in neighbours_after_support(other, [other[1][0]], nodes)] == [
        "task:24", "task:9", "task:25"]  # task 9's neighbours (8, 10) are not ranked
    section = [(position["section:5"], 1.0), (position["task:104"], 0.9)]
    assert neighbours_after_support(section, [section[0][0]], nodes) == section



def test_a_substituted_object_the_cited_units_never_name_is_not_answered_fully(engine):
    taiwan = engine.search("那台湾律师呢？", context=[_turn("香港律师能在厦门执业吗？", ["task:83"])])
    assert taiwan.followup == "substitution" and "台湾律师" in taiwan.resolved_query
    assert taiwan.coverage == "partial" and taiwan.support[0].unit_id == "task:83"
    nurses = engine.search("那外国护士呢？", context=[_turn("外籍医生能在厦门开诊所吗？", ["task:13"])])
    # task 14 names foreign nurses whole, task 13 only "foreign": a new object, answered fully by 14
    assert nurses.followup in ("substitution", "none") and nurses.coverage == "full"
    assert nurses.support[0].unit_id == "task:14"


def test_a_place_named_only_as_background_is_not_asked_about(engine):
    analyzer = engine.snapshot.analyzer
    # where the asker comes from, in a question about Xiamen: not another city's policy
    assert analyzer.asked_places("我是台湾来的医生，在高雄干了十几年了，想在厦门自己开个诊所，行不行？", "zh") == set()
    assert analyzer.asked_places("Our parent company is in Shenzhen; can we open a branch in Xiamen?", "en") == set()
    # asked about, or a question that does not name Xiamen: another place
    assert analyzer.asked_places("上海的外资医院政策是什么？", "zh") == {"上海"}
    assert analyzer.asked_places("厦门有这个政策，深圳有吗？", "zh") == {"深圳"}
    assert analyzer.asked_places("我们在深圳，能不能办外资医院？", "zh") == {"深圳"}



TASK_95_TOPIC = "建设跨境联运转换机制,研究各类运输方式的货物品名、危险货物划分等互认目录清单"  # what an ordinal stores


def test_a_pronoun_whose_own_words_name_an_earlier_shown_unit_refers_to_it(engine):
    # the first answer showed 30, 95 and 45; "第一个详细讲下" then cited 95 alone; "一箱到底" is task 45's
    turns = [_turn("我们做多式联运物流，铁路和海运衔接上有什么新举措", ["task:30", "task:95", "task:45"]),
             _turn("第一个详细讲下", ["task:95"], resolved=TASK_95_TOPIC)]
    one_box = engine.search("它说的一箱到底是咋回事", context=turns)
    assert one_box.followup == "reference" and one_box.support[0].unit_id == "task:45"
    # light words of its own ("有期限吗") leave "it" with what was just cited
    term = engine.search("它有期限吗", context=turns)
    assert term.followup == "attachment" and term.hits[0].unit_id == "task:95"


def test_an_attached_turn_replaces_the_previous_ask_instead_of_piling_it_up(engine):
    topic = "Remove the foreign equity ratio restrictions on Internet access services"
    turns = [_turn("Tell me more about the first one.", ["task:3"], "en", resolved=topic),
             _turn("Who is it supposed to serve?", ["task:3"], "en", resolved=f"Who is supposed to serve — {topic}?")]
    fee = engine.search("And who approves it?", context=turns)
    assert fee.followup == "attachment" and fee.resolved_query.count(" — ") == 1
    assert "serve" not in fee.resolved_query and topic in fee.resolved_query
    zh = [_turn("外资能办养老机构吗？", ["task:17"]),
          _turn("它有什么条件", ["task:17"], resolved="外资能办养老机构——有什么条件？")]
    who = engine.search("这个谁负责", context=zh)
    assert who.followup == "attachment" and "条件" not in who.resolved_query and "养老机构" in who.resolved_query


def test_a_new_object_sharing_only_a_light_word_with_the_cited_unit_is_read_alone(engine):
    # task 3 holds "services" of "software services", not "software"; task 10 holds both
    turns = [_turn("Which telecom businesses are open to foreign investors?", ["task:3"], "en")]
    software = engine.search("And software services?", context=turns)
    assert software.followup == "none" and software.support[0].unit_id == "task:10"
    # a word the cited unit shares nothing with is an attribute asked of it, not a new object
    fee = engine.search("And the application fee?", context=turns)
    assert fee.followup != "none" and fee.coverage != "full"


def test_a_question_that_says_it_keeps_to_the_conversation_at_equal_coverage(engine):
    # read alone, "它在哪些地方搞" finds consumption in general; both readings miss the shop's name
    turns = [_turn("化妆品现场定制呢，有没有试点", ["task:42"])]
    where = engine.search("它在哪些地方搞，具体哪个商场能体验", context=turns)
    assert where.coverage == "partial" and where.support[0].unit_id == "task:42"


def test_one_character_before_zhege_is_not_a_content_reference(engine):
    # "办这个签证": a verb and a determiner, not "X那个" naming a unit
    turns = [_turn("外籍高管来厦门能办多长的签证", ["task:74", "task:75"])]
    fee = engine.search("办这个签证要交多少钱", context=turns)
    assert fee.followup != "reference" and fee.structure is None and fee.coverage != "full"


def test_a_narrowing_is_remembered_with_the_topic_it_narrows(engine):
    turns = [_turn("Which telecom businesses does the plan open to foreign capital?", ["task:1", "task:2", "task:3"],
                   "en")]
    narrowed = engine.search("Which of those still has a cap?", context=turns)
    assert narrowed.followup == "narrowing" and "telecom businesses" in narrowed.resolved_query
    # a later "it" attaches to the telecom topic, not to "which of those"
    later = [*turns, _turn("Which of those still has a cap?", [h.unit_id for h in narrowed.support], "en",
                           resolved=narrowed.resolved_query)]
    serve = engine.search("Who is it allowed to serve?", context=later)
    assert serve.followup == "attachment" and "telecom businesses" in serve.resolved_query
    assert "those" not in serve.resolved_query and serve.coverage != "none"
