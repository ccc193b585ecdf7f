"""Second-moment statistics ``C = E[k k^T]`` of the keys entering an MLP output projection.

ROME, MEMIT and their descendants whiten or project their key vectors with
``C``. It is estimated over a text corpus (editors/corpus.py) once per model,
module, corpus and sample count, and kept on disk in one of two places:

* without ``--stats-dir``: our cache (``<cache>/stats/<fingerprint>-...pt``);
* with ``--stats-dir DIR``: the reference's layout, written by kmeng01/rome's
  and kmeng01/memit's ``layer_stats``:
  ``DIR/<model>/<dataset>_stats/<module>_<dtype>_mom2_<n>.npz`` with the
  keys ``mom2.mom2`` (the sum of ``k k^T``, in ``<dtype>``) and ``mom2.count``
  (the number of keys). Files there are read (the reference's own, or ours);
  missing ones are computed and written there, so the two are interchangeable.

The forward pass stops right after the module, so later layers cost nothing.
"""

from __future__ import annotations

import sys
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from editors.corpus import MIN_CHUNK_TOKENS, Corpus, CorpusError, load_corpus
from pitfalls_editkit.cache import atomic_replace, cached_tensors, locked
from pitfalls_editkit.low_rank import out_in_shape
from pitfalls_editkit.models import LoadedModel
from pitfalls_editkit.nethook import Trace, get_module
from pitfalls_editkit.progress import LOGGER
from pitfalls_editkit.scoring import transformer_body

if TYPE_CHECKING:
    from pitfalls_editkit.contract import EditorSettings

CHUNK_TOKENS = 128  # tokens per piece of a paragraph corpus
MAX_TEXT_TOKENS = 2048  # a whole text (hf: corpora) is truncated to the model's context, at most GPT-J's 2048
MOM2_DTYPES = {"float32": torch.float32, "float64": torch.float64}  # hparams' mom2_dtype
BATCH_TOKENS = {"cpu": 2048, "cuda": 65536}  # padded tokens per forward pass: small on a CPU, what a GPU wants on one


class StatsFileError(ValueError):
    """A statistics file that cannot be used; the message names it."""


# --------------------------------------------------------------------------- the samples


def token_samples(loaded: LoadedModel, corpus: Corpus, max_tokens: int, max_samples: int) -> Iterator[list[int]]:
    """Token-id samples: whole texts truncated to the context (hf corpora), or paragraph pieces up to ``max_tokens``."""
    tok = loaded.tokenizer
    if corpus.articles is not None:
        config = loaded.model.config.get_text_config()
        context = min(MAX_TEXT_TOKENS, int(getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
                                           or MAX_TEXT_TOKENS))
        for text in corpus.articles(max_samples):
            ids = tok(text)["input_ids"][:context]
            if ids:
                yield ids
        return
    total = 0
    for paragraph in corpus.paragraphs[:max_samples]:
        ids = tok(paragraph)["input_ids"]
        for start in range(0, len(ids), CHUNK_TOKENS):
            piece = ids[start : start + CHUNK_TOKENS]
            if len(piece) < MIN_CHUNK_TOKENS:
                continue
            yield piece
            total += len(piece)
            if total >= max_tokens:
                return


def _batches(samples: Iterator[list[int]], budget: int) -> Iterator[list[list[int]]]:
    """Group samples so that each padded batch holds about ``budget`` tokens."""
    batch: list[list[int]] = []
    width = 0
    for sample in samples:
        if batch and max(width, len(sample)) * (len(batch) + 1) > budget:
            yield batch
            batch, width = [], 0
        batch.append(sample)
        width = max(width, len(sample))
    if batch:
        yield batch


