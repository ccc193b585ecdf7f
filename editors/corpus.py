"""English text for the second-moment statistics of ROME, MEMIT and their descendants.

The reference methods estimate ``C = E[k k^T]`` over 100,000 Wikipedia
articles (``wikipedia``, ``20200501.en``), each truncated to the model's
context. Three kinds of corpus:

* ``gensim-wiki`` (default, offline): the Wikipedia excerpt that the ``gensim``
  wheel ships in its test data (about 200 articles), cut into short pieces up
  to a token budget;
* a UTF-8 text file (paragraphs separated by blank lines, or JSON lines with a
  ``"text"`` field), used the same way;
* ``hf:NAME[:CONFIG]`` or ``hf:FOLDER``: a Hugging Face dataset with a
  ``"text"`` column, read through the ``datasets`` library (streamed from the
  hub, or a local folder), sampled as the reference samples: whole articles,
  truncated to the model's context, ``mom2_n_samples`` of them.
"""

from __future__ import annotations

import bz2
import functools
import hashlib
import html
import importlib.util
import io
import random
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pitfalls_editkit.messages import first_line
from pitfalls_editkit.safe_json import JsonInputError, loads

GENSIM_WIKI = "gensim-wiki"
_GENSIM_FILE = "test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
MIN_WORDS = 20  # shorter paragraphs are mostly captions and list debris
MIN_CHUNK_TOKENS = 8  # shorter text pieces are not used for statistics
HF_PREFIX = "hf:"
REFERENCE_CORPUS = "hf:wikipedia:20200501.en"  # what the reference's statistics were computed from
SAMPLE_SEED = 1  # the reference draws its articles with random_sample=1
STREAM_SHUFFLE_BUFFER = 10_000


class CorpusError(ValueError):
    """A statistics corpus that cannot be read; the message names it."""


@dataclass(frozen=True)
class Corpus:
    """A corpus: short paragraphs cut to a token budget, or (``articles``) whole texts as the reference samples them."""

    name: str  # what the user gave, for messages and results
    digest: str  # keys the statistics cache
    paragraphs: tuple[str, ...] = ()
    articles: Callable[[int], Iterator[str]] | None = field(default=None, compare=False)  # n -> n sampled texts
    stats_name: str = ""  # its name in the reference's statistics layout (``wikipedia`` for the reference's data)

    @property
    def whole_texts(self) -> bool:
        return self.articles is not None


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
    return _parse_gensim_wiki(path.read_bytes())


@functools.lru_cache(maxsize=1)
def _parse_gensim_wiki(compressed: bytes) -> Corpus:
    """The excerpt's paragraphs, kept for the file's exact bytes (the cache's key): every editor that looks its
    statistics up needs the corpus's digest, and a process that runs the suites again (the harness's own tests) would
    decompress and parse the excerpt each time, about a second."""
    raw = bz2.decompress(compressed)
    paragraphs: list[str] = []
    for _event, elem in ET.iterparse(io.BytesIO(raw)):
        if elem.tag.endswith("}text") and elem.text:
            paragraphs.extend(wiki_to_paragraphs(elem.text))
        elem.clear()
    return Corpus(GENSIM_WIKI, hashlib.sha256(raw).hexdigest()[:12], tuple(paragraphs), stats_name=GENSIM_WIKI)


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
                    text = loads(line, f"line {number}")["text"]
                except (JsonInputError, KeyError, TypeError):
                    raise CorpusError(f"--stats-corpus {path}: line {number} is not a JSON object with a 'text' field") from None
                if not isinstance(text, str):
                    raise CorpusError(f"--stats-corpus {path}: line {number}: 'text' holds {type(text).__name__}, not text")
                if text.strip():
                    paragraphs.append(text)
    else:
        paragraphs = [re.sub(r"\s+", " ", p).strip() for p in re.split(r"\n\s*\n", raw) if p.strip()]
    if not paragraphs:
        raise CorpusError(f"--stats-corpus {path}: holds no text")
    digest = hashlib.sha256(raw.encode()).hexdigest()[:12]
    return Corpus(str(path), digest, tuple(paragraphs), stats_name=f"{path.stem}-{digest}")


def _folder_digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file() and not path.name.endswith(".lock"):
            digest.update(f"{path.relative_to(folder)}:{path.stat().st_size}".encode())
    return digest.hexdigest()[:12]


