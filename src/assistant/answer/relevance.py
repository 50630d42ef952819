"""Which retrieved units actually answer the question: a clause-level lexical check.

Fused retrieval scores are close together (RRF), so they rank well but say little about
*which* of several similar tasks carries the answer: "外资能办医院吗" finds the nursing-college
task and the non-profit medical-institution task side by side. The answer layer therefore
re-checks the few best hits against the question's own terms:

- colloquial words are mapped to the plan's vocabulary (a hospital is a 医疗机构, a care home
  an 养老机构) through small concept groups, so the check bridges everyday and official wording;
- every term is weighted by its rarity in the plan (IDF over all units);
- a unit scores by its best clause (terms that meet in one clause belong together) plus a
  smaller share of all terms it holds anywhere.

Nothing here is tuned to particular questions: the concept groups are general synonyms of the
plan's subject areas.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from assistant.ingest.models import Corpus
from assistant.text import jieba_module


def word_set(text: str) -> frozenset[str]:
    return frozenset(text.split())


# Concept groups: everyday and official wordings of one idea, Chinese and English.
CONCEPTS: dict[str, tuple[str, ...]] = {
    "foreign": ("外资", "外商", "外籍", "境外", "外国", "中外", "海外", "外企", "foreign", "overseas",
                "international investor"),
    "establish": ("举办", "开办", "兴办", "创办", "设立", "开设", "成立", "筹建", "办", "set up", "establish",
                  "run", "operate", "found", "start"),
    "medical_institution": ("医院", "医疗机构", "hospital", "medical institution"),
    "clinic": ("诊所", "门诊", "clinic"),
    "elderly_care": ("养老院", "养老机构", "敬老院", "老年公寓", "护理院", "elderly care", "care home",
                     "nursing home", "retirement home", "aged care", "old people"),
    "equity": ("股比", "股权", "持股", "控股", "equity", "shareholding", "stake", "ownership"),
    "vpn": ("虚拟专用网", "vpn", "virtual private network"),
    "internet_access": ("互联网接入", "宽带", "internet access", "broadband"),
    "app_store": ("应用商店", "app store"),
    "telecom": ("电信", "telecom", "telecommunication"),
    "visa": ("签证", "visa"),
    "work_permit": ("工作许可", "work permit"),
    "permanent_residence": ("永久居留", "permanent residen", "green card", "绿卡"),
    "doctor": ("医生", "医师", "doctor", "physician"),
    "lawyer": ("律师", "律所", "lawyer", "law firm"),
    "tax_refund": ("退税", "tax refund"),
    "payment": ("支付", "付款", "payment", "pay "),
    "leasing": ("租赁", "leasing", "lease"),
    "data": ("数据", "data"),
    "cross_border": ("跨境", "cross-border", "cross border"),
    "nursing_college": ("护理学院", "nursing college", "nursing school"),
    "drug": ("药品", "药械", "药物", "drug", "medicine"),
    "medical_device": ("医疗器械", "medical device"),
    "ship_fuel": ("燃料油", "船舶燃料", "bunker", "marine fuel"),
    "bonded": ("保税", "bonded"),
    "green_finance": ("绿色金融", "绿色债券", "绿色贷款", "green finance", "green bond", "green loan"),
    "factoring": ("保理", "factoring"),
    "qualification": ("职业资格", "执业资格", "professional qualification"),
    "responsible": ("负责", "责任", "responsib", "in charge"),
    "condition": ("条件", "要求", "符合", "condition", "requirement", "eligib"),
    "donation": ("捐资", "捐赠", "donat"),
    "non_profit": ("非营利", "non-profit", "nonprofit", "not-for-profit"),
}

_ZH_STOP = word_set(
    "能 可以 可 吗 呢 吧 么 嘛 啊 什么 怎么 怎样 如何 哪些 哪个 哪 是否 有没有 有 是 "
    "的 了 在 我 我们 你 您 请问 请 一下 这个 那个 这些 那些 这 那 它 其 该 方案 政策 "
    "相关 规定 会 要 能否 可否 还 都 和 与 及 或 对 给 让 被 吗？ 呢？ 么？ 多少 谁 "
    "为 从 到 把 就 也 又 很 最 一个 关于 对于 目前 现在 已经 中 里 上 下 厦门 本市 "
    "当地 全市 具体 详细 说说 讲讲 介绍 一些 情况 问题 允许 支持"
)
_EN_STOP = word_set(
    "a an the and or of to in on at for by with from as is are was were be been being do does did "
    "can could may might will would shall should must have has had i we you they he she it its this "
    "that these those there here what which who whom whose when where why how about any some all "
    "more most much many plan xiamen city local policy policies measure measures rule rules allow "
    "allowed support please tell me us my our your if than then so such also just only into out up "
    "down over under again further not no yes get gets under let lets company companies people "
    "person"
)
_EN_WORD = re.compile(r"[a-z][a-z0-9\-']*")
_CLAUSE = re.compile(r"[，,；;。.!?！？:：、（）()]")
_SENTENCE_END = re.compile(r"(?<=[。!?！？])|(?<=\.)\s+(?=[A-Z“\"(])")


@dataclass(frozen=True)
class Term:
    """One question term: its surface forms (a concept group or a single word) and its position."""

    forms: tuple[str, ...]
    position: int
    concept: str | None = None
    surface: str = ""  # the words the question used


def _stem(word: str) -> str:
    """Light suffix folding so word forms meet (facilitation/facilitate, hospitals/hospital)."""
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    for suffix in ("ations", "ation", "ings", "ing", "ed", "es", "s", "e"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 4 and not word.endswith("ss"):
            return word[: -len(suffix)]
    return word


def _form_pattern(form: str) -> str:
    """Chinese forms match as substrings; English ones from a word start to the word's end."""
    if form[0].isascii() and form[0].isalpha():
        return r"\b" + re.escape(form) + r"[a-z\-]*"
    return re.escape(form)


