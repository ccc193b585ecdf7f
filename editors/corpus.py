"""English text for the second-moment statistics of ROME and MEMIT.

The reference methods estimate ``C = E[k k^T]`` over Wikipedia. Offline, the
default is the Wikipedia excerpt that the ``gensim`` wheel ships in its test
data (about 200 articles); users may name any UTF-8 text file instead
(paragraphs separated by blank lines, or JSON lines with a ``"text"`` field).
"""

from __future__ import annotations

import bz2
import hashlib
import html
import importlib.util
import io
import json
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

GENSIM_WIKI = "gensim-wiki"
_GENSIM_FILE = "test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
MIN_WORDS = 20  # shorter paragraphs are mostly captions and list debris
MIN_CHUNK_TOKENS = 8  # shorter text pieces are not used for statistics


class CorpusError(ValueError):
    """A statistics corpus that cannot be read; the message names it."""


@dataclass(frozen=True)
class Corpus:
    name: str  # what the user gave, for messages and results
    digest: str  # keys the statistics cache
    paragraphs: tuple[str, ...]


def _strip_nested(text: str, open_mark: str, close_mark: str) -> str:
    """Remove innermost ``{{ ... }}``-style spans until none is left."""
    pattern = re.compile(re.escape(open_mark) + r"(?:(?!" + re.escape(open_mark) + r").)*?" + re.escape(close_mark), re.DOTALL)
    previous = None
    while previous != text:
        previous, text = text, pattern.sub("", text)
    return text


def wiki_to_paragraphs(markup: str) -> list[str]:
    """Plain prose paragraphs from MediaWiki markup (good enough for activation statistics)."""
    text = re.sub(r"<!--.*?-->", "", markup, flags=re.DOTALL)
    text = re.sub(r"<ref[^>/]*/>", "", text)
    text = re.sub(r"<ref[^>]*>.*?</ref>", "", text, flags=re.DOTALL)
    text = _strip_nested(text, "{{", "}}")
    text = _strip_nested(text, "{|", "|}")
    text = re.sub(r"\[\[(?:File|Image|Category|[a-z]{2,3}):[^\[\]]*(?:\[\[[^\]]*\]\][^\[\]]*)*\]\]", "", text)
    text = re.sub(r"\[\[(?:[^|\]]*\|)?([^\]]*)\]\]", r"\1", text)
    text = re.sub(r"\[https?://[^\s\]]+\s*([^\]]*)\]", r"\1", text)
    text = re.sub(r"<[^>]+>", "", text)
    text = re.sub(r"'{2,}", "", text)
    paragraphs = []
    for block in re.split(r"\n\s*\n", text):
        lines = [ln.strip() for ln in block.splitlines() if ln.strip() and not re.match(r"^[=*#:;|!{}]", ln.strip())]
        para = re.sub(r"\s+", " ", " ".join(lines)).strip()
        if len(para.split()) >= MIN_WORDS:
            paragraphs.append(html.unescape(para))
    return paragraphs


def _gensim_wiki() -> Corpus:
    spec = importlib.util.find_spec("gensim")  # locates the wheel's files without importing gensim
    if spec is None or not spec.submodule_search_locations:
        raise CorpusError(
            f"--stats-corpus {GENSIM_WIKI}: needs the gensim wheel's test data (pip install --no-deps gensim), "
            "or name a text file"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / _GENSIM_FILE
    if not path.is_file():
        raise CorpusError(f"--stats-corpus {GENSIM_WIKI}: {path} is missing from the installed gensim")
    raw = bz2.decompress(path.read_bytes())
    paragraphs: list[str] = []
    for _event, elem in ET.iterparse(io.BytesIO(raw)):
        if elem.tag.endswith("}text") and elem.text:
            paragraphs.extend(wiki_to_paragraphs(elem.text))
        elem.clear()
    return Corpus(GENSIM_WIKI, hashlib.sha256(raw).hexdigest()[:12], tuple(paragraphs))


def _text_file(path: Path) -> Corpus:
    try:
        raw = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CorpusError(f"--stats-corpus {path}: cannot read it as UTF-8 text ({exc})") from None
    if path.suffix == ".jsonl":
        paragraphs = []
        for number, line in enumerate(raw.splitlines(), 1):
            if line.strip():
                try:
                    paragraphs.append(str(json.loads(line)["text"]))
                except (json.JSONDecodeError, KeyError, TypeError):
                    raise CorpusError(f"--stats-corpus {path}: line {number} is not a JSON object with a 'text' field") from None
    else:
        paragraphs = [re.sub(r"\s+", " ", p).strip() for p in re.split(r"\n\s*\n", raw) if p.strip()]
    if not paragraphs:
        raise CorpusError(f"--stats-corpus {path}: holds no text")
    return Corpus(str(path), hashlib.sha256(raw.encode()).hexdigest()[:12], tuple(paragraphs))


def load_corpus(name: str) -> Corpus:
    """``gensim-wiki`` (default) or the path of a text / JSON-lines file."""
    if name == GENSIM_WIKI:
        return _gensim_wiki()
    path = Path(name).expanduser()
    if not path.is_file():
        raise CorpusError(f"--stats-corpus {name}: neither {GENSIM_WIKI!r} nor an existing file")
    return _text_file(path)
