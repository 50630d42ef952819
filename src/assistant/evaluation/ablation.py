"""Retrieval: the configurations of the ablation, their runs and the ranx metrics over them."""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from assistant.evaluation.dataset import COVERAGES, LANGS, QUESTION_TYPES, EvalQuestion, Qrels
from assistant.evaluation.metrics import MAIN_METRIC, Run, paired_test, retrieval_metrics
from assistant.evaluation.results import ConfigResult, GroupMetrics, Significance
from assistant.text import detect_language

if TYPE_CHECKING:
    from assistant.ingest.models import Corpus
    from assistant.retrieval.engine import SearchEngine, SearchResult

DEFAULT = "hybrid"
TEXT = ("bm25", "use", "e5")
KNOWLEDGE = ("bm25_k", "use_k", "e5_k")
_CITED = re.compile(r"\[(?:第\s*(\d+)\s*项|Task\s+(\d+))\]", re.IGNORECASE)


@dataclass(frozen=True)
class Config:
    """One retrieval configuration (``lookup``/``rerank`` None: the engine's setting)."""

    name: str
    retrievers: tuple[str, ...]
    lookup: bool | None = None
    rerank: bool | None = None

    def result(self, metrics: dict[str, float]) -> ConfigResult:
        return ConfigResult(retrievers=list(self.retrievers), lookup=self.lookup, rerank=self.rerank, metrics=metrics)


def rerank_config_name(rerank_default: bool) -> str:
    """The ablation that flips the rerank stage: off when the engine reranks, on when it does not."""
    return "hybrid_no_rerank" if rerank_default else "hybrid_rerank_on"


def configurations(names: Sequence[str], ablation: bool, rerank_default: bool = True) -> list[Config]:
    """The default hybrid first; with ``ablation`` a small fast set: the hybrid without lookup, the
    hybrid with the rerank stage flipped (``rerank=False``, or ``True`` when the engine's setting is
    off), text-only (bm25, use, e5), knowledge-only (bm25_k, use_k, e5_k) when those retrievers
    are all in ``names``, and each retriever alone. No pairs."""
    names = tuple(names)
    configs = [Config(DEFAULT, names)]
    if not ablation:
        return configs
    configs += [Config("hybrid_no_lookup", names, lookup=False),
                Config(rerank_config_name(rerank_default), names, rerank=not rerank_default)]
    for label, group in (("text_only", TEXT), ("knowledge_only", KNOWLEDGE)):
        if set(group) <= set(names) and set(group) != set(names):
            configs.append(Config(label, group))
    if len(names) > 1:
        configs += [Config(name, (name,)) for name in names]
    return configs


# --- dev follow-ups: the scripted history as the follow-up stage's prior turns ------------------
@dataclass(frozen=True)
class ScriptedTurn:
    """A scripted user turn and the tasks its scripted answer cites ([第N项] / [Task N])."""

    question: str
    resolved_query: str
    cited_units: list[str]
    lang: str


def scripted_context(question: EvalQuestion) -> list[ScriptedTurn]:
    """A dev follow-up's history as prior turns (oldest first); [] for other questions."""
    history = question.history
    turns = []
    for user, reply in zip(history[::2], history[1::2], strict=False):
        cited = [f"task:{a or b}" for a, b in _CITED.findall(reply.content)]
        turns.append(ScriptedTurn(user.content, user.content, list(dict.fromkeys(cited)),
                                  detect_language(user.content)))
    return turns


# --- runs ------------------------------------------------------------------------------------
def search_all(engine: SearchEngine, questions: Sequence[EvalQuestion], config: Config, depth: int,
               advance: Callable[[str], None]) -> dict[str, SearchResult]:
    """One configuration's search results, by question id."""
    results: dict[str, SearchResult] = {}
    for question in questions:
        results[question.id] = engine.search(question.question, top_k=depth, retrievers=list(config.retrievers),
                                             use_lookup=config.lookup, rerank=config.rerank,
                                             context=scripted_context(question))
        advance(f"retrieval: {config.name}")
    return results


def to_run(results: dict[str, SearchResult]) -> Run:
    """Search results as a ranx/TREC run. Scores are 1/rank, so ties in engine scores keep the
    engine's order in every tool that re-sorts by score."""
    return {qid: {hit.unit_id: 1.0 / rank for rank, hit in enumerate(result.hits, start=1)}
            for qid, result in results.items()}


def _group_key_order(corpus: Corpus) -> dict[str, list[str]]:
    return {"lang": list(LANGS), "type": list(QUESTION_TYPES), "coverage": list(COVERAGES),
            "category": [str(c.number) for c in corpus.categories] + ["sections"]}


def _category_label(corpus: Corpus, key: str) -> str:
    category = corpus.category(int(key)) if key != "sections" else None
    return category.title_en if category else "body sections only"


def breakdown(questions: Sequence[EvalQuestion], qrels: Qrels, run: Run,
              corpus: Corpus) -> dict[str, dict[str, GroupMetrics]]:
    """Retrieval metrics by language, type, expected coverage class and category (of the grade-2 tasks)."""
    groups: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for question in questions:
        if question.id not in qrels:
            continue
        groups["lang"][question.lang].append(question.id)
        groups["type"][question.type].append(question.id)
        groups["coverage"][question.coverage].append(question.id)
        for number in question.categories(corpus) or ["sections"]:
            groups["category"][str(number)].append(question.id)
    result: dict[str, dict[str, GroupMetrics]] = {}
    for dimension, order in _group_key_order(corpus).items():
        members = groups.get(dimension, {})
        result[dimension] = {
            key: GroupMetrics(n=len(members[key]), metrics=retrieval_metrics({i: qrels[i] for i in members[key]}, run),
                              label=_category_label(corpus, key) if dimension == "category" else None)
            for key in order if members.get(key)}
    return result


def significance(qrels: Qrels, runs: dict[str, Run], configs: dict[str, ConfigResult]) -> list[Significance]:
    """The hybrid against the best single retriever and against the hybrid with rerank flipped."""
    singles = [n for n, c in configs.items() if len(c.retrievers) == 1 and n != DEFAULT]
    rivals = []
    if singles:
        rivals.append(max(singles, key=lambda n: configs[n].metrics.get(MAIN_METRIC, 0.0)))
    rivals += [name for name in ("hybrid_no_rerank", "hybrid_rerank_on") if name in runs]
    if not qrels:
        return []
    return [paired_test(qrels, runs[DEFAULT], runs[rival], DEFAULT, rival) for rival in rivals]
