"""Documents as a dimension: a library of the real plan and a synthetic one, indexed once per session.

The second plan (``library_plan.py``) is in the shape the parser reads (header, number, notice, body,
annex of numbered tasks, closing block), on a topic the real plan never touches (beekeeping). Every
text of it says that it is a fictitious test document, not a real policy. The library's index is
conftest's ``library_engine``, which tests/test_postgres_library.py publishes to PostgreSQL.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import httpx
import pytest

from assistant.answer.chat import Assistant
from assistant.ingest.library import UnknownDocument, load_library
from conftest import OpenAIStub, chat_completion, prompt_and_shown, served_stub
from library_plan import FAKE, NUMBER, PLAN_TITLE, PREFIX, PRIMARY, SOURCE

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def library_assistant(library_engine, library_settings) -> Assistant:
    assistant = Assistant(library_engine, library_settings)
    yield assistant
    assistant.close()


BEES = "蜂农可以为果园提供蜜蜂授粉服务吗？"


def test_library_loads_primary_first(library_settings):
    library = load_library(library_settings)
    assert library.numbers == [PRIMARY, NUMBER] and library.multiple
    fake = library.require(NUMBER)
    assert FAKE in fake.corpus.meta.plan_title and FAKE in fake.corpus.section("notice").text
    assert [t.number for t in fake.corpus.tasks] == [1, 2, 3, 4, 5]
    assert library.of_unit(f"{PREFIX}task:4") == (fake, "task:4")
    assert library.of_unit("task:4")[0].number == PRIMARY


def test_every_document_is_indexed(library_engine):
    index = library_engine.index
    ids = [n.node_id for n in index.nodes]
    assert ids[:111] == [f"task:{n}" for n in range(1, 112)]  # the primary plan's ids as they always were
    assert f"{PREFIX}task:5" in ids and f"{PREFIX}section:notice" in ids
    assert index.node(f"{PREFIX}task:2").metadata["document"] == {
        "number": NUMBER, "title": PLAN_TITLE, "issuer": "虚构市测试局", "date": "2026-05-01"}
    assert index.node("task:17").metadata["document"]["number"] == PRIMARY
    assert index.knowledge.get(f"{PREFIX}task:2") is None  # no knowledge view for other documents
    assert index.manifest["documents"] == [PRIMARY, NUMBER]


def test_a_question_on_the_synthetic_topic_finds_its_units(library_engine, library_assistant):
    result = library_engine.search(BEES, top_k=5)
    assert result.hits[0].unit_id == f"{PREFIX}task:4"
    assert result.hits[0].document["number"] == NUMBER
    assert result.to_json()["results"][0]["document"]["number"] == NUMBER
    answer = library_assistant.ask(BEES)
    assert answer.citations and answer.citations[0].document["number"] == NUMBER
    assert answer.citations[0].to_json()["document"]["title"] == PLAN_TITLE
    assert f"[{NUMBER} 第4项]" in answer.answer and "[第4项]" not in answer.answer
    english = library_assistant.ask("Can beekeepers offer pollination services to orchards?")
    if english.citations:
        assert f"[Doc No. {NUMBER} Task" in english.answer


def test_primary_filter_excludes_the_synthetic_plan(library_engine, library_assistant):
    result = library_engine.search(BEES, top_k=20, document=PRIMARY)
    assert result.hits and all("/" not in h.unit_id for h in result.hits)
    assert all(h.document["number"] == PRIMARY for h in result.hits)
    elderly = library_assistant.ask("外资能办养老机构吗？", document=PRIMARY)
    assert 17 in [c.task for c in elderly.citations]
    assert f"[{PRIMARY} 第17项]" in elderly.answer  # a library's tags name the document, the primary's too


def test_synthetic_filter_keeps_only_its_units(library_engine):
    result = library_engine.search("外资能办养老机构吗？", top_k=20, document=NUMBER)
    assert result.hits and all(h.unit_id.startswith(PREFIX) for h in result.hits)
    assert result.to_json()["document"] == NUMBER


def test_lookup_reads_in_the_filtered_document(library_engine, library_assistant):
    assert library_engine.search("第2项", top_k=3).hits[0].unit_id == "task:2"  # no filter: the primary plan
    hit = library_engine.search("第2项", top_k=3, document=NUMBER).hits[0]
    assert hit.unit_id == f"{PREFIX}task:2" and "溯源" in hit.text
    answer = library_assistant.ask("第2项是什么", document=NUMBER)
    assert answer.mode == "lookup" and answer.citations[0].document["number"] == NUMBER
    assert f"[{NUMBER} 第2项]" in answer.answer
    missing = library_assistant.ask("第17项", document=NUMBER)  # the synthetic annex has five tasks
    assert not missing.citations and "1–5" in missing.answer
    count = library_assistant.ask("附件一共有多少项任务？", document=NUMBER)
    assert "5项" in count.answer


def test_unknown_document_is_a_clear_error(library_engine, library_assistant, library_settings, serve_app):
    with pytest.raises(UnknownDocument, match=NUMBER.replace("〔", ".").replace("〕", ".")):
        library_engine.search("蜂蜜", document="没有〔2026〕1号")
    with pytest.raises(UnknownDocument):
        library_assistant.ask("蜂蜜", document="没有〔2026〕1号")
    from assistant.api.app import create_app

    app = create_app(library_settings, engine=library_engine, assistant=library_assistant, ui=False)
    with serve_app(app) as url, httpx.Client(base_url=url, timeout=120) as client:
        for path, body in (("/api/search", {"query": "蜂蜜", "document": "没有〔2026〕1号"}),
                           ("/api/ask", {"question": "蜂蜜", "document": "没有〔2026〕1号"})):
            response = client.post(path, json=body)
            assert response.status_code == 422, response.text
            assert "unknown document" in response.json()["error"] and NUMBER in response.json()["error"]
        found = client.post("/api/search", json={"query": BEES, "document": NUMBER, "top_k": 3}).json()
        assert all(r["document"]["number"] == NUMBER for r in found["results"])
        asked = client.post("/api/ask", json={"question": BEES, "document": NUMBER}).json()
        assert asked["citations"][0]["document"]["number"] == NUMBER


def test_one_document_reads_as_before(engine):
    """The default engine (no ASSISTANT_LIBRARY): tags without a document, hits still carry theirs."""
    assert not engine.library.multiple
    assistant = Assistant(engine)
    try:
        answer = assistant.ask("外资能办养老机构吗？")
    finally:
        assistant.close()
    assert "[第17项]" in answer.answer and PRIMARY + " 第" not in answer.answer
    assert answer.citations[0].document["number"] == PRIMARY
    assert engine.search("第17项", top_k=1).hits[0].document["number"] == PRIMARY
    with pytest.raises(UnknownDocument):
        engine.search("养老", document=NUMBER)


def test_the_readme_example_folder_is_this_plan():
    from assistant.ingest.library import load_document

    example = load_document(REPO / "examples" / "library" / "bees")
    assert example.number == NUMBER and example.corpus.source_sha256 == hashlib.sha256(SOURCE.encode()).hexdigest()


def test_cli_document_option(library_engine, library_settings):
    """``search --document`` on the module's library index; an unknown number is a one-line error."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, ASSISTANT_INDEX_DIR=str(library_settings.index_path),
               ASSISTANT_LIBRARY=json.dumps([str(p) for p in library_settings.library_paths]),
               ASSISTANT_CONVERSATION_DB=str(library_settings.conversations_path),
               ASSISTANT_FEEDBACK_DB=str(library_settings.feedback_path))
    cli = [sys.executable, "-m", "assistant.cli", "search", "第2项", "--json", "--top-k", "1"]
    found = subprocess.run([*cli, "--document", NUMBER], env=env, capture_output=True, text=True, timeout=300)
    assert found.returncode == 0, found.stderr
    result = json.loads(found.stdout)["results"][0]
    assert result["unit_id"] == f"{PREFIX}task:2" and result["document"]["number"] == NUMBER
    unknown = subprocess.run([*cli, "--document", "没有〔2026〕1号"], env=env, capture_output=True, text=True,
                             timeout=300)
    assert unknown.returncode == 2 and "unknown document" in unknown.stderr and "Traceback" not in unknown.stderr


