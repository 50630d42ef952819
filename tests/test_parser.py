"""The parser on the real source and on small malformed copies."""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path

import pytest

from assistant.ingest.parser import (
    CorpusError,
    Line,
    ends_sentence,
    join_fragments,
    parse_document,
    repair_paragraphs,
    wrapped_blocks,
)

SOURCE = Path(__file__).resolve().parents[1] / "ingest" / "sources" / "xiamen-service-opening-pilot-plan-2026.txt"


@pytest.fixture(scope="module")
def raw() -> str:
    return SOURCE.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def parsed(raw):
    return parse_document(raw)


def test_counts_tasks_and_categories(parsed):
    assert [t.number for t in parsed.tasks] == list(range(1, 112))
    assert len(parsed.categories) == 14
    assert [c.number for c in parsed.categories] == list(range(1, 15))
    assert {t.category_no for t in parsed.tasks} == set(range(1, 15))


def test_exact_task_texts(parsed):
    assert parsed.task(1).text == (
        "向外资开放国内互联网虚拟专用网业务(外资股比不超过50%),吸引海外电信运营商通过设立合资公司,"
        "为相关省市当地的外商投资企业提供国内互联网虚拟专用网业务。"
    )
    assert parsed.task(17).text == (
        "允许外商捐资举办非营利性养老机构，符合条件的可依法登记为民办非企业单位。"
        "允许捐资举办非营利性养老机构的境外人员或境外机构人员在符合相关行业管理政策时，"
        "担任该非营利性养老机构理事、负责人、法定代表人等职务。"
    )
    assert parsed.task(111).text == (
        "建立数据安全监管体系，建立健全数据安全风险评估、报告、信息共享、监测预警、应急处置机制。"
    )
    assert parsed.task(17).category == "提高医疗康养领域对外开放和服务保障水平"
    assert parsed.task(17).category_no == 2
    assert parsed.task(111).category == "加强风险防控协同监管体系建设"


def test_metadata(parsed):
    meta = parsed.meta
    assert meta.doc_number == "厦府〔2026〕88号"
    assert meta.title == "厦门市人民政府关于印发服务业扩大开放综合试点实施方案的通知"
    assert meta.plan_title == "厦门市服务业扩大开放综合试点实施方案"
    assert meta.issuer == "厦门市人民政府"
    assert meta.issuing_office == "厦门市人民政府办公厅"
    assert meta.printed == date(2026, 3, 24)
    assert meta.approved_by == "第145次市政府常务会议"
    assert meta.disclosure == "主动公开"
    assert [b.number for b in meta.basis] == ["国函〔2025〕39号", "商资函〔2026〕5号"]
    assert meta.basis[0].title == "国务院关于〈加快推进服务业扩大开放综合试点工作方案〉的批复"
    assert meta.addressees == ["各区人民政府", "市直各委、办、局", "各开发区管委会", "各有关单位"]
    assert "人民银行厦门市分行" in meta.related_units
    assert "市通信管理局" in meta.related_units
    assert "翔安国际机场建设指挥部" in meta.related_units
    assert len(meta.related_units) == 13
    assert meta.cc == ["市委各部门"]
    assert meta.annex_title == "厦门市服务业扩大开放综合试点任务"


def test_sections_follow_heading_hierarchy(parsed):
    ids = [s.id for s in parsed.sections]
    assert ids == ["notice", "preamble", "1.1", "1.2", "2.1", "2.2", "3.1", "3.2", "4.1", "4.2", "5",
                   "6.1", "6.2", "distribution"]
    s22 = parsed.section("2.2")
    assert s22.heading_path == ["厦门市服务业扩大开放综合试点实施方案", "二、深化重点领域开放，提升产业国际竞争力",
                                "（二）探索推动 5 项差异化试点任务"]
    assert s22.text.startswith("集中优势资源")
    assert parsed.section("5").heading_path[-1] == "五、筑牢安全底线，强化风险防控协同监管体系建设"
    # headings are context of their section, never text of their own
    for section in parsed.sections:
        for paragraph in section.paragraphs:
            assert not re.match(r"^[一二三四五六七八九十]+、|^（[一二三四五六七八九十]+）", paragraph)


def test_page_break_artefacts_repaired(parsed):
    s32 = parsed.section("3.2").text
    assert "发挥海丝中央法务区参与国际标准制定优势" in s32
    assert "将国家试点任务细化为可落地的具体举措" in parsed.section("1.1").text
    assert "支持建设航空飞机维修基地" in parsed.section("2.1").text
    assert "合作，进一步完善风险评估" in parsed.section("5").text
    assert "人民银行厦门市分行" in parsed.section("distribution").text
    # No paragraph anywhere ends mid-sentence, and each body section is one paragraph here.
    for section in parsed.sections:
        for paragraph in section.paragraphs:
            assert ends_sentence(paragraph) or section.id == "distribution", (section.id, paragraph[-10:])
    for task in parsed.tasks:
        assert ends_sentence(task.text), task.number
    assert all(len(parsed.section(i).paragraphs) == 1 for i in ("1.1", "2.1", "3.2", "5"))


def test_nothing_dropped(parsed, raw):
    """Every CJK character of the source lands in the corpus (modulo headings and layout)."""
    corpus_text = "".join(
        [parsed.meta.title, parsed.meta.doc_number, f"{parsed.meta.issuer}文件", parsed.meta.plan_title,
         "附件", "序号", "任务内容",  # layout: the annex mark and the table header
         parsed.meta.annex_title or ""]
        + [h for s in parsed.sections for h in s.heading_path] + [s.text for s in parsed.sections]
        + [c.label for c in parsed.categories] + [t.text for t in parsed.tasks]
    )
    for line in raw.splitlines():
        for chunk in re.findall(r"[\u4e00-\u9fff]{2,}", line):
            assert chunk in corpus_text, chunk