def collect_second_moment(loaded: LoadedModel, module_name: str, corpus: Corpus, max_tokens: int, max_samples: int) -> dict[str, torch.Tensor]:
    """Accumulate ``sum k k^T`` (float64, on the model's device) and the number of keys, with a progress bar."""
    from tqdm.auto import tqdm

    tok, model = loaded.tokenizer, loaded.model
    moment: torch.Tensor | None = None
    count = 0
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    budget = BATCH_TOKENS["cuda" if loaded.device.type == "cuda" else "cpu"]
    LOGGER.info("computing the second moment of %s's keys from %s (once per model and corpus) ...", module_name, corpus.name)
    start = time.perf_counter()
    unit = "texts" if corpus.whole_texts else "pieces"
    bar = tqdm(total=max_samples if corpus.whole_texts else None, desc=f"second moment of {module_name} ({corpus.name})",
               unit=unit, file=sys.stderr, mininterval=5, disable=None)
    with bar:
        for batch in _batches(token_samples(loaded, corpus, max_tokens, max_samples), budget):
            width = max(len(c) for c in batch)
            ids = torch.full((len(batch), width), pad, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for row, chunk in enumerate(batch):
                ids[row, : len(chunk)] = torch.tensor(chunk)
                mask[row, : len(chunk)] = 1
            ids, mask = ids.to(loaded.device), mask.to(loaded.device)
            with torch.no_grad(), Trace(model, module_name, retain_input=True, retain_output=False, stop=True) as trace:
                transformer_body(model)(input_ids=ids, attention_mask=mask)
            keys = trace.input[mask.bool()].double()
            moment = keys.T @ keys if moment is None else moment + keys.T @ keys
            count += keys.shape[0]
            bar.update(len(batch))
    LOGGER.info("second moment of %s: %d keys, done in %.0f s", module_name, count, time.perf_counter() - start)
    if moment is None:
        raise CorpusError(f"--stats-corpus {corpus.name}: gave no text piece of {MIN_CHUNK_TOKENS} tokens or more to compute "
                          "statistics from; give a longer text")
    return {"sum_kkT": moment.cpu(), "count": torch.tensor(count)}


# --------------------------------------------------------------------------- the reference's file layout


def reference_model_dirs(loaded: LoadedModel) -> list[str]:
    """Folder names the reference would give this model (``config._name_or_path`` with ``/`` as ``_``), ours first."""
    name = loaded.name.rstrip("/")
    own = Path(name).name if Path(name).expanduser().exists() else name.replace("/", "_")
    return list(dict.fromkeys([own, loaded.hparams_key]))


def reference_stats_path(stats_dir: Path, model_dir: str, dataset: str, module_name: str, dtype_name: str, n_samples: int) -> Path:
    """``<stats_dir>/<model>/<dataset>_stats/<module>_<dtype>_mom2_<n>.npz``, as the reference's ``layer_stats`` names it."""
    return Path(stats_dir) / model_dir / f"{dataset}_stats" / f"{module_name}_{dtype_name}_mom2_{n_samples}.npz"


SYMMETRY_TOLERANCE = 1e-5  # max |C - C^T| over max |C|
PSD_TOLERANCE = 1e-4  # eigenvalues may be this far below 0, relative to the largest diagonal entry (float32 rounding)


def _npz_member_header(archive: zipfile.ZipFile, name: str, path: Path) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype a member of an .npz declares, read from its header before any data is allocated."""
    with archive.open(f"{name}.npy") as member:
        version = np.lib.format.read_magic(member)
        if version not in ((1, 0), (2, 0), (3, 0)):
            raise StatsFileError(f"{path}: {name} has .npy format version {version}; expected 1.0, 2.0 or 3.0")
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _fortran, dtype = read_header(member)
    declared = int(np.prod(shape, dtype=object)) * dtype.itemsize
    if declared > archive.getinfo(f"{name}.npy").file_size:
        raise StatsFileError(f"{path}: {name} declares shape {shape} ({declared} bytes), more than the file holds; "
                             "the file is damaged: delete it or fix --stats-dir")
    return shape, dtype


def read_reference_stats(path: Path, size: int | None = None) -> dict[str, torch.Tensor]:
    """``mom2.mom2`` and ``mom2.count`` of a reference-format file (read without pickle), checked: the shape and the
    dtype the file declares before it is read, then :func:`check_second_moment`."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = {n.removesuffix(".npy") for n in archive.namelist()}
            if not {"mom2.mom2", "mom2.count"} <= names:
                raise StatsFileError(f"{path}: has no 'mom2.mom2' and 'mom2.count' (keys: {', '.join(sorted(names))}); "
                                     "expected the second-moment file of the reference's layer_stats")
            shape, dtype = _npz_member_header(archive, "mom2.mom2", path)
            if len(shape) != 2 or shape[0] != shape[1] or (size is not None and shape[0] != size):
                wanted = f"({size}, {size})" if size is not None else "square"
                raise StatsFileError(f"{path}: mom2.mom2 has shape {shape}, expected {wanted} for this module; is it another "
                                     "model's file?")
            for name, kind in (("mom2.mom2", dtype), ("mom2.count", _npz_member_header(archive, "mom2.count", path)[1])):
                if not np.issubdtype(kind, np.number) or np.issubdtype(kind, np.complexfloating):
                    raise StatsFileError(f"{path}: {name} holds {kind}, not real numbers")
        with np.load(path, allow_pickle=False) as data:
            mom2, count = np.asarray(data["mom2.mom2"]), np.asarray(data["mom2.count"])
    except StatsFileError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError, MemoryError) as exc:
        raise StatsFileError(f"{path}: cannot read it as a .npz statistics file ({exc}); delete it or fix --stats-dir") from None
    if count.size != 1:
        raise StatsFileError(f"{path}: mom2.count holds {count.size} values, expected one count of keys")
    stats = {"sum_kkT": torch.from_numpy(mom2.astype(np.float64)), "count": torch.tensor(float(count.reshape(())))}
    check_second_moment(stats, size, path)
    stats["count"] = torch.tensor(int(stats["count"]))
    return stats


