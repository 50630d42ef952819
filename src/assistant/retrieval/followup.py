"""Stage 0, follow-ups: resolve a question against the conversation's stored turns.

Works on turn state kept as data (each earlier turn's question, resolved query, cited unit ids,
coverage and language), never on rendered answers. Mechanisms, from exact to soft:

- **ordinal references** ("第二条详细说说", "tell me more about the second one") pin the n-th unit
  the previous answer listed (its citations, then the units it showed as related), exactly, like a
  lookup; the turn is then about that unit (the pipeline retrieves with its text), so a later
  "它有期限吗" refers to it; a position the answer never showed refers to its topic;
- **content references** ("金砖那个具体做啥", "the tax refund one — does it cover every shop?",
  "the one about leasing") name an earlier unit by what it is about: the pipeline picks, among the
  units the last three answers showed, the one that holds the descriptor's words
  (``followup_reference``), and the turn is about it (its topic, the follow-up's own ask);
- **substitution**: a bare noun phrase ("那医院呢？", "what about hospitals?") replaces the object of
  the previous resolved query ("外资能办养老院吗？" -> "外资能办医院吗？");
- **attachment**: a pronoun or an attribute question ("这个谁负责？", "can their families come too?")
  is attached to the previous topic;
- **context fusion**: an attached turn (and a narrowing one: "which of those are about leasing?")
  also hands the pipeline the previous turn's cited units, which fusion weighs as one more ranked
  list, so the answer stays with what was being discussed without string rewriting alone. A
  substituted turn gets none: its new object is exactly what the old citations are not about.

A self-contained question (a topic switch) is returned unchanged and drags no old context in (one
opened with "换个事，" or "Separately," is read without its opener);
one that names a new object without a pronoun ("And app stores, any cap left?" after VPN services)
is found out by what the units hold (``followup_decision.names_new_object``) and read alone too.
The cue words are data: ``ingest/annotations/vocabulary/followup.json``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

from assistant.ingest.library import NAMESPACE, split_unit_id
from assistant.text import chinese_to_int, detect_language, jieba_module

# Lengths (Chinese characters, English words): a question this short may lean on the conversation
# without any cue; one with a pronoun ("这个在厦门有没有指定的园区") may be longer.
SHORT = {"zh": 12, "en": 8}
WITH_PRONOUN = {"zh": 24, "en": 16}

# Where an attached query joins the topic and the follow-up's ask ("{topic}——{ask}？", "{ask} — {topic}?")
ASK_MARK = {"zh": "——", "en": " — "}

FollowupKind = Literal["none", "ordinal", "reference", "substitution", "attachment", "narrowing"]


class PriorTurn(Protocol):
    """What the stage reads of an earlier turn (``assistant.state.TurnRecord`` has these fields)."""

    question: str
    resolved_query: str
    cited_units: list[str]
    lang: str
    # (optional) every unit the answer listed, in order: its citations, then the ones it showed as
    # related; an ordinal reference ("the third one") counts through this list


@dataclass(frozen=True)
class Resolution:
    """Stage output: the query to retrieve with and the context to fuse in."""

    kind: FollowupKind
    query: str
    pinned_units: tuple[str, ...] = ()  # ordinal references: exactly these units, first
    context_units: tuple[str, ...] = ()  # the previous turn's citations, weighed in fusion
    context_query: str | None = None
    also: tuple[str, ...] = ()  # more texts to retrieve with (the follow-up's own words), averaged in
    context_weight: float | None = None  # None: the configured weight; narrowing: the old citations dominate
    last_cited: tuple[str, ...] = ()  # what the previous answer cited (a substitution fuses none of it)
    switched: bool = False  # the asker said it changes the subject ("换个事，…", "Separately, …")
    remembered: str | None = None  # what the turn stores as its resolved query, when not ``query``

    @property
    def rewritten(self) -> bool:
        return self.kind != "none"


@dataclass(frozen=True)
class _Cues:
    patterns: dict[str, re.Pattern[str]]
    en_ordinals: dict[str, int]
    en_stop_object: frozenset[str]
    zh_verbs: frozenset[str]
    en_ordinal: re.Pattern[str] = field(init=False)

    def __post_init__(self) -> None:
        words = "|".join(self.en_ordinals)
        object.__setattr__(self, "en_ordinal", re.compile(
            rf"\b(?:the\s+)({words})\b(?:\s+(?:one|task|item|measure|result|point|citation|entry))?"
            rf"|\b({words})\s+(?:one|task|item|measure|result|point|citation|entry)\b", re.IGNORECASE))


def load_cues(path: Path, city_names: Iterable[str] = ()) -> _Cues:
    data = json.loads(path.read_text(encoding="utf-8"))
    regex_keys = [k for k, v in data.items() if isinstance(v, str) and k != "description"]
    patterns = {k: re.compile(data[k], re.IGNORECASE) for k in regex_keys}
    cities = [re.escape(c) for c in city_names if c.isascii()]
    if cities:  # "… in Xiamen?" is the city every question is about: not part of the object
        patterns["en_trailing_place"] = re.compile(
            rf"(?:\s+in\s+(?:{'|'.join(cities)})\b)?{data['en_trailing_place']}|\s+in\s+(?:{'|'.join(cities)})\s*$",
            re.IGNORECASE)
    return _Cues(patterns, dict(data["en_ordinals"]), frozenset(data["en_stop_object"]), frozenset(data["zh_verbs"]))


class FollowupResolver:
    """Resolves follow-ups with one vocabulary (immutable, thread-safe)."""

    def __init__(self, cues: _Cues) -> None:
        self.cues = cues
        self.p = cues.patterns

    # --- cues ---------------------------------------------------------------------------
    def _ordinal(self, question: str) -> int | None:
        """1-based position the question refers to ("第二条", "the second one"), -1 for the last one.

        Both languages' forms are read whatever the question's language: a mixed question
        ("first one 详细讲讲") uses the English form inside Chinese, and the reverse.
        """
        match = self.p["zh_ordinal"].search(question)
        if match:
            if match.group(3):
                return -1
            token, unit = match.group(1), match.group(2)
            if not (unit == "项" and token.isdigit()):  # "第2项" names task 2; only "第二项" may be an ordinal
                return int(token) if token.isdigit() else chinese_to_int(token)
        match = self.cues.en_ordinal.search(question)
        return self.cues.en_ordinals[(match.group(1) or match.group(2)).lower()] if match else None

    def _strip(self, question: str, lang: str) -> str:
        """The fragment without lead-in ("那", "what about") and final particles or punctuation."""
        text = question.strip()
        text = self.p[f"{lang}_leadin"].sub("", text)
        return self.p[f"{lang}_tail"].sub("", text).strip("，, ")

    def own_topic(self, question: str) -> str:
        """The words a follow-up names a topic with: without lead-in, pronouns, attribute nouns and
        question words ("And app stores, any cap left there?" -> "app stores left")."""
        lang = detect_language(question)
        lang = "zh" if lang == "zh" else "en"
        text = self._strip(question, lang)
        for key in (f"{lang}_pronoun", f"{lang}_attribute", f"{lang}_generic"):
            text = self.p[key].sub(" " if lang == "en" else "", text)
        return re.sub(r"\s+", " ", text).strip()

    def narrowing_alternatives(self, question: str) -> tuple[str, ...]:
        """The alternatives a narrowing turn names ("跟职业资格、执业有关的" -> ("职业资格", "执业"),
        "about customs or bonded arrangements" -> ("customs", "bonded arrangements")): a unit about
        any one of them is meant."""
        lang = "zh" if detect_language(question) == "zh" else "en"
        words = self.p[f"{lang}_narrowing_filler"].sub(" ", self._narrowed(question, lang))
        parts = (self.own_topic(part) for part in self.p[f"{lang}_narrowing_or"].split(words))
        return tuple(part for part in parts if part)

    def _core(self, question: str, lang: str) -> str:
        """A previous question without its final particle and punctuation (its topic)."""
        return self.p[f"{lang}_tail"].sub("", question.strip())

    def _only_attribute(self, text: str, lang: str) -> bool:
        """Asks about an attribute and names no topic ("有什么条件", "what are the conditions?")."""
        attribute = self.p[f"{lang}_attribute"]
        rest = self.p[f"{lang}_generic"].sub(" " if lang == "en" else "", attribute.sub(" ", text)).strip()
        return bool(attribute.search(text)) and not rest

    @staticmethod
    def _length(question: str, lang: str) -> int:
        """Chinese: characters, an embedded Latin word counting one ("它包括 biological samples 吗": 6);
        English: words."""
        if lang != "zh":
            return len(question.split())
        return len(re.sub(r"[A-Za-z0-9][\w'-]*", "x", re.sub(r"\s", "", question)))

    def _is_short(self, question: str, lang: str) -> bool:
        return self._length(question.strip(), lang) <= SHORT[lang if lang == "zh" else "en"]

    def refers_back(self, question: str) -> bool:
        """A pronoun that stands for something already discussed ("it", "those", "这个"; not the
        existential "is there")."""
        question = self._without_document(question)
        return bool(self.p["zh_pronoun"].search(question) or self.p["en_referring_pronoun"].search(question))

    def _without_document(self, question: str) -> str:
        """The question without demonstratives that name the document itself ("这个方案", "this plan"):
        every question is about the plan, so those refer to nothing said before."""
        return self.p["en_document_self"].sub(" ", self.p["zh_document_self"].sub("", question))

    def _has_pronoun(self, question: str) -> bool:
        """A pronoun of either language: a mixed question ("它包括 biological samples 吗") may use
        the Chinese one in a mostly English sentence, or the reverse."""
        question = self._without_document(question)
        return bool(self.p["zh_pronoun"].search(question) or self.p["en_pronoun"].search(question))

    def _is_elliptical(self, question: str, lang: str) -> bool:
        text = question.strip()
        if lang == "zh":
            cues = bool(self.p["zh_leadin"].match(text) or re.search(r"呢\s*[？?]?\s*$", text))
        else:
            cues = bool(self.p["en_leadin"].match(text))
        cues = cues or self._has_pronoun(text)
        return self._is_short(text, lang) and (cues or self._only_attribute(text, lang))

    def _is_narrowing(self, question: str, lang: str) -> bool:
        return bool(self.p[f"{lang}_narrowing"].search(question))

    def _is_noun_phrase(self, fragment: str, lang: str) -> bool:
        if not fragment:
            return False
        if self.p[f"{lang}_question_word"].search(fragment) or self.p[f"{lang}_pronoun"].search(fragment):
            return False
        if lang == "zh":
            return len(fragment) <= 10 and not re.search(r"能|可以|可|会|需要|应该|申请|办理|有", fragment)
        return len(fragment.split()) <= 5

    # --- rewriting ----------------------------------------------------------------------
    def _zh_object_span(self, question: str) -> tuple[int, int] | None:
        """Span of the trailing object of a Chinese question ("外资能办**养老院**"): back from the end
        over tokens until a verb, modal, preposition or particle."""
        jieba_module()
        import jieba.posseg as pseg

        pairs, position = [], 0
        for pair in pseg.lcut(question):
            start = question.find(pair.word, position)
            position = start + len(pair.word)
            pairs.append((start, position, pair.word, pair.flag))
        start = end = None
        for token_start, token_end, word, flag in reversed(pairs):
            stop = (word in self.cues.zh_verbs or (flag.startswith("v") and word[0] in "能可会要想")
                    or flag[0] in "prydcuxw" or not word.strip())
            if stop:
                if start is not None:
                    break
                continue
            start = token_start
            end = end or token_end
        return (start, end) if start is not None else None

    def _en_object_span(self, question: str) -> tuple[int, int] | None:
        """Span of the trailing noun phrase of an English question ("… run **elderly care homes**?")."""
        core = self.p["en_tail"].sub("", question)
        place = self.p["en_trailing_place"].search(core)
        end = place.start() if place else len(core)
        start = None
        for word in reversed(list(re.finditer(r"[\w\-']+", core[:end]))):
            if word.group().lower() in self.cues.en_stop_object:
                break
            start = word.start()
        return (start, end) if start is not None else None

    def _substitute(self, previous: str, phrase: str, lang: str) -> str | None:
        span = self._zh_object_span(self._core(previous, lang)) if lang == "zh" else self._en_object_span(previous)
        if span is None:
            return None
        return previous[: span[0]] + phrase + previous[span[1]:]

    def _attach(self, previous: str, fragment: str, lang: str) -> str:
        """The previous topic with the follow-up's own ask (pronouns dropped). A previous query that
        was itself attached keeps only its topic: the new ask replaces the old one, so a third
        "it" does not carry every earlier ask along."""
        topic = self._core(previous, lang)
        topic = topic.split(ASK_MARK["zh"])[0] if lang == "zh" else topic.split(ASK_MARK["en"])[-1]
        ask = self.p[f"{lang}_pronoun"].sub("", fragment)
        if lang == "zh":
            ask = ask.strip("，, ")
            return f"{topic}{ASK_MARK['zh']}{ask}？" if ask else f"{topic}？"
        ask = re.sub(r"\s+", " ", ask).strip(" ,")
        ask = re.sub(r"\b(?:in|for|about|of|on)\s*$", "", ask).strip()
        return f"{ask[:1].upper()}{ask[1:]}{ASK_MARK['en']}{topic}?" if ask else f"{topic}?"

    def _rewrite(self, question: str, lang: str, previous: str) -> tuple[FollowupKind, str]:
        """A new object for the old question ("那医院呢"), or the old topic for a new ask ("这个谁负责")."""
        previous_lang = detect_language(previous)
        fragment = self._strip(question, lang)
        attribute = self.p[f"{lang}_attribute"].search(fragment)
        if self._is_noun_phrase(fragment, lang) and not attribute and previous_lang == lang:
            substituted = self._substitute(previous, fragment, lang)
            if substituted:
                return "substitution", substituted
        if previous_lang != lang:  # a switch of language: keep the new words, add the old topic
            return "attachment", f"{fragment} {self._core(previous, previous_lang)}".strip()
        return "attachment", self._attach(previous, fragment, lang)

    def _neighbour(self, question: str, lang: str, cited: tuple[str, ...]) -> str | None:
        """"下一项", "the one before it": the annex task next to the one just discussed."""
        # a unit id may be namespaced by its document ("厦府〔2026〕99号/task:3"): the neighbour is in the same one
        tasks = [(key, int(local.split(":")[1])) for key, local in map(split_unit_id, cited)
                 if local.startswith("task:")]
        if not tasks:
            return None
        key, number = tasks[0]
        prefix = f"{key}{NAMESPACE}" if key else ""
        if self.p[f"{lang}_next"].search(question):
            return f"{prefix}task:{number + 1}"
        if self.p[f"{lang}_previous"].search(question):
            return f"{prefix}task:{number - 1}"
        return None

    # --- content references -------------------------------------------------------------
    def content_reference(self, question: str) -> tuple[str, str] | None:
        """``(descriptor, rest)`` of a reference by content ("金砖那个具体做啥" -> ("金砖", "具体做啥"),
        "the one about leasing" -> ("leasing", "")), else None. Both languages' forms are read."""
        question = self._without_document(question)  # "这个方案是啥时候发的" refers to the plan
        for key in ("zh_content_reference", "en_content_reference"):
            match = self.p[key].search(question)
            if match is None:
                continue
            descriptor = next(g for g in match.groups() if g)
            lang = "zh" if key.startswith("zh") else "en"
            # "刚才说的那个", "the other one": deictic words point, they do not describe
            descriptor = self.p[f"{lang}_deictic"].sub(" " if lang == "en" else "", self._strip(descriptor, lang))
            descriptor = re.sub(r"\s+", " ", descriptor).strip()
            # one Chinese character before "这个" is a verb or a measure word ("办这个签证"), not a name
            if (descriptor and not self.p[f"{lang}_pronoun"].fullmatch(descriptor)
                    and (lang == "en" or self._length(descriptor, "zh") >= 2)):
                rest = f"{question[: match.start()]} {question[match.end():]}"
                return descriptor, re.sub(r"\s+", " ", rest).strip(" ,，—-")
        return None

    def refer(self, question: str, turns: Sequence[PriorTurn], unit_id: str, topic: str, rest: str) -> Resolution:
        """The turn about ``unit_id`` (picked by a content reference): its topic with the turn's own ask;
        the unit leads the context, as the old citations do for a narrowing."""
        lang = detect_language(question)
        lang = "zh" if lang == "zh" else "en"
        ask = self._strip(rest, lang).strip(" ,，—–-:;") if rest else ""
        last = turns[-1]
        return Resolution("reference", self._attach(topic, ask, lang), context_units=(unit_id,),
                          context_query=last.resolved_query or last.question, also=(question,), context_weight=1.0)

    # --- the stage ----------------------------------------------------------------------
    def resolve(self, question: str, turns: Sequence[PriorTurn]) -> Resolution:
        """The query for ``question`` given the conversation's earlier turns (oldest first)."""
        if not turns:
            return Resolution("none", question)
        opener = self.p["zh_switch"].match(question) or self.p["en_switch"].match(question)
        if opener and question[opener.end():].strip():  # read alone, without the opener
            rest = question[opener.end():].strip()
            return Resolution("none", rest[:1].upper() + rest[1:] if rest.isascii() else rest, switched=True)
        last = turns[-1]
        lang = detect_language(question)
        cited = tuple(last.cited_units)
        shown = tuple(getattr(last, "shown_units", None) or cited)
        previous = last.resolved_query or last.question
        position = self._ordinal(question) if shown else None
        if position is not None:
            if position == -1 or 1 <= position <= len(shown):
                return Resolution("ordinal", question, pinned_units=(shown[position - 1 if position > 0 else -1],))
            # a position the last answer did not show: the asker still means what it was about
            return Resolution("attachment", previous, context_units=cited, context_query=previous)
        neighbour = self._neighbour(question, lang, cited)
        if neighbour is not None:
            return Resolution("ordinal", question, pinned_units=(neighbour,))
        if shown and self._is_narrowing(question, lang):  # "which of those": of what the answer listed
            # remembered with the topic it narrows: a later "it" attaches to that topic, not to "which of those"
            return Resolution("narrowing", question, context_units=shown, context_query=previous, context_weight=1.0,
                              remembered=self._attach(previous, self._narrowed(question, lang), lang))
        if not self._is_elliptical(question, lang):
            return Resolution("none", question)
        return self._continued(question, lang, previous, cited)

    def _narrowed(self, question: str, lang: str) -> str:
        """A narrowing turn's ask without its cue ("其中" would leave "中" once "其" is read as a pronoun)."""
        return self._strip(self.p[f"{lang}_narrowing"].sub(" " if lang == "en" else "", question), lang)

    def _continued(self, question: str, lang: str, previous: str, cited: tuple[str, ...]) -> Resolution:
        kind, query = self._rewrite(question, lang, previous)
        # a substituted object is a new topic: the old citations are what it is *not* about
        # retrieval reads the rewrite and the follow-up's own words ("and the equity cap for VPN?" names
        # its new topic itself; the rewrite alone would drown it in the old one)
        return Resolution(kind, query, context_units=cited if kind == "attachment" else (), context_query=previous,
                          also=(question,), last_cited=cited)

    def continuation(self, question: str, turns: Sequence[PriorTurn]) -> Resolution | None:
        """The reading of a short question without cues ("退多少", "any minimum fund size?") as a
        continuation of the conversation; the pipeline keeps it when it answers better than the
        question read alone (a short question can also be a new topic: "跨境电商有支持吗")."""
        if not turns:
            return None
        lang = detect_language(question)
        pronoun = self._has_pronoun(question)
        if not (self._is_short(question, lang) or (pronoun and self._length(question, lang) <= WITH_PRONOUN[
                "zh" if lang == "zh" else "en"])):
            return None
        last = turns[-1]
        return self._continued(question, lang, last.resolved_query or last.question, tuple(last.cited_units))
