"""The pytest plugin: options, case collection, per-worker fixtures, live results.

* Options (``--editor``, ``--model``, ``--dataset-dir`` ...) are read once
  into a :class:`RunOptions`.
* ``pytest_generate_tests`` turns every case of the dataset into one test
  item, with an id made for ``-k`` and markers per benchmark and split.
* Session fixtures load the model and the editor once per process (worker).
* Each item attaches its case record to its report; the controlling process
  (the only one under ``-n N``) appends it to ``cases.jsonl`` as it arrives,
  and writes ``summary.json`` and the table at the end.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from harness.datasets import CONFLICT_SPLITS, ROUND_SPLITS, ConflictCase, Dataset, DatasetError, RoundCase, load_dataset

CASE_PROPERTY = "pitfalls_case"
MARKERS = {
    "conflict": "ConflictEdit cases (coverage, reverse, composite)",
    "round": "RoundEdit cases (easy, hard)",
    "coverage": "ConflictEdit coverage split",
    "reverse": "ConflictEdit reverse split",
    "composite": "ConflictEdit composite split",
    "easy": "RoundEdit easy split",
    "hard": "RoundEdit hard split",
    "slow": "end-to-end runs on a real pretrained model (minutes on CPU)",
}


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

    @classmethod
    def from_config(cls, config: pytest.Config) -> RunOptions:
        get = config.getoption
        return cls(
            editor=get("--editor"), model=get("--model"), dataset_dir=get("--dataset-dir"), limit=get("--limit"),
            results_dir=get("--results-dir"), run_name=get("--run-name"), device=get("--device"), dtype=get("--dtype"),
            seed=get("--seed"), record_only=get("--record-only"), mle=get("--mle"), hparams=get("--hparams"),
            stats_corpus=get("--stats-corpus"), stats_tokens=get("--stats-tokens"), cache_dir=get("--cache-dir"),
        )


def pytest_addoption(parser: pytest.Parser) -> None:
    from harness.models import DEFAULT_MODEL

    group = parser.getgroup("pitfalls", "knowledge-editing pitfalls")
    group.addoption("--editor", default="rome", help="editing method (default: rome)")
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
    group.addoption("--stats-corpus", default="gensim-wiki",
                    help="text behind the second-moment statistics: gensim-wiki or a .txt/.jsonl file")
    group.addoption("--stats-tokens", type=int, default=100_000, help="corpus tokens for the statistics (default: 100000)")
    group.addoption("--cache-dir", default=None, help="cache folder (default: $PITFALLS_CACHE_DIR or ~/.cache/pitfalls-harness)")


def is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def worker_index(config: pytest.Config) -> int | None:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    return int(worker[2:]) if worker.startswith("gw") and worker[2:].isdigit() else None


def share_cpu_threads() -> None:
    """Under ``-n N`` split the CPU cores between the workers: N processes each using every core slow each other down."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
    if workers > 1:
        import torch

        torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))


def pytest_configure(config: pytest.Config) -> None:
    for name, text in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {text}")
    options = RunOptions.from_config(config)
    from editors import UnknownEditorError, editor_class

    try:
        editor_class(options.editor)
    except UnknownEditorError as exc:
        raise pytest.UsageError(str(exc)) from None
    if options.limit is not None and options.limit < 0:
        raise pytest.UsageError(f"--limit {options.limit}: must be 0 or more")
    if options.device not in ("auto", "cpu", "cuda") and not options.device.startswith("cuda:"):
        raise pytest.UsageError(f"--device {options.device!r}: expected auto, cpu, cuda or cuda:N")
    config.stash[STATE] = PluginState(options)
    share_cpu_threads()
    if not is_worker(config):
        if options.dataset_dir:
            _dataset(config)  # a broken dataset is one usage error line, before any collection
        config.pluginmanager.register(ResultsRecorder(config), "pitfalls-results")


@dataclass
class PluginState:
    """What the plugin holds for one pytest process."""

    options: RunOptions
    dataset: Dataset | None = None
    dataset_root: str | None = None  # --dataset-dir, or the generated default dataset's folder


STATE = pytest.StashKey[PluginState]()