# --- generative (LLM) mode: a real local OpenAI-compatible server with a canned completion --------------


class CitingLLM(OpenAIStub):
    """Cites, in the question's language, the first task it was shown plainly ([第N项] / [Task N]), the
    last one in a library's style ([<number> 第N项]) and a task of a document it was not shown."""

    def reply(self, body: dict) -> tuple[int, dict]:
        prompt, shown = prompt_and_shown(body)
        number = re.search(r"Evidence from (\S+):", prompt).group(1)
        first, last = shown[0], shown[-1]
        if "简体中文" in prompt:
            content = (f"可以。方案支持这一做法[第{first}项]。相关规定另见[{number} 第{last}项]。"
                       f"另一文件也有规定[没有〔2026〕1号 第{first}项]。")
        else:
            content = (f"Yes. The plan provides for it [Task {first}]. See also [Doc No. {number} Task {last}]. "
                       f"Another plan agrees [Doc No. 没有〔2026〕1号 Task {first}].")
        return 200, chat_completion(content, body.get("model", "stub"), "chatcmpl-library")


@pytest.fixture(scope="module")
def citing_llm():
    yield from served_stub(CitingLLM())


def _generative(engine, settings, url: str) -> Assistant:
    return Assistant(engine, settings.model_copy(update={"llm_base_url": url, "llm_model": "stub",
                                                         "llm_timeout": 10.0}))


