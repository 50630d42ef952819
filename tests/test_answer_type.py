"""Expected answer types and the place check: the vocabulary data files read by their checks, no models."""

from __future__ import annotations

from functools import cache

import pytest

from assistant.config import Settings
from assistant.ingest.vocabulary import load_vocabulary
from assistant.retrieval.scope.answer_types import AnswerTypeCheck
from assistant.retrieval.scope.places import PlaceCheck


@cache
def _vocabulary():
    return load_vocabulary(Settings().annotations_path)


def expected_types(question: str) -> set[str]:
    return AnswerTypeCheck(_vocabulary().answer_types).expected(question)


def unmet_types(question: str, texts: list[str]) -> set[str]:
    return AnswerTypeCheck(_vocabulary().answer_types).unmet(question, texts)


@pytest.mark.parametrize(("question", "kind"), [
    ("办理这个许可需要哪些材料？", "procedure"),
    ("How do we apply for the pilot?", "procedure"),
    ("去哪里办理登记？", "procedure"),
    ("要满足什么条件才能申请？", "requirement"),
    ("What are the eligibility criteria?", "requirement"),
    ("能拿到多少奖励？", "incentive"),
    ("Is there a tax break for this?", "incentive"),
    ("违规了会被罚款吗？", "penalty"),
    ("这个试点放在哪个区？", "place"),
    ("Which airport will host it?", "place"),
    ("是哪家公司在建？", "organisation"),
    ("Which company runs the platform?", "organisation"),
    ("Has the equity cap been lifted yet?", "status"),
    ("这个试点已经落地了吗？", "status"),
    ("目前进展怎么样？", "status"),
    ("Which hospitals are the designated ones?", "organisation"),  # plural forms ask for names too
    ("是哪家交易所在做？", "organisation"),
    ("Which roads are in the pilot?", "place"),
    ("在保税区还是在港区？", "place"),  # a choice between places
])
def test_question_patterns(question, kind):
    assert kind in expected_types(question)


@pytest.mark.parametrize("question", [
    "Can a foreign company set up a subsidiary here?",  # a subsidiary is not a subsidy
    "审批手续会不会简化？",  # asks whether procedures get simpler, not what they are
    "Where can I use my card?",  # not a where-to-apply question
    "方案有哪些措施？",
    "Which companies can invest in it?",  # a kind of company, not a named one
    "外资股比限制取消了吗？",  # asks what the plan does with the cap, answered by its text
    "Can scientists who already hold a green card be legal representatives?",  # "already" without has/did
    "Does the plan address biosafety risks?",  # the verb, not a postal address
    "国外考的职业资格证书，在厦门认不认？",  # the certificate is what it asks about, not a requirement
    "Which banks can offer it?",
])
def test_no_false_answer_types(question):
    assert not expected_types(question) & {"procedure", "incentive", "requirement", "penalty", "place", "organisation",
                                           "status"}


def test_unmet_only_when_the_evidence_lacks_the_fact():
    assert unmet_types("股比上限多少？", ["外资股比不超过50%"]) == set()
    assert unmet_types("How many common pilot tasks are there?", ["Focus on the 106 common pilot tasks"]) == set()
    assert unmet_types("How much is the reward?", ["valid for up to 2 years", "branches or subsidiaries"]) == {
        "incentive", "quantity"}
    assert unmet_types("有补贴吗？", ["给予一次性补贴"]) == set()
    assert unmet_types("试点在哪个区？", ["在湖里区开展试点"]) == set()
    assert unmet_types("试点在哪个区？", ["支持开展试点"]) == {"place"}
    assert unmet_types("是哪家公司？", ["支持外资企业参与"]) == {"organisation"}
    # a plan states intentions: whether something has happened is stated only where it says so
    assert unmet_types("Has China joined CPTPP yet?", ["Align with the rules of the CPTPP"]) == {"status"}
    assert unmet_types("方案已经通过了吗？", ["已经第145次市政府常务会议研究通过"]) == set()


def test_indefinite_ji_is_not_a_question_word():
    # "十几年", "收治了几个患者", "哪几条": a dozen-odd years, a few patients, which ones: nothing to count
    assert not expected_types("我在高雄干了十几年了，想在厦门开个小诊所，行不行？") & {"duration", "quantity"}
    assert "quantity" not in expected_types("我们医院收治了几个罕见病患者，能不能申请进口药？")
    assert "quantity" not in expected_types("给船加燃料油相关的措施有哪几条？")
    assert "quantity" not in expected_types("好几家银行都在问，这个能做吗？")
    # a question word still asks
    assert "duration" in expected_types("签证能办几年？")
    assert "quantity" in expected_types("厦门有几个片区？")


def test_a_removed_cap_answers_a_question_about_the_cap():
    # "Is there still a cap?" is answered by a task that removes it; a task that only relaxes it states no figure
    assert unmet_types("Is there still a cap on foreign ownership of app stores?",
                       ["Remove the foreign equity ratio restrictions on app store services."]) == set()
    assert unmet_types("外资占股有没有上限？", ["取消应用商店服务业务外资股比限制。"]) == set()
    assert unmet_types("外资最多能占多少？", ["依法放宽电信增值服务外资股比限制"]) == {"quantity"}


def test_one_word_before_the_place_noun_still_asks_for_a_place():
    assert "place" in expected_types("Which border ports will the green channel connect Xiamen to?")
    assert "place" in expected_types("Where are the testing platforms located?")


def test_colloquial_and_verb_forms_of_the_asked_detail():
    assert "date" in expected_types("那个口岸啥时候建好？")  # 啥 is the spoken 什么
    assert "money" in expected_types("What do they charge for it?")


def test_place_check_ignores_places_the_plan_names():
    check = PlaceCheck(_vocabulary().gazetteer,
                       ["支持港澳台医师在厦门开办诊所", "doctors from Hong Kong, Macao and Taiwan", "福建自贸试验区"])
    assert check.unknown("上海有什么政策？") == {"上海"}
    assert check.unknown("What about Shanghai's rules?") == {"shanghai"}
    assert check.unknown("香港医生能来吗") == set()
    assert check.unknown("Can Taiwanese doctors open clinics in Fujian?") == set()


def test_answer_type_labels_name_the_missing_detail_in_both_languages():
    check = AnswerTypeCheck(_vocabulary().answer_types)
    assert {check.label(name, "en") for name in check.types} and all(
        check.label(name, "zh") != check.label(name, "en") for name in check.types)
