"""The one text analyser: tokens, stems and stop words for BM25 and every lexical feature.

Chinese runs are cut by jieba (each word with its search-mode parts, "外国人" -> 外国, 外国人);
English words are stemmed with PyStemmer's Snowball English stemmer (a maintained library, not
a hand-made suffix list), hyphenated words also yield their parts ("ip-vpn" -> ip-vpn, ip, vpn).
Function words come from ``ingest/annotations/vocabulary/stopwords.json``; the corpus adds the
words every unit is implicitly about (its city). BM25, the clause-level relevance stage and the
scope features all read text through one instance, so "services" and "licensing" mean the same
token everywhere.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict

from assistant.ingest.vocabulary import Stopwords
from assistant.text import jieba_module

TOKEN = re.compile(r"[a-z0-9]+(?:[-'][a-z0-9]+)*|[\u3400-\u9fff]+")
CJK_RUN = re.compile(r"[\u3400-\u9fff]")

Word = tuple[str, ...]  # the forms BM25 indexes for one content word


class TextAnalyzer:
    """Content words of a text, memoised per instance (a search reads a question several times)."""

    def __init__(self, stopwords: Stopwords, domain_stopwords: frozenset[str] = frozenset(),
                 cache_size: int = 8192) -> None:
        self.zh_stop = stopwords.zh | domain_stopwords
        self.en_stop = stopwords.en | domain_stopwords
        self.domain_stopwords = domain_stopwords
        self._local = threading.local()  # PyStemmer objects are not thread-safe: one per thread
        self._cache: OrderedDict[str, tuple[Word, ...]] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()

    def _stemmer(self):
        stemmer = getattr(self._local, "stemmer", None)
        if stemmer is None:
            import Stemmer

            stemmer = self._local.stemmer = Stemmer.Stemmer("english")
        return stemmer

    def stem(self, word: str) -> str:
        return self._stemmer().stemWord(word)

    def words(self, text: str) -> tuple[Word, ...]:
        """Each content word of ``text`` with its indexed forms, in text order."""
        with self._lock:
            cached = self._cache.get(text)
            if cached is not None:
                self._cache.move_to_end(text)
                return cached
        words = self._words(text)
        with self._lock:
            self._cache[text] = words
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return words

    def _words(self, text: str) -> tuple[Word, ...]:
        jieba = None
        words: list[Word] = []
        for match in TOKEN.finditer(text.lower()):
            piece = match.group(0)
            if CJK_RUN.match(piece):
                jieba = jieba or jieba_module()
                for word in jieba.cut(piece):
                    if word in self.zh_stop or not word.strip():
                        continue
                    forms = tuple(f for f in jieba.cut_for_search(word) if f.strip() and f not in self.zh_stop)
                    if forms:
                        words.append(forms)
            elif piece not in self.en_stop:
                forms = [self.stem(piece)]
                if "-" in piece:  # "cross-border" also meets "border"
                    forms += [self.stem(p) for p in piece.split("-") if len(p) > 1 and p not in self.en_stop]
                words.append(tuple(dict.fromkeys(forms)))
        return tuple(words)

    def tokens(self, text: str) -> list[str]:
        """Every indexed form of every content word (what BM25 indexes and queries)."""
        return [form for forms in self.words(text) for form in forms]

    def token_set(self, text: str) -> frozenset[str]:
        return frozenset(self.tokens(text))

    def phrase(self, text: str) -> tuple[str, ...]:
        """The head form of each content word: how a multi-word term is matched inside a text."""
        return tuple(forms[0] for forms in self.words(text))