def _shown(stub: CitingLLM) -> list[int]:
    prompt = "\n".join(m["content"] for m in stub.requests[-1]["messages"])
    return [int(n) for n in re.findall(r"\[Task (\d+)\] = ", prompt)]


def test_generated_citations_name_the_document_in_a_library(library_engine, library_settings, citing_llm):
    stub, url = citing_llm
    assistant = _generative(library_engine, library_settings, url)
    try:
        bees = assistant.ask(BEES)
        bees_shown = _shown(stub)
        elderly = assistant.ask("Can foreign firms run care homes?", document=PRIMARY)
        elderly_shown = _shown(stub)
    finally:
        assistant.close()
    assert bees.mode == "generative" and f"Evidence from {NUMBER}:" in json.dumps(stub.requests[-2],
                                                                                 ensure_ascii=False)
    first, last = bees_shown[0], bees_shown[-1]
    body = bees.answer.split("_注意")[0]
    assert f"[{NUMBER} 第{first}项]" in body and f"[{NUMBER} 第{last}项]" in body  # both styles, one form
    assert f"**[{NUMBER} 第{first}项]**" in bees.answer  # the card under the answer
    assert not re.search(r"\[第\d+项\]", bees.answer)  # no tag without its document
    assert "没有〔2026〕1号" not in body and bees.notice and "没有〔2026〕1号" in bees.notice
    assert [c.task for c in bees.citations] == list(dict.fromkeys([first, last]))
    assert all(c.document["number"] == NUMBER for c in bees.citations)
    assert elderly.mode == "generative" and 17 in elderly_shown
    first = elderly_shown[0]
    assert f"[Doc No. {PRIMARY} Task {first}]" in elderly.answer.split("_Note")[0]
    assert not re.search(r"\[Task \d+\]", elderly.answer)
    assert all(c.document["number"] == PRIMARY for c in elderly.citations)


def test_generated_citations_with_one_document_read_as_before(engine, settings, citing_llm):
    stub, url = citing_llm
    assistant = _generative(engine, settings.model_copy(
        update={"conversation_db": settings.index_path.parent / "llm-one-document.sqlite3"}), url)
    try:
        answer = assistant.ask("外资能办养老机构吗？")
    finally:
        assistant.close()
    shown = _shown(stub)
    assert answer.mode == "generative" and 17 in shown
    assert f"[第{shown[0]}项]" in answer.answer and f"**[第{shown[0]}项]**" in answer.answer
    assert PRIMARY + " 第" not in answer.answer and "Doc No." not in answer.answer
    assert answer.citations[0].document["number"] == PRIMARY
