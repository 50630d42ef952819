"""The annotated corpus: manifest, English annotations, and the corpus/task commands."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from assistant.config import Settings
from assistant.ingest.corpus import apply_annotations, load_corpus, load_glossary, read_annotations
from assistant.ingest.parser import CorpusError, parse_document

REPO = Path(__file__).resolve().parents[1]
SOURCES = REPO / "ingest" / "sources"
ANNOTATIONS = REPO / "ingest" / "annotations" / "xiamen-2026-88.en.json"


@pytest.fixture(scope="module")
def corpus():
    return load_corpus(Settings(home=REPO))


def test_manifest_describes_the_source():
    manifest = json.loads((SOURCES / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["doc_number"] == "厦府〔2026〕88号"
    assert manifest["issuer"] == "厦门市人民政府"
    assert manifest["approved_by"] == "第145次市政府常务会议"
    assert manifest["printed"] == "2026-03-24"
    assert manifest["disclosure"] == "主动公开"
    assert (SOURCES / manifest["file"]).is_file()


def test_annotations_cover_every_task_category_and_section(corpus):
    assert all(t.text_en.strip() for t in corpus.tasks)
    assert all(t.category_en.strip() for t in corpus.tasks)
    assert all(c.title_en.strip() for c in corpus.categories)
    assert all(s.text_en.strip() and s.heading_en.strip() for s in corpus.sections)
    assert "by donation" in corpus.task(17).text_en and "non-profit" in corpus.task(17).text_en
    assert "50%" in corpus.task(1).text_en


def test_differentiated_tasks_are_the_five_of_section_2_2(corpus):
    differentiated = [t.number for t in corpus.tasks if t.differentiated]
    assert len(differentiated) == 5
    body = corpus.section("2.2").text
    assert "5 项差异化试点任务" in corpus.section("2.2").heading_path[-1]
    for number in differentiated:  # each one is announced in 二（二） and implemented by its task
        assert number in corpus.section("2.2").tasks
    assert "金砖国家服务贸易合作" in body and "离岸算力" in body


def test_body_measures_link_to_tasks(corpus):
    section = corpus.section("2.1")
    assert section.measures
    for sentence, tasks in section.measures:
        assert sentence in section.text and tasks
    assert any("外资股比" in sentence and 1 in tasks for sentence, tasks in section.measures)


def test_glossary_terms_are_rendered_consistently(corpus):
    glossary = load_glossary(Settings(home=REPO))
    for required in ("民办非企业单位", "外资股比", "综合保税区", "离境退税"):
        assert required in glossary
    assert glossary["民办非企业单位"] == "private non-enterprise unit"
    for task in corpus.tasks:
        for chinese, english in glossary.items():
            if chinese in task.text:
                assert english.lower() in task.text_en.lower(), (task.number, chinese, english)


def _copy_sources(tmp_path: Path) -> Settings:
    shutil.copytree(SOURCES, tmp_path / "sources")
    shutil.copytree(ANNOTATIONS.parent, tmp_path / "annotations")
    return Settings(home=REPO, sources_dir=tmp_path / "sources", annotations_dir=tmp_path / "annotations")


def test_missing_task_annotation_is_reported(tmp_path):
    settings = _copy_sources(tmp_path)
    path = settings.annotations_path / ANNOTATIONS.name
    data = json.loads(path.read_text(encoding="utf-8"))
    data["tasks"] = [t for t in data["tasks"] if t["task"] != 42]
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    with pytest.raises(CorpusError, match=r"missing \[42\]"):
        load_corpus(settings)


def test_stale_annotation_is_reported():
    raw = (SOURCES / "xiamen-service-opening-pilot-plan-2026.txt").read_text(encoding="utf-8")
    changed = parse_document(raw.replace("鼓励当地大力发展数据标注产业。", "鼓励当地发展数据标注产业。"))
    with pytest.raises(CorpusError, match="task 6 is stale"):
        apply_annotations(changed, read_annotations(ANNOTATIONS))


def test_changed_source_fails_its_checksum(tmp_path):
    settings = _copy_sources(tmp_path)
    source = settings.sources_path / "xiamen-service-opening-pilot-plan-2026.txt"
    source.write_text(source.read_text(encoding="utf-8") + "\n附加内容。\n", encoding="utf-8")
    with pytest.raises(CorpusError, match="does not match its manifest"):
        load_corpus(settings)


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "assistant.cli", *args], capture_output=True, text=True,
                          cwd=REPO, timeout=120)


def test_corpus_command_emits_the_structured_corpus():
    done = _cli("corpus")
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in done.stdout.splitlines()]
    meta = [r for r in records if r["kind"] == "meta"]
    tasks = [r for r in records if r["kind"] == "task"]
    sections = [r for r in records if r["kind"] == "section"]
    assert len(meta) == 1 and meta[0]["doc_number"] == "厦府〔2026〕88号" and meta[0]["printed"] == "2026-03-24"
    assert meta[0]["title"] and meta[0]["issuer"] == "厦门市人民政府"
    assert [t["task"] for t in tasks] == list(range(1, 112))
    assert all(t["text_en"].strip() for t in tasks)
    task17 = tasks[16]
    assert task17["category_no"] == 2 and task17["category"] == "提高医疗康养领域对外开放和服务保障水平"
    assert set(task17) >= {"kind", "task", "category_no", "category", "category_en", "text", "text_en",
                           "differentiated"}
    assert all(set(s) >= {"id", "heading_path", "text", "text_en", "tasks"} for s in sections)


def test_task_command_shows_both_languages():
    done = _cli("task", "17")
    assert done.returncode == 0, done.stderr
    assert "允许外商捐资举办非营利性养老机构" in done.stdout
    assert "elderly care institutions by donation" in done.stdout
    assert "提高医疗康养领域对外开放和服务保障水平" in done.stdout


def test_unknown_task_is_a_clear_error():
    for number in ("112", "0"):
        done = _cli("task", number)
        assert done.returncode != 0
        assert f"no task {number}" in done.stderr and "Traceback" not in done.stderr


def test_the_corpus_is_immutable(corpus):
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        corpus.task(17).text_en = "changed"  # type: ignore[misc]
    with pytest.raises(ValidationError):
        corpus.section("2.2").tasks = []  # type: ignore[misc]
    with pytest.raises(ValidationError):
        corpus.meta.title_en = "changed"  # type: ignore[misc]
    with pytest.raises(ValidationError):
        corpus.tasks = []  # type: ignore[misc]


def test_each_load_is_a_fresh_equal_corpus(corpus):
    again = load_corpus(Settings(home=REPO))
    assert again is not corpus and again == corpus


def test_annotating_builds_new_objects_and_leaves_the_parsed_corpus_alone():
    raw = (SOURCES / "xiamen-service-opening-pilot-plan-2026.txt").read_text(encoding="utf-8")
    parsed = parse_document(raw)
    snapshot = parsed.model_dump()
    annotated = apply_annotations(parsed, read_annotations(ANNOTATIONS))
    assert parsed.model_dump() == snapshot
    assert parsed.task(17).text_en == "" and "by donation" in annotated.task(17).text_en
    assert annotated.task(17) is not parsed.task(17) and annotated.task(17).text == parsed.task(17).text
    assert annotated.section("2.2").tasks and not parsed.section("2.2").tasks


def test_lookups_agree_with_the_lists(corpus):
    assert all(corpus.task(t.number) is t for t in corpus.tasks)
    assert all(corpus.section(s.id) is s for s in corpus.sections)
    assert all(corpus.category(c.number) is c for c in corpus.categories)
    assert corpus.task(999) is None and corpus.section("nope") is None and corpus.category(0) is None
    fewer = corpus.model_copy(update={"tasks": corpus.tasks[:10]})
    assert fewer.task(11) is None and fewer.task(10) is corpus.task(10)
    assert corpus.task(11) is not None