def _dataset(config: pytest.Config) -> Dataset:
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
    """Without --dataset-dir: the geography dataset generated from pyworldatlas (cached; see harness/generate.py)."""
    from harness.generate import default_dataset_dir

    return default_dataset_dir(Path(options.cache_dir) if options.cache_dir else None)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """One item per case: ``conflict_case`` or ``round_case`` parametrized from the dataset."""
    for argname, splits, benchmark in (("conflict_case", CONFLICT_SPLITS, "conflict"), ("round_case", ROUND_SPLITS, "round")):
        if argname not in metafunc.fixturenames:
            continue
        dataset = _dataset(metafunc.config)
        cases = [case for split in splits for case in dataset.cases.get(split, [])]
        params = [pytest.param(case, id=case.case_id, marks=[getattr(pytest.mark, benchmark), getattr(pytest.mark, case.split)])
                  for case in cases]
        metafunc.parametrize(argname, params)


# --------------------------------------------------------------------------- fixtures (once per worker)


@pytest.fixture(scope="session")
def run_options(pytestconfig: pytest.Config) -> RunOptions:
    return pytestconfig.stash[STATE].options


@pytest.fixture(scope="session")
def loaded_model(pytestconfig: pytest.Config, run_options: RunOptions):
    from harness.cache import default_cache_dir
    from harness.models import ModelLoadError, load_model, resolve_device

    try:
        device = resolve_device(run_options.device, worker_index(pytestconfig))
        if device.type == "cuda":
            import torch

            torch.cuda.set_device(device)
        cache_dir = Path(run_options.cache_dir) if run_options.cache_dir else default_cache_dir()
        return load_model(run_options.model, device, run_options.dtype, cache_dir)
    except (ModelLoadError, ValueError) as exc:
        message = str(exc)
    pytest.fail(message, pytrace=False)


@pytest.fixture(scope="session")
def editor(loaded_model, run_options: RunOptions):
    from editors import make_editor
    from editors.base import EditorSettings
    from editors.corpus import CorpusError
    from editors.hparams import HyperParamsError
    from harness.cache import default_cache_dir

    settings = EditorSettings(
        cache_dir=Path(run_options.cache_dir) if run_options.cache_dir else default_cache_dir(),
        stats_corpus=run_options.stats_corpus, stats_tokens=run_options.stats_tokens, seed=run_options.seed,
        hparams_file=Path(run_options.hparams) if run_options.hparams else None,
    )
    try:
        return make_editor(run_options.editor, loaded_model, settings)
    except (HyperParamsError, CorpusError) as exc:
        message = str(exc)
    pytest.fail(message, pytrace=False)


@pytest.fixture(scope="session")
def run_config(pytestconfig: pytest.Config, loaded_model, editor, run_options: RunOptions) -> dict[str, Any]:
    """The whole configuration, echoed in every case record and in the summary."""
    from harness.results import git_commit, versions

    return {
        "model": run_options.model, "model_family": loaded_model.family, "model_fingerprint": loaded_model.fingerprint,
        "device": str(loaded_model.device), "dtype": run_options.dtype,
        "editor": f"{editor.name}+MLE" if run_options.mle else editor.name, **editor.describe(),
        "seed": run_options.seed, "mle": run_options.mle, "dataset_dir": pytestconfig.stash[STATE].dataset_root, "limit": run_options.limit,
        "versions": versions(), "git_commit": git_commit(Path(__file__).parent),
    }


@pytest.fixture(scope="session")
def case_runner(pytestconfig: pytest.Config, editor, loaded_model, run_options: RunOptions):
    from harness.runner import CaseRunner
    from harness.scoring import Scorer

    try:
        return CaseRunner(editor, Scorer(loaded_model.model, loaded_model.tokenizer), _dataset(pytestconfig),
                          seed=run_options.seed, mle=run_options.mle)
    except ValueError as exc:
        message = str(exc)
    pytest.fail(message, pytrace=False)


@pytest.fixture
def run_case(request: pytest.FixtureRequest, case_runner, run_config, run_options: RunOptions):
    """Run a case, attach its record to the report, and fail the item if its pitfall showed."""

    def run(case: ConflictCase | RoundCase):
        outcome = case_runner.run(case)
        record = {"status": "ok", **outcome.to_record(), "config": run_config}
        request.node.user_properties.append((CASE_PROPERTY, json.dumps(record, ensure_ascii=False)))
        if outcome.pitfall and not run_options.record_only:
            pytest.fail(outcome.pitfall_message, pytrace=False)
        return outcome

    return run


