"""Small text helpers shared by ingest, retrieval and answers."""

from __future__ import annotations

import logging
import re
from functools import lru_cache
from pathlib import Path

_DIGITS = {"零": 0, "〇": 0, "一": 1, "壹": 1, "二": 2, "两": 2, "贰": 2, "三": 3, "叁": 3, "四": 4, "肆": 4,
           "五": 5, "伍": 5, "六": 6, "陆": 6, "七": 7, "柒": 7, "八": 8, "捌": 8, "九": 9, "玖": 9}
_UNITS = {"十": 10, "拾": 10, "百": 100, "佰": 100, "千": 1000, "仟": 1000}
CHINESE_NUMERAL_CHARS = "".join(_DIGITS) + "".join(_UNITS)

_CJK = r"\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_CJK_RE = re.compile(f"[{_CJK}]")
_SPACE_BETWEEN_CJK = re.compile(f"(?<=[{_CJK}])[ \u3000]+(?=[{_CJK}])")


def chinese_to_int(numeral: str) -> int:
    """Convert a Chinese numeral such as 十七, 一百零五 or 一一一 to an int.

    Raises ``ValueError`` for text that is not a Chinese numeral.
    """
    if not numeral or any(ch not in _DIGITS and ch not in _UNITS for ch in numeral):
        raise ValueError(f"not a Chinese numeral: {numeral!r}")
    if not any(ch in _UNITS for ch in numeral):  # digit-by-digit form: 一一一
        return int("".join(str(_DIGITS[ch]) for ch in numeral))
    total, current = 0, 0
    for ch in numeral:
        if ch in _DIGITS:
            current = _DIGITS[ch]
        else:
            total += (current or 1) * _UNITS[ch]
            current = 0
    return total + current


def int_to_chinese(number: int) -> str:
    """Convert 1..9999 to a Chinese numeral (十七, 一百一十一)."""
    if not 0 < number < 10000:
        raise ValueError(f"out of range: {number}")
    digits = "零一二三四五六七八九"
    parts: list[str] = []
    zero_pending = False
    for value, unit in ((1000, "千"), (100, "百"), (10, "十"), (1, "")):
        d = number // value % 10
        if d == 0:
            zero_pending = bool(parts)
            continue
        if zero_pending:
            parts.append("零")
            zero_pending = False
        parts.append(digits[d] + unit)
    text = "".join(parts)
    return text[1:] if text.startswith("一十") else text


def has_cjk(text: str) -> bool:
    return bool(_CJK_RE.search(text))


def cjk_ratio(text: str) -> float:
    """Share of CJK characters among the letters of ``text`` (0 when there are none)."""
    letters = [ch for ch in text if ch.isalpha()]
    if not letters:
        return 0.0
    return sum(1 for ch in letters if _CJK_RE.match(ch)) / len(letters)


def detect_language(text: str) -> str:
    """'zh' when the question is mostly Chinese, else 'en' (mixed questions count as Chinese)."""
    return "zh" if cjk_ratio(text) >= 0.3 else "en"


def squeeze_cjk_spaces(text: str) -> str:
    """Drop layout spaces between two CJK characters ("印发 服务业" -> "印发服务业")."""
    return _SPACE_BETWEEN_CJK.sub("", text)


@lru_cache(maxsize=1)
def jieba_module(cache_dir: Path | None = None):
    """jieba, initialised once and quietly (its dictionary load otherwise logs to stderr).

    jieba is a process singleton by nature (``jieba.dt`` is its one global tokenizer), so this
    memoises the module rather than owning a tokenizer; the first call initialises it and later
    calls return it as it is.

    The prefix dictionary comes from the start-up cache in ``cache_dir`` when there is one (0.2 s
    instead of jieba's own 0.65–0.8 s unmarshal); jieba's lock guards the swap as it guards its
    own load. Without ``cache_dir`` the folder is the process settings' ``native_path``
    (``ASSISTANT_NATIVE_DIR``, default ``var/native``), read only when jieba is not yet loaded.
    """
    import jieba

    from assistant import fastload

    jieba.setLogLevel(logging.WARNING)
    tokenizer = jieba.dt
    if tokenizer.initialized:
        return jieba
    source = Path(jieba.__file__).with_name(jieba.DEFAULT_DICT_NAME)
    if tokenizer.dictionary != jieba.DEFAULT_DICT or not source.is_file():  # jieba's own cache handles it
        jieba.initialize()
        return jieba
    if cache_dir is None:
        from assistant.config import get_settings

        cache_dir = get_settings().native_path
    key = fastload.fingerprint("jieba", getattr(jieba, "__version__", "?"), source)
    cached = fastload.load(cache_dir, "jieba-dict", key)
    with tokenizer.lock:
        if tokenizer.initialized:
            return jieba
        if isinstance(cached, tuple) and len(cached) == 2 and isinstance(cached[0], dict):
            tokenizer.FREQ, tokenizer.total = cached
            tokenizer.initialized = True
            return jieba
    jieba.initialize()
    fastload.save(cache_dir, "jieba-dict", key, (tokenizer.FREQ, tokenizer.total))
    return jieba
