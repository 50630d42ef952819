"""Questions typed in pinyin: read back into the plan's Chinese by query analysis, on the real index."""

from __future__ import annotations

import json

import httpx
import pytest

from assistant.answer.chat import Assistant
from assistant.retrieval.pinyin import PinyinReader, pinyin_reader


@pytest.fixture(scope="module")
def reader(engine) -> PinyinReader:
    return pinyin_reader(engine.index)


def test_spacing_and_a_typo_do_not_change_the_reading(reader):
    readings = {reader.read(q) for q in ("shuju jiaoyi", "shu ju jiao yi", "shujujiaoyi", "shujujiaoyii")}
    assert readings == {"数据交易"}


def test_mixed_questions_keep_their_english_and_chinese(reader):
    assert reader.read("green finance lvse jinrong") == "green finance 绿色金融"
    assert reader.read("QFLP shidian") == "QFLP 试点"
    assert reader.read("waizi yiyuan 设立") == "外资 医院 设立"


def test_english_questions_are_never_read_as_pinyin(reader, settings):
    """Not even those that name a place in pinyin ("Fujian" is also 附件, the annex)."""
    assert reader.read("How long is maternity leave in Fujian?") is None
    assert reader.read("Can we open a hospital in Xiamen with a partner from Hangzhou?") is None
    english = [json.loads(line)["question"] for name in ("questions.jsonl", "calibration.jsonl")
               for line in (settings.eval_path / name).read_text(encoding="utf-8").splitlines()
               if json.loads(line)["lang"] == "en"]
    assert len(english) > 400
    assert [q for q in english if reader.read(q) is not None] == []


def test_words_outside_the_corpus_are_not_invented(reader):
    """Pinyin that names nothing the plan says stays as typed (the scope model then decides)."""
    assert reader.read("hangzhou xihu") is None


def test_search_runs_on_the_chinese_reading(engine):
    result = engine.search("baoshui ranyou jiazhu", top_k=5)
    assert result.analysis.pinyin and result.lang == "zh"
    assert "燃油" in result.resolved_query and "baoshui" not in result.resolved_query
    tasks = [h.task for h in result.hits if h.support]
    assert tasks and "燃料油" in engine.corpus.task(tasks[0]).text
    assert result.coverage == "full"
    assert result.to_json()["resolved_query"] == result.resolved_query


def test_reading_is_a_setting(engine, settings):
    from assistant.retrieval.engine import SearchEngine

    plain = SearchEngine.load(settings.model_copy(update={"pinyin": False}), rebuild="never")
    result = plain.search("baoshui ranyou jiazhu", top_k=5)
    assert not result.analysis.pinyin and result.resolved_query is None


def test_a_pinyin_question_is_answered_in_chinese(engine, settings):
    answer = Assistant(engine, settings).ask("lvse jinrong")
    assert answer.lang == "zh" and answer.coverage == "full"
    assert answer.resolved_query == "绿色金融"
    assert "绿色金融" in answer.answer and "第32项" in answer.answer


def test_api_search_shows_what_was_searched(live_server):
    with httpx.Client(base_url=live_server, timeout=120) as client:
        body = client.post("/api/search", json={"query": "kuajing dianshang", "top_k": 3}).json()
    assert body["resolved_query"] == "跨境 电商"
    assert body["coverage"] != "none"
