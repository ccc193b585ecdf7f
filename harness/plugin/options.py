"""The plugin's options, read once into :class:`RunOptions` and checked before anything runs.

Also the per-process state every other part of the plugin reads: the options
and the dataset (``--dataset-dir``, or the generated default dataset).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from editors.corpus import GENSIM_WIKI, REFERENCE_CORPUS
from pitfalls_benchmark.datasets import Dataset, DatasetError, load_dataset
from pitfalls_editkit.folders import overlaps

DEFAULT_EDITOR = "rome"


@dataclass(frozen=True)
class RunOptions:
    editor: str
    model: str
    dataset_dir: str | None
    limit: int | None
    results_dir: str
    run_name: str | None
    device: str
    dtype: str
    seed: int
    record_only: bool
    mle: bool
    hparams: str | None
    stats_corpus: str
    stats_tokens: int
    cache_dir: str | None
    stats_dir: str | None = None  # statistics in the reference's .npz layout
    hparams_set: tuple[str, ...] = ()  # KEY=VALUE replacing single hyper-parameters
    sequential: int | None = None  # None: every case on the original model; 0: one chain per worker; N: restored every N cases
    retention_every: int = 10
    retention_sample: int = 20
    shard: str | None = None  # "K/N": run the K-th of N deterministic parts of the cases
    resume: bool = False  # skip the cases the --run-name folder already holds a finished record of
    case_batch: int = 1  # K: the first edits of K consecutive cases are worked out together (Editor.prepare)
    generation: int | None = None  # --generation [N]: every scored query also answered greedily, N new tokens at most
    general_ability: str | None = None  # --general-ability SPEC[,SPEC...]: measures of the edited model's general ability
    general_every: int = 10  # on a chain: measure every K edits

    @classmethod
    def from_config(cls, config: pytest.Config) -> RunOptions:
        get = config.getoption
        return cls(
            editor=get("--editor"), model=get("--model"), dataset_dir=get("--dataset-dir"), limit=get("--limit"),
            results_dir=get("--results-dir"), run_name=get("--run-name"), device=get("--device"), dtype=get("--dtype"),
            seed=get("--seed"), record_only=get("--record-only"), mle=get("--mle"), hparams=get("--hparams"),
            stats_corpus=get("--stats-corpus") or (REFERENCE_CORPUS if get("--stats-dir") else GENSIM_WIKI),
            stats_tokens=get("--stats-tokens"), cache_dir=get("--cache-dir"), shard=get("--shard"), stats_dir=get("--stats-dir"),
            hparams_set=tuple(get("--hparams-set") or ()), sequential=get("--sequential"),
            retention_every=get("--retention-every"), retention_sample=get("--retention-sample"),
            resume=get("--resume"), case_batch=get("--case-batch"), generation=get("--generation"),
            general_ability=get("--general-ability"), general_every=get("--general-every"),
        )

    @property
    def shard_parts(self) -> tuple[int, int] | None:
        """``(K, N)`` of ``--shard K/N``, or None."""
        if not self.shard:
            return None
        k, _, n = self.shard.partition("/")
        return int(k), int(n)

    @property
    def cache_path(self) -> Path:
        from pitfalls_editkit.cache import default_cache_dir

        return Path(self.cache_dir) if self.cache_dir else default_cache_dir()

    @property
    def run_label(self) -> str:
        """The editor as the user named it (the run's config says the editor's own name)."""
        return f"{self.editor}+MLE" if self.mle else self.editor


def add_options(parser: pytest.Parser) -> None:
    from pitfalls_editkit.presets import DEFAULT_MODEL

    group = parser.getgroup("pitfalls", "knowledge-editing pitfalls")
    group.addoption("--editor", default=DEFAULT_EDITOR,
                    help="editing method: a shipped name (rome, memit, ft, mend), a name an installed package registers, "
                         "or module.path:ClassName (default: rome)")
    group.addoption("--model", default=DEFAULT_MODEL,
                    help=f"preset name, local Hugging Face folder or hub id (default: {DEFAULT_MODEL})")
    group.addoption("--dataset-dir", default=None, help="folder in the published ConflictEdit/RoundEdit format")
    group.addoption("--limit", type=int, default=None, help="first N cases of each split")
    group.addoption("--results-dir", default="results", help="where run folders are written (default: results/)")
    group.addoption("--run-name", default=None, help="run folder name (default: time-model-editor)")
    group.addoption("--device", default="auto", help="auto|cpu|cuda|cuda:N (default: auto)")
    group.addoption("--dtype", default="float32", help="float32|float16|bfloat16 (default: float32)")
    group.addoption("--seed", type=int, default=0, help="base seed; each case derives its own (default: 0)")
    group.addoption("--record-only", action="store_true", help="record metrics without failing items on a pitfall")
    group.addoption("--mle", action="store_true", help="Multi-Label Edit in the second round-edit step (batch editors)")
    group.addoption("--hparams", default=None, help="hyper-parameter JSON file overriding the per-model one")
    group.addoption("--hparams-set", action="append", default=[], metavar="KEY=VALUE",
                    help="replace one hyper-parameter of the editor's file (repeatable), e.g. checkpoint=~/mend-10tok-gpt2-xl.pt")
    group.addoption("--stats-corpus", default=None,
                    help="text behind the second-moment statistics: gensim-wiki (default), a .txt/.jsonl file, or a Hugging Face "
                         f"dataset hf:NAME[:CONFIG] / hf:FOLDER (the reference's: {REFERENCE_CORPUS}; default with --stats-dir)")
    group.addoption("--stats-dir", default=None,
                    help="folder of statistics in the reference's layout (<model>/wikipedia_stats/<module>_<dtype>_mom2_<n>.npz): "
                         "read when there, computed and written there when not")
    group.addoption("--stats-tokens", type=int, default=100_000, help="corpus tokens for the statistics (default: 100000)")
    group.addoption("--cache-dir", default=None, help="cache folder (default: $PITFALLS_CACHE_DIR or ~/.cache/pitfalls-harness)")
    group.addoption("--sequential", nargs="?", type=int, const=0, default=None, metavar="N",
                    help="lifelong mode: edits accumulate on one model per worker, cases in a seeded order; the chain is "
                         "restored at its end, or every N cases when N is given")
    group.addoption("--retention-every", type=int, default=10, metavar="K",
                    help="sequential mode: every K edits, check that a sample of the chain's earlier edits still holds (default 10; 0: never)")
    group.addoption("--retention-sample", type=int, default=20, metavar="N", help="sequential mode: earlier edits checked each time (default 20)")
    group.addoption("--shard", default=None, metavar="K/N",
                    help="run the K-th of N parts of the cases (the same cases on any machine); merge with python -m reports merge")
    group.addoption("--case-batch", type=int, default=1, metavar="K",
                    help="work out the first edits of K consecutive cases together on the unedited model (editors that "
                         "offer it: rome, r-rome and the memit family); same results, fewer passes on a GPU (default 1)")
    group.addoption("--generation", nargs="?", type=int, const=GENERATION_TOKENS, default=None, metavar="N",
                    help="also answer every query the metrics score by greedy generation (at most N new tokens, default "
                         f"{GENERATION_TOKENS}) and record the generated twin of each 0/1 metric and of the pitfall verdict")
    group.addoption("--general-ability", default=None, metavar="SPEC[,SPEC...]",
                    help="measure the edited model's general ability after each case's edits (on a chain: every "
                         "--general-every edits) against the unedited model's: perplexity[:SOURCE], kg (a quiz from the "
                         "geography graph), lm-eval:TASK (a task name or a local task YAML)")
    group.addoption("--general-every", type=int, default=10, metavar="K",
                    help="sequential mode: measure the general ability every K edits (default 10)")
    group.addoption("--resume", action="store_true",
                    help="go on with the --run-name folder: skip the cases it already holds a finished record of (same options)")


DTYPES = ("float32", "float16", "bfloat16")
GENERATION_TOKENS = 8  # --generation's default: enough for the datasets' labels (most are 1-4 tokens)
CORPUS_ROWS_CHECKED = 20  # rows of a local --stats-corpus hf:FOLDER read before the run


def check_options(options: RunOptions) -> None:
    """Every option a user can get wrong, as one usage line before any collection.

    Cheap checks only (no model, no torch): the plugin runs in every pytest
    session of the environment. A ``--stats-corpus`` file is read here; the
    default corpus (gensim's excerpt) is not.
    """
    from editors.registry import SHIPPED, UnknownEditorError, editor_class

    if options.editor not in SHIPPED or options.mle:  # shipped editors are known good; anything else is imported and checked
        try:
            chosen = editor_class(options.editor)
        except UnknownEditorError as exc:
            raise pytest.UsageError(str(exc)) from None
        if options.mle and not chosen.supports_batch:
            raise pytest.UsageError(f"--mle edits all true objects of a case in one batch; editor {options.editor!r} cannot "
                                    "edit a batch (supports_batch is False): drop --mle or choose an editor that can")
    if options.generation is not None and options.generation < 1:
        raise pytest.UsageError(f"--generation {options.generation}: give N >= 1 new tokens a generated answer may have")
    if options.generation is not None and options.case_batch > 1:
        raise pytest.UsageError("--generation runs cases one at a time: drop --case-batch (or --generation)")
    if options.general_every < 1:
        raise pytest.UsageError(f"--general-every {options.general_every}: give K >= 1 edits between measurements")
    if options.general_ability is not None:
        from harness.general_ability import AbilityError, parse_specs

        try:
            parse_specs(options.general_ability)
        except AbilityError as exc:
            raise pytest.UsageError(str(exc)) from None
        if options.case_batch > 1:
            raise pytest.UsageError("--general-ability measures each case's edited model: drop --case-batch (or --general-ability)")
    if options.limit is not None and options.limit < 1:
        raise pytest.UsageError(f"--limit {options.limit}: selects no case; give 1 or more (or leave it out for every case)")
    if options.device not in ("auto", "cpu", "cuda") and not (options.device.startswith("cuda:") and options.device[5:].isdigit()):
        raise pytest.UsageError(f"--device {options.device!r}: expected auto, cpu, cuda or cuda:N")
    if options.shard is not None:
        k, slash, n = options.shard.partition("/")
        if not (slash and k.isascii() and n.isascii() and k.isdigit() and n.isdigit() and 1 <= int(k) <= int(n)):
            raise pytest.UsageError(f"--shard {options.shard!r}: expected K/N with 1 <= K <= N, e.g. --shard 2/8")
    if options.dtype not in DTYPES:
        raise pytest.UsageError(f"--dtype {options.dtype!r}: expected one of {', '.join(DTYPES)}")
    if options.sequential is not None and options.sequential < 0:
        raise pytest.UsageError(f"--sequential {options.sequential}: give N >= 1 cases per segment, or no number for one chain")
    if options.retention_every < 0 or options.retention_sample < 1:
        raise pytest.UsageError(f"--retention-every {options.retention_every} / --retention-sample {options.retention_sample}: "
                                "give K >= 0 (0: never) and N >= 1")
    if options.stats_tokens < 1:
        raise pytest.UsageError(f"--stats-tokens {options.stats_tokens}: must be at least 1 (default: 100000)")
    from pitfalls_editkit.hparams import HyperParamsError, parse_hparams_set

    try:
        parse_hparams_set(list(options.hparams_set))
    except HyperParamsError as exc:
        raise pytest.UsageError(str(exc)) from None
    if options.hparams is not None and not Path(options.hparams).expanduser().is_file():
        raise pytest.UsageError(f"--hparams {options.hparams}: no such file (a JSON file of the editor's hyper-parameters)")
    if options.run_name is not None and (not options.run_name.strip() or Path(options.run_name).name != options.run_name
                                         or options.run_name in (".", "..")):
        raise pytest.UsageError(f"--run-name {options.run_name!r}: give a folder name (no path separators); "
                                "--results-dir says where it goes")
    if options.case_batch < 1:
        raise pytest.UsageError(f"--case-batch {options.case_batch}: give K >= 1 cases worked out together (1: one at a time)")
    if options.case_batch > 1 and options.sequential is not None:
        raise pytest.UsageError("--case-batch: in --sequential mode every edit is made on the model the earlier edits left, "
                                "so none can be worked out ahead; drop one of the two")
    if options.resume and not options.run_name:
        raise pytest.UsageError("--resume: give the --run-name of the run to go on with (in --results-dir)")
    if options.resume and options.sequential is not None:
        raise pytest.UsageError("--resume: a --sequential chain depends on every earlier edit, so it cannot skip cases; "
                                "start the chain again without --resume")
    results = Path(options.results_dir).expanduser()
    existing = next((p for p in (results, *results.parents) if p.exists()), None)
    if results.exists() and not results.is_dir():
        raise pytest.UsageError(f"--results-dir {options.results_dir}: is a file, not a folder; choose a folder")
    if existing is not None and not os.access(existing, os.W_OK):
        raise pytest.UsageError(f"--results-dir {options.results_dir}: cannot write in {existing}; choose a writable folder")
    if options.dataset_dir:  # a run folder is written into: never the dataset's folder, inside it or around it
        run_dir = results / options.run_name if options.run_name else results / "new-run"
        if overlaps(run_dir, options.dataset_dir):
            raise pytest.UsageError(f"--results-dir {options.results_dir} (--run-name {options.run_name}): the run folder is, holds "
                                    f"or lies inside --dataset-dir {options.dataset_dir}; write results elsewhere")
    if options.stats_dir is not None and Path(options.stats_dir).expanduser().exists() and not Path(options.stats_dir).expanduser().is_dir():
        raise pytest.UsageError(f"--stats-dir {options.stats_dir}: is a file; give the folder that holds <model>/<dataset>_stats/")
    if options.stats_corpus != GENSIM_WIKI:
        _check_corpus(options.stats_corpus)
    from pitfalls_editkit.presets import looks_like_path

    model = options.model
    if looks_like_path(model) and not Path(model).expanduser().exists():
        raise pytest.UsageError(f"--model {model}: no such folder (give a preset name, a local Hugging Face folder or a hub id)")


def _check_corpus(name: str) -> None:
    from editors.corpus import HF_PREFIX, MIN_CHUNK_TOKENS, CorpusError, load_corpus

    if name.startswith(HF_PREFIX) and not Path(name[len(HF_PREFIX):].partition(":")[0]).expanduser().is_dir():
        return  # a hub dataset is opened when statistics are computed (it may be in the local cache, or not needed)
    try:
        corpus = load_corpus(name)
    except CorpusError as exc:
        raise pytest.UsageError(str(exc)) from None
    if corpus.whole_texts:  # a local dataset: its first sampled rows must be text (null rows fail here, not per case)
        try:
            if not any(True for _ in corpus.articles(CORPUS_ROWS_CHECKED)):
                raise pytest.UsageError(f"--stats-corpus {name}: its 'text' column holds no text in the {CORPUS_ROWS_CHECKED} "
                                        "rows sampled first; give a dataset of text")
        except CorpusError as exc:
            raise pytest.UsageError(str(exc)) from None
    elif not any(len(p.split()) >= MIN_CHUNK_TOKENS for p in corpus.paragraphs):
        raise pytest.UsageError(f"--stats-corpus {name}: too short: no paragraph has {MIN_CHUNK_TOKENS} words or more; "
                                "give a longer text")


@dataclass
class PluginState:
    """What the plugin holds for one pytest process."""

    options: RunOptions
    dataset: Dataset | None = None
    dataset_root: str | None = None  # --dataset-dir, or the generated default dataset's folder
    prior_run: dict | None = None  # the controller: {"run_dir", "config"} of the run folder this run continues
    groups: dict[str, list] = field(default_factory=dict)  # chain or batch id -> its cases, in order (dealt at collection)


STATE = pytest.StashKey[PluginState]()


def dataset_of(config: pytest.Config) -> Dataset:
    """The run's dataset, loaded once per process; a broken one is one usage line."""
    state = config.stash[STATE]
    if state.dataset is None:
        try:
            state.dataset_root = state.options.dataset_dir or str(_default_dataset(state.options))
            state.dataset = load_dataset(state.dataset_root, limit=state.options.limit)
        except DatasetError as exc:
            raise pytest.UsageError(str(exc)) from None
        except ImportError as exc:
            raise pytest.UsageError(f"the generated default dataset needs {exc.name or exc}: pip install pyworldatlas, "
                                    "or pass --dataset-dir") from None
    return state.dataset


def _default_dataset(options: RunOptions) -> Path:
    """Without --dataset-dir: the geography dataset generated from pyworldatlas (cached; see pitfalls_generator/cli.py)."""
    from pitfalls_generator.cli import default_dataset_dir

    return default_dataset_dir(Path(options.cache_dir) if options.cache_dir else None)


def is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def worker_id() -> str:
    return os.environ.get("PYTEST_XDIST_WORKER", "")


HOST_INDEX, HOST_WORKERS = "pitfalls_host_index", "pitfalls_host_workers"  # what the controller tells each worker


def worker_index(config: pytest.Config | None = None) -> int | None:
    """This worker's index among the workers on its machine (set by the controller), else its global index."""
    workerinput = getattr(config, "workerinput", None) or {}
    if HOST_INDEX in workerinput:
        return int(workerinput[HOST_INDEX])
    worker = worker_id()
    return int(worker[2:]) if worker.startswith("gw") and worker[2:].isdigit() else None


def workers_on_this_machine(config: pytest.Config | None = None) -> int:
    workerinput = getattr(config, "workerinput", None) or {}
    if HOST_WORKERS in workerinput:
        return int(workerinput[HOST_WORKERS])
    return int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