# --------------------------------------------------------------------------- results (controller only)


class ResultsRecorder:
    """Registered in the controlling process only: writes cases as they finish, then the summary."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.options = config.stash[STATE].options
        self.case_log: Any = None
        self.run_dir: Path | None = None
        self.summary: dict[str, Any] | None = None
        self.report: Path | None = None
        self.report_error: str | None = None
        self.selection_written = False

    def _log(self) -> Any:
        from harness.results import CaseLog, run_folder

        if self.case_log is None:
            o = self.options
            self.run_dir = run_folder(Path(o.results_dir), o.run_name, o.editor, o.model, o.mle)
            self.case_log = CaseLog(self.run_dir / "cases.jsonl")
        return self.case_log

    def _write_selection(self, nodeids: list[str]) -> None:
        """``selection.json``: how many cases of each split were selected, so a report can tell an interrupted run."""
        case_ids = [c for c in map(_case_id, nodeids) if c]
        if self.selection_written or not case_ids:
            return
        from reports.runs import SELECTION_FILE

        self._log()
        expected: dict[str, int] = {}
        for case_id in case_ids:
            expected[case_id.split("-")[0]] = expected.get(case_id.split("-")[0], 0) + 1
        (self.run_dir / SELECTION_FILE).write_text(json.dumps({"expected": expected}), encoding="utf-8")
        self.selection_written = True

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        self._write_selection([item.nodeid for item in session.items])

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_node_collection_finished(self, node: Any, ids: list[str]) -> None:
        # Under -n N the controller collects nothing itself; every worker reports the ids it will run (after -k/-m).
        self._write_selection(ids)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        record_json = next((value for key, value in report.user_properties if key == CASE_PROPERTY), None)
        if record_json is not None and report.when == "call":
            self._log().write(json.loads(record_json))
        elif record_json is None and report.failed and report.when in ("setup", "call") and _case_id(report.nodeid):
            case_id = _case_id(report.nodeid)
            self._log().write({"status": "error", "case_id": case_id, "split": case_id.split("-")[0], "error": _one_line(report)})

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if self.case_log is None:
            return
        from harness.results import latest_per_case, read_cases, write_summary

        self.case_log.close()
        records = latest_per_case(read_cases(self.case_log.path))  # a re-used run folder may hold earlier lines
        run_config = next((r["config"] for r in records if r.get("config")), {})
        self.summary = write_summary(self.run_dir, records, run_config)
        try:
            from reports.render import render_report

            self.report = render_report([self.run_dir], self.run_dir / "report.html")
        except Exception as exc:  # the results are safe on disk; a report problem must not hide them
            self.report_error = f"{type(exc).__name__}: {exc}"

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if not self.summary:
            return
        from reports.tables import paper_tables

        cfg = self.summary["config"]
        terminalreporter.section("knowledge-editing pitfalls")
        if self.summary["splits"]:
            terminalreporter.write_line(paper_tables(self.summary["splits"], f"{cfg.get('model', '?')} {cfg.get('editor', '?')}"))
        for split, info in self.summary["splits"].items():
            terminalreporter.write_line(f"{split}: {info['n']} cases, {info['pitfalls']} with the pitfall, {info['errors']} errors")
        terminalreporter.write_line(f"results: {self.run_dir / 'cases.jsonl'}  summary: {self.run_dir / 'summary.json'}")
        if self.report:
            terminalreporter.write_line(f"report: {self.report}")
        elif self.report_error:
            terminalreporter.write_line(f"report not written: {self.report_error}")


def _case_id(nodeid: str) -> str | None:
    """The case id of a benchmark item's node id, else None."""
    if ("test_conflict_edit[" in nodeid or "test_round_edit[" in nodeid) and nodeid.endswith("]"):
        return nodeid[nodeid.index("[") + 1 : -1]
    return None


def _one_line(report: pytest.TestReport) -> str:
    text = str(report.longrepr) if report.longrepr else "error"
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("E ")]
    return (errors[-1][2:].strip() if errors else lines[-1])[:500]