# --- repair rules on small cases ---------------------------------------------------------------
def test_repair_joins_cut_sentence_and_word():
    pieces = [Line(1, "发挥海丝中央法务区参"), Line(3, "与国际标准制定优势。"), Line(5, "第二段。")]
    assert [p.text for p in repair_paragraphs(pieces)] == ["发挥海丝中央法务区参与国际标准制定优势。", "第二段。"]


def test_repair_keeps_real_paragraphs_and_headings():
    pieces = [Line(1, "第一段结束。"), Line(2, "（一）先行先试"), Line(3, "正文，"), Line(5, "继续。"),
              Line(6, "二、下一部分"), Line(7, "（此件主动公开）")]
    assert [p.text for p in repair_paragraphs(pieces)] == [
        "第一段结束。", "（一）先行先试", "正文，继续。", "二、下一部分", "（此件主动公开）"]


def test_wrapped_lines_join_but_blank_lines_separate():
    lines = [Line(1, "有关单位：人民"), Line(2, "银行厦门市分行。"), Line(3, ""), Line(4, "厦门市人民政府办公厅")]
    assert [b.text for b in wrapped_blocks(lines)] == ["有关单位：人民银行厦门市分行。", "厦门市人民政府办公厅"]


def test_latin_fragments_keep_a_space():
    assert join_fragments("cross-border", "services") == "cross-border services"
    assert join_fragments("人民", "银行") == "人民银行"


# --- validation on malformed copies --------------------------------------------------------------
def _replace_line(raw: str, old_prefix: str, new: str | None) -> str:
    lines = raw.split("\n")
    index = next(i for i, line in enumerate(lines) if line.startswith(old_prefix))
    if new is None:
        del lines[index]
    else:
        lines[index] = new
    return "\n".join(lines)


def _line_of(raw: str, prefix: str) -> int:
    return next(i for i, line in enumerate(raw.split("\n"), start=1) if line.startswith(prefix))


def test_gap_in_numbering_is_reported_with_line(raw):
    broken = _replace_line(raw, "18\t", None)
    with pytest.raises(CorpusError) as err:
        parse_document(broken)
    assert "gap in task numbering: expected 18, found 19" in str(err.value)
    assert err.value.line == _line_of(broken, "19\t")


def test_duplicate_number_is_reported(raw):
    broken = _replace_line(raw, "18\t", "17\t重复的任务。")
    with pytest.raises(CorpusError) as err:
        parse_document(broken)
    assert "duplicate task number 17" in str(err.value)
    assert err.value.line == _line_of(raw, "18\t")


def test_empty_task_is_reported(raw):
    broken = _replace_line(raw, "42\t", "42\t")
    with pytest.raises(CorpusError) as err:
        parse_document(broken)
    assert "task 42 has no text" in str(err.value)
    assert err.value.line == _line_of(raw, "42\t")


def test_category_without_tasks_is_reported(raw):
    broken = raw.replace("十四、加强风险防控协同监管体系建设", "十四、空类别\n十五、加强风险防控协同监管体系建设")
    with pytest.raises(CorpusError) as err:
        parse_document(broken)
    assert "category 十四、空类别 has no tasks" in str(err.value)


def test_stray_text_in_annex_is_not_dropped(raw):
    broken = _replace_line(raw, "序号\t", "序号\t任务内容\n这一行既不是类别也不是任务")
    with pytest.raises(CorpusError) as err:
        parse_document(broken)
    assert "unexpected line in the annex" in str(err.value)


def test_task_cut_by_page_break_is_joined(raw):
    original = parse_document(raw).task(25).text
    cut = raw.replace("允许商业保理公司在符合", "允许商业保理公司在\n\n符合")
    assert parse_document(cut).task(25).text == original


def test_other_city_shape_parses():
    """A different city, numbering and size: nothing is tied to Xiamen's 111 tasks."""
    text = "\n".join([
        "大连市人民政府文件", "", "大政发〔2026〕3号", "", "大连市人民政府关于印发大连市试点方案的通知", "",
        "各区人民政府：", "", "《大连市试点方案》已经第9次市政府常务会议研究通过，现印发给你们。", "",
        "（此件公开发布）", "", "大连市试点方案", "", "一、总体要求", "", "坚持开放，", "", "稳步推进。", "",
        "附件：大连市试点任务", "", "附件", "", "大连市试点任务", "", "序号\t任务内容",
        "一、数字领域\t", "1\t开放数据业务。", "2\t发展数字贸易。", "二、金融领域\t", "3\t深化QFLP试点。", "",
        "抄送：市委各部门。", "", "大连市人民政府办公室", "", "2026年1月5日印发", "",
    ])
    doc = parse_document(text)
    assert doc.meta.doc_number == "大政发〔2026〕3号"
    assert doc.meta.issuer == "大连市人民政府"
    assert doc.meta.disclosure == "公开发布"
    assert doc.meta.approved_by == "第9次市政府常务会议"
    assert doc.meta.printed == date(2026, 1, 5)
    assert [t.number for t in doc.tasks] == [1, 2, 3]
    assert [c.title for c in doc.categories] == ["数字领域", "金融领域"]
    assert doc.section("1").text == "坚持开放，稳步推进。"
