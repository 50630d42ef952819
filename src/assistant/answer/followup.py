"""Turn an elliptical follow-up into a stand-alone retrieval query, from plain history.

Works on ``[{"role": "user" | "assistant", "content": str}]`` alone (no server state), so the
chat and the eval harness resolve follow-ups identically. Three general mechanisms:

- **ordinal references** ("第二条详细说说", "tell me more about the second one") pick the n-th
  distinct task cited in the previous assistant turn and become a lookup ("第16项" / "Task 16");
- **substitution**: a bare noun phrase ("那医院呢？", "what about hospitals?") replaces the
  object of the previous question ("外资能办养老院吗？" -> "外资能办医院吗？");
- **attachment**: a pronoun or an attribute question ("这个谁负责？", "那有什么条件",
  "and the equity cap there?") is attached to the previous question's topic.

A question that is neither short nor anaphoric is returned unchanged.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from assistant.answer.relevance import word_set as _word_set
from assistant.text import chinese_to_int, detect_language, jieba_module

_ZH_LEADIN = re.compile(r"^(?:那么|那|还有|另外|此外|然后|再问一下|再问|那如果|如果是|如果|换成|对于|关于)\s*")
_EN_LEADIN = re.compile(
    r"^(?:and\s+what\s+about|and\s+how\s+about|what\s+about|how\s+about|and|so|also|then|as\s+for|"
    r"what\s+of|ok(?:ay)?,?|same\s+for)\s+", re.IGNORECASE)
_ZH_TAIL = re.compile(r"(?:呢|吗|啊|呀|吧)?\s*[？?。!！.]*\s*$")
_EN_TAIL = re.compile(r"\s*[?.!]+\s*$")
_ZH_PRONOUN = re.compile(r"这个|这项|这些|这条|那个|那些|那项|它们|它|其|该项|该|上述|这方面|这里|那里|此项")
_EN_PRONOUN = re.compile(r"\b(?:it|its|this|that|these|those|they|them|there|the\s+same|such)\b", re.IGNORECASE)
_ZH_QUESTION_WORD = re.compile(r"谁|什么|怎么|如何|哪|几|多少|是否|能否|可否|有没有|能不能|可不可以|吗")
_EN_QUESTION_WORD = re.compile(r"\b(?:who|what|when|where|which|how|why|is|are|can|could|does|do|will|should)\b",
                               re.IGNORECASE)
# Nouns that name an attribute of a topic rather than a new topic: "the equity cap", "条件".
_ZH_ATTRIBUTE = re.compile(r"条件|要求|期限|比例|股比|上限|门槛|流程|程序|材料|费用|"
                           r"部门|时间|负责|责任|范围|标准|限制|细节|详情|具体")
_EN_ATTRIBUTE = re.compile(
    r"\b(?:conditions?|requirements?|caps?|limits?|ratios?|thresholds?|deadlines?|procedures?|process|documents?|"
    r"costs?|fees?|departments?|responsib\w*|timelines?|scope|rules?|details?|restrictions?|share|percentage|"
    r"who|when|eligib\w*)\b", re.IGNORECASE)

_ZH_ORDINAL = re.compile(r"第\s*([一二三四五六七八九十]|\d{1,2})\s*(条|个|点|项)|(最后一(?:条|个|项|点))")
_EN_ORDINALS = {"first": 1, "second": 2, "third": 3, "fourth": 4, "fifth": 5, "sixth": 6, "seventh": 7,
                "eighth": 8, "ninth": 9, "tenth": 10, "1st": 1, "2nd": 2, "3rd": 3, "4th": 4, "5th": 5,
                "last": -1}
_EN_ORDINAL = re.compile(
    r"\b(?:the\s+)(" + "|".join(_EN_ORDINALS) + r")\b(?:\s+(?:one|task|item|measure|result|point|citation|entry))?"
    r"|\b(" + "|".join(_EN_ORDINALS) + r")\s+(?:one|task|item|measure|result|point|citation|entry)\b",
    re.IGNORECASE)
_CITATION = re.compile(r"\[\s*(?:第\s*(\d{1,4})\s*项|Task\s+(\d{1,4}))\s*\]", re.IGNORECASE)
_BARE_REFERENCE = re.compile(r"第\s*(\d{1,4})\s*项|\bTask\s+(\d{1,4})\b", re.IGNORECASE)

_EN_STOP_OBJECT = _word_set(
    "a an the and or of to in on at for by with from as is are be do does can could may will would "
    "should i we you they it its this that there here what which who how when where why run set up "
    "open operate establish provide offer get buy own invest apply use have work start build import "
    "export hold sell obtain register practice practise lead serve join enter bring take make access "
    "hire employ engage issue list found launch create allowed allow permitted permit able"
)
_EN_TRAILING_PLACE = re.compile(r"\s+(?:in\s+xiamen|in\s+china|here|locally|in\s+the\s+pilot\s+area)\s*$",
                                re.IGNORECASE)


def cited_tasks(text: str) -> list[int]:
    """Distinct task numbers cited in an assistant turn, in order of first citation."""
    numbers: list[int] = []
    matches = list(_CITATION.finditer(text)) or list(_BARE_REFERENCE.finditer(text))
    for match in matches:
        number = int(match.group(1) or match.group(2))
        if number not in numbers:
            numbers.append(number)
    return numbers


def _ordinal_reference(question: str, lang: str, available: int) -> int | None:
    """1-based position the question refers to ("第二条", "the second one"), -1 for the last one."""
    if lang == "zh":
        match = _ZH_ORDINAL.search(question)
        if not match:
            return None
        if match.group(3):
            return -1
        token, unit = match.group(1), match.group(2)
        value = int(token) if token.isdigit() else chinese_to_int(token)
        if unit == "项" and token.isdigit():  # "第2项" names task 2; only "第二项" may be an ordinal
            return None
        return value if 1 <= value <= available else None
    match = _EN_ORDINAL.search(question)
    if not match:
        return None
    value = _EN_ORDINALS[(match.group(1) or match.group(2)).lower()]
    return value if value == -1 or 1 <= value <= available else None


def _strip(question: str, lang: str) -> str:
    """The fragment without lead-in ("那", "what about") and final particles or punctuation."""
    text = question.strip()
    if lang == "zh":
        text = _ZH_LEADIN.sub("", text)
        return _ZH_TAIL.sub("", text).strip("，, ")
    text = _EN_LEADIN.sub("", text)
    return _EN_TAIL.sub("", text).strip(", ")


def _core(question: str, lang: str) -> str:
    """A previous question without its final particle and punctuation (its topic)."""
    text = question.strip()
    if lang == "zh":
        return re.sub(r"(?:吗|呢|么|啊|吧)?\s*[？?。!！.]*\s*$", "", text)
    return _EN_TAIL.sub("", text)


_ZH_GENERIC = re.compile(r"[谁什么怎么如何哪几多少是否能否可否有没有能不能可不可以吗呢么啊"
                         r"要需的是了有会可以能得和与及还都请问吧？?。!！，,\s]")
_EN_GENERIC = re.compile(r"\b(?:who|what|when|where|which|how|why|is|are|was|were|can|could|does|do|did|will|should|"
                         r"the|a|an|any|there|of|for|to|in|on|and|or|me|us|i|we|tell|need|needed|required|apply|"
                         r"applies|get)\b|[?.!,]", re.IGNORECASE)


def _only_attribute(text: str, lang: str) -> bool:
    """A question that asks about an attribute and names no topic ("有什么条件", "what are the conditions?")."""
    if lang == "zh":
        rest = _ZH_GENERIC.sub("", _ZH_ATTRIBUTE.sub("", text))
        return bool(_ZH_ATTRIBUTE.search(text)) and not rest
    rest = _EN_GENERIC.sub(" ", _EN_ATTRIBUTE.sub(" ", text)).strip()
    return bool(_EN_ATTRIBUTE.search(text)) and not rest


def _is_elliptical(question: str, lang: str) -> bool:
    text = question.strip()
    if lang == "zh":
        short = len(re.sub(r"\s", "", text)) <= 12
        cues = bool(_ZH_LEADIN.match(text) or re.search(r"呢\s*[？?]?\s*$", text) or _ZH_PRONOUN.search(text))
    else:
        short = len(text.split()) <= 7
        cues = bool(_EN_LEADIN.match(text) or _EN_PRONOUN.search(text))
    return short and (cues or _only_attribute(text, lang))


def _is_noun_phrase(fragment: str, lang: str) -> bool:
    if not fragment:
        return False
    if lang == "zh":
        if _ZH_QUESTION_WORD.search(fragment) or _ZH_PRONOUN.search(fragment):
            return False
        return len(fragment) <= 10 and not re.search(r"能|可以|可|会|需要|应该|申请|办理|有", fragment)
    if _EN_QUESTION_WORD.search(fragment) or _EN_PRONOUN.search(fragment):
        return False
    return len(fragment.split()) <= 5


_ZH_VERBS = _word_set(
    "能 可以 可 会 要 想 需要 办 开 开办 举办 设立 开设 申请 办理 做 从事 开展 提供 "
    "投资 购买 买 卖 在 到 去 给 让 把 被 和 与 及 的 了 是 有 用 使用 参与 担任 "
    "进入 获得 享受 成立 经营 运营 注册 持有 参加 适用 拿 办个"
)


def _zh_object_span(question: str) -> tuple[int, int] | None:
    """Character span of the trailing object of a Chinese question ("外资能办**养老院**").

    Walks back from the end over tokens until a verb, modal, preposition or particle; the POS
    tagger alone is unreliable on short nouns (it tags 诊所 and 签证 as verbs).
    """
    jieba_module()
    import jieba.posseg as pseg

    pairs, position = [], 0
    for pair in pseg.lcut(question):
        start = question.find(pair.word, position)
        position = start + len(pair.word)
        pairs.append((start, position, pair.word, pair.flag))
    start = end = None
    for token_start, token_end, word, flag in reversed(pairs):
        stop = (word in _ZH_VERBS or (flag.startswith("v") and word[0] in "能可会要想")
                or flag[0] in "prydcuxw" or not word.strip())
        if stop:
            if start is not None:
                break
            continue
        start = token_start
        end = end or token_end
    return (start, end) if start is not None else None


def _en_object_span(question: str) -> tuple[int, int] | None:
    """Span of the trailing noun phrase of an English question ("… run **elderly care homes**?")."""
    core = _EN_TAIL.sub("", question)
    place = _EN_TRAILING_PLACE.search(core)
    end = place.start() if place else len(core)
    words = list(re.finditer(r"[\w\-']+", core[:end]))
    start = None
    for word in reversed(words):
        if word.group().lower() in _EN_STOP_OBJECT:
            break
        start = word.start()
    return (start, end) if start is not None else None


def _substitute(previous: str, phrase: str, lang: str) -> str | None:
    span = _zh_object_span(_core(previous, lang)) if lang == "zh" else _en_object_span(previous)
    if span is None:
        return None
    start, end = span
    return previous[:start] + phrase + previous[end:]


def _attach(previous: str, fragment: str, lang: str) -> str:
    """The previous topic with the follow-up's own ask (pronouns dropped)."""
    topic = _core(previous, lang)
    if lang == "zh":
        ask = _ZH_PRONOUN.sub("", fragment).strip("，, ")
        return f"{topic}，{ask}？" if ask else f"{topic}？"
    ask = re.sub(r"\s+", " ", _EN_PRONOUN.sub("", fragment)).strip(" ,")
    ask = re.sub(r"\b(?:in|for|about|of|on)\s*$", "", ask).strip()
    return f"{ask[:1].upper()}{ask[1:]} — {topic}?" if ask else f"{topic}?"