def _text_of(value: Any, spec: str, row: Any) -> str:
    """A row's text: a string (an empty one is skipped by the caller); null or any other type is an error, never
    the string "None" the statistics would be computed from."""
    if not isinstance(value, str):
        raise CorpusError(f"--stats-corpus {spec}: row {row} has {type(value).__name__} {str(value)[:40]!r} in its 'text' "
                          "column, not text; give a dataset whose 'text' column holds strings")
    return value


def _sampled(dataset: Any, n: int, spec: str) -> Iterator[str]:
    """``n`` texts drawn with the reference's seed: a fixed random subset of a sized dataset, a seeded shuffle of a stream.
    Empty texts are skipped."""
    if hasattr(dataset, "__len__"):
        rows = sorted(random.Random(SAMPLE_SEED).sample(range(len(dataset)), min(n, len(dataset))))
        texts = ((row, dataset[row]["text"]) for row in rows)
    else:
        texts = enumerate(record["text"] for record in dataset.shuffle(seed=SAMPLE_SEED, buffer_size=STREAM_SHUFFLE_BUFFER).take(n))
    for row, value in texts:
        text = _text_of(value, spec, row)
        if text.strip():
            yield text


def _hf_dataset(spec: str) -> Corpus:
    """``hf:NAME[:CONFIG]`` (streamed from the Hugging Face hub or its local cache) or ``hf:FOLDER``."""
    name, _, config = spec[len(HF_PREFIX):].partition(":")
    try:
        import datasets
    except ImportError:
        raise CorpusError(f"--stats-corpus {spec}: needs the datasets library (pip install datasets)") from None
    folder = Path(name).expanduser()
    if folder.is_dir():
        try:
            if any((folder / f).is_file() for f in ("dataset_info.json", "state.json", "dataset_dict.json")):
                dataset = datasets.load_from_disk(str(folder))
                if isinstance(dataset, datasets.DatasetDict):
                    dataset = dataset["train"] if "train" in dataset else dataset[next(iter(dataset))]
            else:
                dataset = datasets.load_dataset(str(folder), config or None, split="train")
        except Exception as exc:  # datasets raises many types for a folder it cannot read
            raise CorpusError(f"--stats-corpus {spec}: cannot read {folder} as a dataset ({first_line(exc, 200)}); give a folder "
                              "written by datasets' save_to_disk, or one of json/parquet/text files with a 'text' column") from None
        digest, stats_name = _folder_digest(folder), f"{folder.name}-{_folder_digest(folder)}"
    else:
        if not name:
            raise CorpusError(f"--stats-corpus {spec}: expected hf:NAME[:CONFIG] or hf:FOLDER, e.g. {REFERENCE_CORPUS}")
        try:
            dataset = datasets.load_dataset(name, config or None, split="train", streaming=True)
        except Exception as exc:  # offline, unknown name, gated: all end here
            where = f"'{name}'" + (f", '{config}'" if config else "")
            raise CorpusError(
                f"--stats-corpus {spec}: the dataset is not available here ({first_line(exc, 200)}); on a machine with internet run "
                f"python -c \"import datasets; datasets.load_dataset({where}, split='train').save_to_disk('DIR')\" "
                f"and pass --stats-corpus hf:DIR, or give --stats-dir with the reference's .npz statistics") from None
        digest = hashlib.sha256(f"{name}:{config}".encode()).hexdigest()[:12]
        stats_name = "wikipedia" if (name, config) == ("wikipedia", "20200501.en") else f"{name}-{config}".replace("/", "_")
    columns = getattr(dataset, "column_names", None)
    if columns is not None and "text" not in columns:
        raise CorpusError(f"--stats-corpus {spec}: the dataset has no 'text' column (columns: {', '.join(columns)})")
    return Corpus(spec, digest, articles=lambda n: _sampled(dataset, n, spec), stats_name=stats_name)


def load_corpus(name: str) -> Corpus:
    """``gensim-wiki`` (default), ``hf:...`` (a Hugging Face dataset) or the path of a text / JSON-lines file."""
    if name == GENSIM_WIKI:
        return _gensim_wiki()
    if name.startswith(HF_PREFIX):
        return _hf_dataset(name)
    path = Path(name).expanduser()
    if not path.is_file():
        raise CorpusError(f"--stats-corpus {name}: neither {GENSIM_WIKI!r}, nor hf:NAME[:CONFIG] / hf:FOLDER, nor an existing file")
    return _text_file(path)
