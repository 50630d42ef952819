"""Task knowledge: coverage, shape, the leakage guard, and its use as index views."""

from __future__ import annotations

import json

import pytest

from assistant.config import Settings
from assistant.index.units import unit_nodes
from assistant.ingest.corpus import load_corpus
from assistant.ingest.knowledge import MIN_QUESTIONS, KnowledgeError, load_knowledge
from assistant.ingest.leakage import THRESHOLD, leaks, measured_questions, similarity, trigrams


@pytest.fixture(scope="module")
def corpus():
    return load_corpus(Settings())


@pytest.fixture(scope="module")
def knowledge(corpus):
    return load_knowledge(Settings().annotations_path, [n.node_id for n in unit_nodes(corpus)])


def test_every_unit_is_covered_with_enough_questions(knowledge, corpus):
    assert len(knowledge.units) == len(corpus.tasks) + len(corpus.sections)
    for unit in knowledge.units.values():
        assert len(unit.questions_zh) >= MIN_QUESTIONS and len(unit.questions_en) >= MIN_QUESTIONS
        assert unit.explain_zh and unit.explain_en and unit.terms


def _bigrams(text: str) -> set[str]:
    return {text[i:i + 2] for i in range(len(text) - 1)}


def test_each_explanation_is_about_its_own_unit(knowledge, corpus):
    texts = {n.node_id: _bigrams(n.text) for n in unit_nodes(corpus)}
    for uid, unit in knowledge.units.items():
        grams = _bigrams(unit.explain_zh)
        closest = max(texts, key=lambda other: len(grams & texts[other]) / (len(texts[other]) ** 0.5 + 1))
        assert closest == uid, f"{uid}'s explanation reads like {closest}"


def test_missing_and_malformed_knowledge_is_refused(tmp_path, corpus):
    folder = tmp_path / "knowledge"
    folder.mkdir()
    source = Settings().annotations_path / "knowledge" / "sections.json"
    data = json.loads(source.read_text(encoding="utf-8"))
    (folder / "sections.json").write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    with pytest.raises(KnowledgeError, match="missing"):
        load_knowledge(tmp_path, [n.node_id for n in unit_nodes(corpus)])
    data["units"][0]["questions_en"] = data["units"][0]["questions_en"][:3]
    (folder / "sections.json").write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    with pytest.raises(KnowledgeError, match=r"sections.json: unit section:"):
        load_knowledge(tmp_path)


def test_leakage_guard_no_example_question_restates_a_measured_question(knowledge):
    measured = measured_questions(Settings().eval_path)
    assert len(measured) > 1000  # dev, calibration, blind questions and conversation turns
    examples = [(uid, q) for uid, unit in knowledge.units.items() for _, q in unit.questions()]
    found = leaks(examples, measured)
    assert not found, f"{len(found)} example questions too close to eval/calibration questions: {found[:5]}"


def test_leakage_measure_catches_light_rewording_and_spares_different_questions():
    a = trigrams("Can foreign investors donate to set up a non-profit elderly care home in Xiamen?")
    b = trigrams("Can foreign investors donate to set up a non-profit care home in Xiamen?")
    c = trigrams("外资能不能在厦门开医院？")
    assert similarity(a, b) >= THRESHOLD > similarity(a, c)
    assert leaks([("task:17", "外资能不能在厦门开养老院？")], ["外资能不能在厦门开养老院?"])


@pytest.mark.slow
def test_knowledge_is_indexed_as_views_of_its_units(engine):
    manifest = engine.index.manifest
    assert manifest["views"]["_k"] >= 125 * 22  # explanations and every example question
    assert {"bm25_k", "use_k"} <= set(engine.retriever_names)
    # an everyday question meets its unit through the knowledge views
    result = engine.search("我们是做集装箱拼箱的，铁路和海运之间换箱太折腾，能不能一个箱子走到底？", top_k=3,
                           retrievers=["bm25_k"])
    assert result.hits and result.hits[0].unit_id == "task:45"