def _resolve_one(question: str, previous_user: str | None, previous_answer: str | None) -> str:
    lang = detect_language(question)
    if previous_answer:
        cited = cited_tasks(previous_answer)
        position = _ordinal_reference(question, lang, len(cited)) if cited else None
        if position is not None:
            number = cited[-1] if position == -1 else cited[position - 1]
            return f"第{number}项" if lang == "zh" else f"Task {number}"
    if not previous_user or not _is_elliptical(question, lang):
        return question
    previous_lang = detect_language(previous_user)
    fragment = _strip(question, lang)
    attribute = _ZH_ATTRIBUTE.search(fragment) if lang == "zh" else _EN_ATTRIBUTE.search(fragment)
    if _is_noun_phrase(fragment, lang) and not attribute and previous_lang == lang:
        substituted = _substitute(previous_user, fragment, lang)
        if substituted:
            return substituted
    if previous_lang != lang:  # a switch of language: keep the new words, add the old topic
        return f"{fragment} {_core(previous_user, previous_lang)}".strip()
    return _attach(previous_user, fragment, lang)


def resolve_followup(question: str, history: Sequence[dict]) -> str:
    """A stand-alone query for ``question`` given the prior turns (oldest first).

    Earlier user turns are resolved in order too, so a chain of follow-ups ("那医院呢？" then
    "那有什么条件") keeps the topic it inherited.
    """
    previous_user: str | None = None
    previous_answer: str | None = None
    for turn in history:
        role, content = turn.get("role"), str(turn.get("content") or "")
        if role == "user" and content.strip():
            previous_user = _resolve_one(content, previous_user, previous_answer)
            previous_answer = None
        elif role == "assistant":
            previous_answer = content
    return _resolve_one(question, previous_user, previous_answer)