def check_second_moment(stats: object, size: int | None, path: Path) -> None:
    """A second moment an editor can use: ``sum_kkT`` a finite (size, size) matrix, symmetric within
    SYMMETRY_TOLERANCE, positive semidefinite within PSD_TOLERANCE; ``count`` a whole number of keys >= 1."""
    todo = "delete it to compute it again, or fix --stats-dir"
    if not isinstance(stats, dict) or not isinstance(stats.get("sum_kkT"), torch.Tensor) or not isinstance(stats.get("count"), torch.Tensor):
        raise StatsFileError(f"{path}: does not hold the tensors sum_kkT and count; {todo}")
    moment, count = stats["sum_kkT"], stats["count"]
    if moment.ndim != 2 or moment.shape[0] != moment.shape[1] or (size is not None and moment.shape[0] != size):
        raise StatsFileError(f"{path}: the second moment has shape {tuple(moment.shape)}, expected ({size}, {size}) for this "
                             f"module; {todo}")
    if count.numel() != 1 or not torch.isfinite(count.double()).all() or float(count) < 1 or float(count) != int(float(count)):
        raise StatsFileError(f"{path}: the count of keys is {count.tolist()}, expected a whole number >= 1; {todo}")
    matrix = moment.double()
    if not torch.isfinite(matrix).all():
        raise StatsFileError(f"{path}: the second moment holds NaN or infinite values; {todo}")
    scale = float(matrix.abs().max())
    if scale == 0:
        raise StatsFileError(f"{path}: the second moment is all zeros; {todo}")
    asymmetry = float((matrix - matrix.T).abs().max()) / scale
    if asymmetry > SYMMETRY_TOLERANCE:
        raise StatsFileError(f"{path}: the second moment is not symmetric (max |C - C^T| / max |C| = {asymmetry:.2g}); {todo}")
    # C + tol * max(diag C) * I has a Cholesky factor exactly when no eigenvalue of C is below -tol * max(diag C)
    # (a factorization, not an eigendecomposition: it is meant to run on GPT-J's 16384-wide modules too).
    shift = PSD_TOLERANCE * float(matrix.diagonal().max().clamp(min=0)) or PSD_TOLERANCE * scale
    _, info = torch.linalg.cholesky_ex((matrix + matrix.T) / 2 + shift * torch.eye(matrix.shape[0], dtype=matrix.dtype))
    if int(info) != 0:
        raise StatsFileError(f"{path}: the second moment is not positive semidefinite (an eigenvalue below -{PSD_TOLERANCE:g} "
                             f"times its largest diagonal entry); {todo}")


def write_reference_stats(path: Path, stats: dict[str, torch.Tensor], dtype_name: str) -> None:
    """Write ``stats`` in the reference's layout (``mom2.mom2`` in the hyper-parameters' dtype)."""
    arrays = {"mom2.constructor": np.array("util.runningstats.SecondMoment()"),
              "mom2.count": np.array(int(stats["count"])),
              "mom2.mom2": stats["sum_kkT"].to(MOM2_DTYPES[dtype_name]).numpy()}

    def write(tmp: str) -> None:
        with open(tmp, "wb") as handle:
            np.savez(handle, **arrays)

    atomic_replace(path, write)


# --------------------------------------------------------------------------- where C comes from


@dataclass(frozen=True)
class StatsSource:
    """Where the statistics of one module come from (a file we read or write), and whether it is the reference's."""

    path: Path
    reference_layout: bool  # a .npz in the reference's layout under --stats-dir
    corpus: str

    def beside(self, suffix: str) -> Path:
        """A file for something derived from these statistics (AlphaEdit's projection), next to them."""
        return self.path.with_name(f"{self.path.stem}_{suffix}.pt")