def question_terms(question: str, lang: str) -> list[Term]:
    """The content terms of a question, concept groups first, in question order."""
    text = question.lower()
    terms: list[Term] = []
    masked = text
    for concept, forms in CONCEPTS.items():
        best, surface = -1, ""
        for form in sorted(forms, key=len, reverse=True):
            if lang == "en" and not re.search(r"[a-z]", form):
                continue
            match = re.search(_form_pattern(form), masked)
            if match:
                if best < 0 or match.start() < best:
                    best, surface = match.start(), form
                masked = masked[: match.start()] + " " * len(match.group()) + masked[match.end():]
        if best >= 0:
            terms.append(Term(forms, best, concept, surface))
    matched_words = {w for t in terms for f in t.forms for w in _EN_WORD.findall(f)}
    if lang == "zh":
        jieba = jieba_module()
        position = 0
        for token in jieba.lcut(masked):
            start = masked.find(token, position)
            position = start + len(token) if start >= 0 else position
            token = token.strip()
            if len(token) < 2 or token in _ZH_STOP or not re.search(r"[\u4e00-\u9fff a-z0-9]", token):
                continue
            terms.append(Term((token,), start, surface=token))
    else:
        for match in _EN_WORD.finditer(masked):
            word = match.group()
            if word in _EN_STOP or len(word) < 3 or _stem(word) in matched_words:
                continue
            terms.append(Term((_stem(word),), match.start(), surface=word))
    return sorted(terms, key=lambda t: t.position)


def _contains(text: str, form: str) -> bool:
    if not form[0].isascii() or not form[0].isalpha():
        return form in text
    return re.search(r"\b" + re.escape(form), text) is not None


def term_in(term: Term, text: str) -> bool:
    return any(_contains(text, form) for form in term.forms)


def clauses(text: str) -> list[str]:
    return [c for c in _CLAUSE.split(text.lower()) if c.strip()]


def sentences(text: str) -> list[str]:
    """Split into sentences, keeping the end punctuation."""
    return [s.strip() for s in _SENTENCE_END.split(text) if s and s.strip()]


class Relevance:
    """IDF-weighted clause-level term alignment between a question and unit texts."""

    def __init__(self, corpus: Corpus) -> None:
        self._docs: list[str] = [f"{t.text}\n{t.text_en}".lower() for t in corpus.tasks]
        self._docs += [f"{s.text}\n{s.text_en}".lower() for s in corpus.sections]

    @lru_cache(maxsize=4096)  # noqa: B019 - one instance per corpus, lives as long as the process
    def idf(self, forms: tuple[str, ...]) -> float:
        df = sum(1 for doc in self._docs if any(_contains(doc, f) for f in forms))
        return math.log(1 + len(self._docs) / (1 + df))

    def df(self, form: str) -> int:
        return sum(1 for doc in self._docs if _contains(doc, form))

    def expand_query(self, question: str, lang: str) -> str:
        """Append the plan's own wording for everyday words it never or rarely uses.

        "Can foreign companies run hospitals?" gains "medical institution": the plan says
        医疗机构, never 医院, and the retrievers cannot know the two are the same here.
        """
        extra: list[str] = []
        for term in question_terms(question, lang):
            if term.concept is None:
                continue
            forms = [f for f in term.forms if (lang == "zh") != bool(re.match(r"[a-z]", f))]
            counts = {f: self.df(f) for f in forms}
            official = max(forms, key=lambda f: counts[f], default="")
            if official and counts[official] >= 1 and counts.get(term.surface, 0) * 3 < counts[official]:
                extra.append(official)
        if not extra:
            return question
        return f"{question}（{'、'.join(extra)}）" if lang == "zh" else f"{question} ({', '.join(extra)})"

    def weights(self, terms: Sequence[Term]) -> list[float]:
        """IDF per term: words the plan rarely uses decide more than common ones."""
        return [self.idf(t.forms) for t in terms]

    def score(self, terms: Sequence[Term], text: str) -> float:
        """0..1.5: best clause coverage plus half the coverage over the whole text."""
        if not terms:
            return 0.0
        weights = self.weights(terms)
        total = sum(weights) or 1.0
        lowered = text.lower()
        anywhere = sum(w for t, w in zip(terms, weights, strict=True) if term_in(t, lowered))
        best_clause = max((sum(w for t, w in zip(terms, weights, strict=True) if term_in(t, c))
                           for c in clauses(text)), default=0.0)
        return (best_clause + 0.5 * anywhere) / total

    def best_sentence(self, terms: Sequence[Term], text: str) -> int:
        """Index of the sentence that aligns best with the question (0 when none does)."""
        parts = sentences(text)
        if not terms or len(parts) < 2:
            return 0
        scores = [self.score(terms, s) for s in parts]
        best = max(range(len(parts)), key=lambda i: (scores[i], -i))
        # the first sentence states the measure; a later one must be clearly closer to the question
        return best if scores[0] < 0.6 * scores[best] else 0
