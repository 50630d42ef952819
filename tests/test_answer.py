"""The extractive answer composer on the real engine (real models, real FAISS, a temporary index)."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from assistant.answer.chat import Assistant
from assistant.answer.compose import compose_answer

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def assistant(engine, settings) -> Assistant:
    """The assistant over the session engine of conftest.py (a temporary index)."""
    return Assistant(engine, settings)


def lead(markdown: str) -> str:
    return markdown.split("\n\n")[0]


def cited_numbers(answer) -> list[int]:
    return [c.task for c in answer.citations if c.task is not None]


def inline_tags(markdown: str) -> set[int]:
    return {int(a or b) for a, b in re.findall(r"\[第(\d+)项\]|\[Task (\d+)\]", markdown)}


def test_care_home_english(assistant):
    answer = assistant.ask("Can foreign companies run elderly care homes?")
    assert answer.lang == "en"
    assert answer.mode == "extractive"
    assert cited_numbers(answer)[0] == 17
    first = lead(answer.answer)
    assert first.startswith("Yes.")
    assert "[Task 17]" in first
    assert "donation" in first and "non-profit" in first
    assert not re.search(r"[\u4e00-\u9fff]", first)  # the lead is in the question's language
    assert 1 <= len(answer.citations) <= 3


def test_care_home_chinese(assistant):
    answer = assistant.ask("外资能办养老院吗？")
    assert answer.lang == "zh"
    assert cited_numbers(answer)[0] == 17
    first = lead(answer.answer)
    assert first.startswith("可以。")
    assert "[第17项]" in first
    assert "捐资" in first and "非营利" in first
    assert "Task" not in answer.answer


def test_hospital_is_a_medical_institution(assistant, engine):
    answer = assistant.ask("外资能办医院吗？")
    assert set(cited_numbers(answer)) & {15, 16}  # the medical-institution tasks
    assert "医疗机构" in lead(answer.answer)
    assert 16 in [h.task for h in engine.search("外资能办医院吗？").hits[:3]]


def test_inline_tags_match_citations_and_no_html(assistant):
    for question in ("Can foreign companies provide VPN services?", "外资能办养老院吗？",
                     "What are all the visa facilitation measures?"):
        answer = assistant.ask(question)
        assert inline_tags(answer.answer) <= set(cited_numbers(answer))
        assert not re.search(r"<[a-zA-Z/][^>]*>", answer.answer)


def test_conditions_are_kept(assistant):
    answer = assistant.ask("Can foreign companies provide VPN services?")
    assert cited_numbers(answer)[0] == 1
    assert "not exceeding 50%" in lead(answer.answer)
    assert "外资股比不超过50%" in answer.answer  # the Chinese original is shown too


def test_list_question_cites_several_tasks(assistant):
    answer = assistant.ask("签证方面有哪些便利措施？")
    numbers = cited_numbers(answer)
    assert {74, 75} <= set(numbers)
    assert len(numbers) >= 2
    english = cited_numbers(assistant.ask("List the green finance measures"))
    assert 32 in english and len(english) >= 2 and set(english) <= {32, 33, 34, 35}  # the green-finance tasks


def test_out_of_scope_rendering(engine):
    question = "外国人能在厦门买房吗？"
    result = engine.search(question)
    weak = dataclasses.replace(result, decision=dataclasses.replace(result.decision, coverage="none"))
    markdown, citations, mode, _related = compose_answer(weak, engine.corpus, question, "zh")
    assert mode == "out_of_scope"
    assert citations == []
    assert markdown.startswith("该方案（厦府〔2026〕88号）未涉及这一问题。")
    assert "可能相关" in markdown
    assert not inline_tags(markdown)  # related tasks are listed, never cited as an answer
    assert "可以。" not in markdown

    english = engine.search("Can foreigners buy an apartment in Xiamen?")
    english = dataclasses.replace(english, decision=dataclasses.replace(english.decision, coverage="none"))
    markdown, citations, mode, _ = compose_answer(english, engine.corpus, "Can foreigners buy an apartment?", "en")
    assert mode == "out_of_scope" and citations == []
    assert markdown.startswith("The plan (厦府〔2026〕88号) does not address this.")
    assert "Possibly related" in markdown and "Yes." not in markdown


@pytest.mark.skipif(not (ROOT / "eval" / "questions.jsonl").exists(),
                    reason="scope calibration needs eval/questions.jsonl")
@pytest.mark.parametrize(("question", "statement"), [
    ("外国人能在厦门买房吗？", "该方案（厦府〔2026〕88号）未涉及这一问题。"),
    ("Can foreigners buy property in Xiamen?", "The plan (厦府〔2026〕88号) does not address this."),
])
def test_out_of_scope_end_to_end(assistant, question, statement):
    answer = assistant.ask(question)
    assert answer.mode == "out_of_scope"
    assert answer.in_scope is False
    assert answer.answer.startswith(statement)
    assert answer.citations == []


def test_lookup_card(assistant):
    answer = assistant.ask("第17项是什么")
    assert answer.mode == "lookup"
    assert cited_numbers(answer) == [17]
    assert "允许外商捐资举办非营利性养老机构" in answer.answer
    assert "二、提高医疗康养领域对外开放和服务保障水平" in answer.answer

    english = assistant.ask("task 17")
    assert cited_numbers(english) == [17]
    assert "Allow foreign investors to establish non-profit elderly care institutions" in english.answer


def test_invalid_task_number(assistant):
    answer = assistant.ask("第120项")
    assert answer.mode == "lookup"
    assert answer.citations == []
    assert answer.in_scope is False
    assert "没有第120项" in answer.answer and "1–111" in answer.answer
    english = assistant.ask("What does task 120 say?")
    assert "There is no Task 120" in english.answer


def test_metadata_questions(assistant):
    answer = assistant.ask("这个方案是什么时候印发的？")
    assert "2026年3月24日" in answer.answer
    meeting = assistant.ask("Which meeting approved the plan?")
    assert "第145次市政府常务会议" in meeting.answer and "145th" in meeting.answer
    assert meeting.citations and meeting.citations[0].section_id == "notice"
    # the document number is not printed in any unit's text: the parsed metadata states it, fully
    number = assistant.ask("这个文件的文号是多少？")
    assert number.coverage == "full" and "厦府〔2026〕88号" in number.answer
    issued = assistant.ask("When was the plan issued?")
    assert issued.coverage == "full" and "24 March 2026" in issued.answer
    assert [c.section_id for c in issued.citations] == ["distribution"] and "[Distribution]" in issued.answer


def test_body_question_cites_a_passage(engine):
    """The composer's rendering of a plan-body hit (scope forced in: this tests the composer)."""
    question = "How will the plan be implemented and who is responsible?"
    result = engine.search(question)
    result = dataclasses.replace(result, decision=dataclasses.replace(result.decision, coverage="full"))
    markdown, citations, mode, _related = compose_answer(result, engine.corpus, question, "en")
    assert mode == "extractive"
    assert citations[0].task is None and citations[0].section_id is not None
    assert citations[0].text_en  # English summary for an English question
    assert "[Section " in lead(markdown)
    assert "›" in markdown  # the heading path