def stats_source(loaded: LoadedModel, settings: EditorSettings, module_name: str, n_samples: int, dtype_name: str,
                 corpus: Corpus | None = None) -> StatsSource:
    """The file holding (or to hold) ``C`` for this module; loads the corpus only when it must."""
    if settings.stats_dir is not None:
        dataset = stats_dataset_name(settings.stats_corpus, corpus)
        candidates = [reference_stats_path(settings.stats_dir, d, dataset, module_name, dtype_name, n_samples)
                      for d in reference_model_dirs(loaded)]
        found = next((p for p in candidates if p.is_file()), candidates[0])
        return StatsSource(found, True, settings.stats_corpus)
    corpus = corpus or load_corpus(settings.stats_corpus)
    budget = "" if corpus.whole_texts else f"-{settings.stats_tokens}"
    key = f"{loaded.fingerprint}-{module_name}-{corpus.digest}{budget}-{n_samples}"
    return StatsSource(settings.cache_dir / "stats" / f"{key}.pt", False, settings.stats_corpus)


def stats_dataset_name(corpus_name: str, corpus: Corpus | None = None) -> str:
    """The ``<dataset>`` folder of the reference layout: ``wikipedia`` for the reference's corpus."""
    from editors.corpus import REFERENCE_CORPUS

    if corpus_name == REFERENCE_CORPUS:
        return "wikipedia"
    corpus = corpus or load_corpus(corpus_name)
    return corpus.stats_name


def second_moment_stats(loaded: LoadedModel, settings: EditorSettings, module_name: str, n_samples: int, dtype_name: str) -> dict[str, torch.Tensor]:
    """``sum k k^T`` and the count for one module: read from its file, else computed (and written there)."""
    corpus = load_corpus(settings.stats_corpus) if settings.stats_dir is None else None  # keys our file; read once
    source = stats_source(loaded, settings, module_name, n_samples, dtype_name, corpus)
    if not source.reference_layout:
        try:
            stats = cached_tensors(source.path, lambda: collect_second_moment(loaded, module_name, corpus, settings.stats_tokens, n_samples))
        except (RuntimeError, EOFError, ValueError, OSError) as exc:
            if isinstance(exc, CorpusError):
                raise
            raise StatsFileError(f"{source.path}: cannot read the cached statistics ({' '.join(str(exc).split())[:200]}); "
                                 "delete it to compute it again") from None
        check_second_moment(stats, out_in_shape(get_module(loaded.model, module_name))[1], source.path)
        return stats
    with locked(source.path):
        if source.path.is_file():
            return read_reference_stats(source.path, out_in_shape(get_module(loaded.model, module_name))[1])
        try:
            corpus = load_corpus(settings.stats_corpus)
        except CorpusError as exc:
            raise CorpusError(f"{exc}; or put the statistics file there: {source.path}") from None
        stats = collect_second_moment(loaded, module_name, corpus, settings.stats_tokens, n_samples)
        write_reference_stats(source.path, stats, dtype_name)
        return stats


def editor_second_moment(loaded: LoadedModel, settings: EditorSettings, module_name: str, max_samples: int, dtype_name: str,
                         invertible: bool = False) -> torch.Tensor:
    """``C = E[k k^T]`` for an editor, in the hyper-parameters' dtype, on the model's device.

    ``invertible``: the editor inverts ``C`` itself (ROME), so it must be positive definite, not only semidefinite
    (MEMIT and its descendants add ``K K^T`` or a ridge before solving, and take a singular ``C``)."""
    stats = second_moment_stats(loaded, settings, module_name, max_samples, dtype_name)
    moment = (stats["sum_kkT"] / stats["count"].double()).to(MOM2_DTYPES[dtype_name])
    if invertible and int(torch.linalg.cholesky_ex(moment.double())[1]) != 0:
        path = stats_source(loaded, settings, module_name, max_samples, dtype_name).path
        raise StatsFileError(f"{path}: the second moment of {module_name} is singular (fewer independent keys than its "
                             f"{moment.shape[0]} dimensions), and this editor inverts it; compute it from more text "
                             "(--stats-tokens, --stats-corpus) or give the reference's file")
    return moment.to(loaded.device)


def describe_stats(settings: EditorSettings) -> dict[str, object]:
    """What the results say about the statistics behind an editor."""
    from editors.corpus import HF_PREFIX

    described: dict[str, object] = {"stats_corpus": settings.stats_corpus,
                                    "stats_dir": str(settings.stats_dir) if settings.stats_dir else None}
    if not settings.stats_corpus.startswith(HF_PREFIX):
        described["stats_tokens"] = settings.stats_tokens
    return described
