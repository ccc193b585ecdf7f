"""Fixtures: the model, the editor, the guard and the workbench, built once per process (worker), and ``run_case``,
which runs one case with the executor of the run's mode and attaches its record to the item's report."""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import pytest

from harness.plugin.options import STATE, RunOptions, dataset_of, worker_id, worker_index, workers_on_this_machine

PRIOR_RUN_INPUT = "pitfalls_prior_run"  # workerinput: the JSON of {"run_dir", "config"} of the run folder continued


def share_cpu_threads(config: pytest.Config) -> None:
    """Under ``-n N`` split the CPU cores between the workers of this machine: processes each using every core slow
    each other down."""
    workers = workers_on_this_machine(config)
    if workers > 1:
        import torch

        torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))


@pytest.fixture(scope="session")
def run_options(pytestconfig: pytest.Config) -> RunOptions:
    return pytestconfig.stash[STATE].options


@pytest.fixture(scope="session")
def precheck_rules(pytestconfig: pytest.Config):
    """The rules behind the dataset's cases, read off its files (suites/test_precheck.py)."""
    from pitfalls_generator.from_published import read_published

    dataset_of(pytestconfig)
    return read_published(pytestconfig.stash[STATE].dataset_root)[2]


RUN_STOPPED = pytest.StashKey[str]()  # the run-wide error that stopped this process's session


def fail_the_run(request: pytest.FixtureRequest, message: str) -> NoReturn:
    """A run-wide error (the model, the editor or a measure cannot be built): the item that asked gets the one line,
    and the session stops there, rather than every later item repeating it."""
    request.config.stash[RUN_STOPPED] = message
    request.session.shouldfail = message
    pytest.fail(message, pytrace=False)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """The report of the item a run-wide error stopped says so to the controller (``wire.RunStopped``)."""
    report = yield
    message = item.config.stash.get(RUN_STOPPED, None)
    if message is not None and call.when == "setup" and report.failed:
        from harness.plugin import wire

        report.user_properties.append(wire.encode(wire.RunStopped(message)))
    return report


@pytest.fixture(scope="session")
def loaded_model(request: pytest.FixtureRequest, pytestconfig: pytest.Config, run_options: RunOptions):
    from pitfalls_editkit.models import ModelLoadError, load_model, resolve_device

    share_cpu_threads(pytestconfig)
    try:
        device = resolve_device(run_options.device, worker_index(pytestconfig))
        if device.type == "cuda":
            import torch

            torch.cuda.set_device(device)
        return load_model(run_options.model, device, run_options.dtype, run_options.cache_path)
    except (ModelLoadError, ValueError) as exc:
        message = str(exc)
    fail_the_run(request, message)


@pytest.fixture(scope="session")
def editor(request: pytest.FixtureRequest, pytestconfig: pytest.Config, loaded_model, model_guard, run_options: RunOptions):
    """The editor, built after the guard took the model's baseline: building it must leave the model as it was."""
    from editors.corpus import CorpusError
    from editors.registry import UnknownEditorError, make_editor
    from pitfalls_benchmark.datasets import example_edits
    from pitfalls_editkit.contract import EditorSettings
    from pitfalls_editkit.hparams import HyperParamsError, blame_hparams_set, parse_hparams_set

    dataset_root = pytestconfig.stash[STATE].dataset_root
    settings = EditorSettings(
        cache_dir=run_options.cache_path, stats_corpus=run_options.stats_corpus, stats_tokens=run_options.stats_tokens,
        seed=run_options.seed, hparams_file=Path(run_options.hparams) if run_options.hparams else None,
        stats_dir=Path(run_options.stats_dir).expanduser() if run_options.stats_dir else None,
        hparams_values=tuple(parse_hparams_set(list(run_options.hparams_set)).items()),
        dataset_edits=functools.cache(lambda: example_edits(dataset_root)),  # read once, when an editor asks
    )
    try:
        built = make_editor(run_options.editor, loaded_model, settings)
        problem = model_guard.check_untouched(f"editor {built.name!r} changed the model while being built")
        if problem is None:
            return built
        message = problem
    except HyperParamsError as exc:
        message = blame_hparams_set(str(exc), dict(settings.hparams_values))
    except (CorpusError, UnknownEditorError) as exc:
        message = str(exc)
    except Exception as exc:  # a plugin editor's constructor: one line naming it, not a traceback per case
        message = f"editor {run_options.editor!r} could not be built: {type(exc).__name__}: {' '.join(str(exc).split())[:400]}"
    fail_the_run(request, message)


@pytest.fixture(scope="session")
def run_config(pytestconfig: pytest.Config, loaded_model, editor, workbench, run_options: RunOptions) -> dict[str, Any]:
    """The whole configuration of the run, written once to ``run.json`` (the same in every worker)."""
    from harness.paper_setting import paper_setting_differences
    from harness.records import git_commit, versions

    dataset_root = pytestconfig.stash[STATE].dataset_root
    differs = paper_setting_differences(loaded_model.hparams_key, run_options.dataset_dir and dataset_root, editor, run_options.mle)
    if run_options.sequential is not None:
        differs.append("sequential (lifelong) mode: the paper edits each case on the original model")
    return {
        "model": run_options.model, "model_family": loaded_model.family, "model_fingerprint": loaded_model.fingerprint,
        "dtype": run_options.dtype, "editor": f"{editor.name}+MLE" if run_options.mle else editor.name, "editor_class": f"{type(editor).__module__}:{type(editor).__qualname__}",
        **editor.describe(),
        "seed": run_options.seed, "mle": run_options.mle, "dataset_dir": dataset_root, "limit": run_options.limit,
        "paper_setting": not differs, "paper_setting_differs": differs,
        "sequential": run_options.sequential, "retention_every": run_options.retention_every,
        "retention_sample": run_options.retention_sample,
        "general_ability": None if workbench.general is None else {
            "measures": run_options.general_ability, "every_edits_on_a_chain": run_options.general_every,
            "unedited": workbench.general.unedited},
        "generation": None if run_options.generation is None else {
            "max_new_tokens": run_options.generation, "decoding": "greedy", "stop": "end-of-text token, line break, or every verdict settled (pitfalls_editkit.generation.settled)",
            "counts_when": "the normalised answer starts with the label at a word boundary (pitfalls_editkit.generation.says)"},
        "versions": versions(), "git_commit": git_commit(),
    }


@pytest.fixture(scope="session")
def model_guard(loaded_model, run_options: RunOptions):
    """Owns every case's undo and checks the editor contract (harness/guard.py)."""
    from harness.guard import ModelGuard
    from pitfalls_editkit.models import reload_weights

    return ModelGuard(loaded_model.model, reload=lambda: reload_weights(loaded_model, run_options.cache_path))


@pytest.fixture(scope="session")
def workbench(request: pytest.FixtureRequest, pytestconfig: pytest.Config, editor, loaded_model, model_guard,
              run_options: RunOptions):
    """What the executors (harness/executors/) are given: editor, scorer, guard, and the unedited model's scores on disk."""
    from harness.executors.workbench import Workbench
    from harness.original_scores import OriginalScores
    from pitfalls_editkit.scoring import Scorer

    original = OriginalScores(run_options.cache_path / "original-scores" / f"{loaded_model.fingerprint}-{run_options.dtype}.jsonl")
    try:
        return Workbench(editor, Scorer(loaded_model.model, loaded_model.tokenizer), model_guard, seed=run_options.seed,
                         mle=run_options.mle, paraphrases_of=lambda case: dataset_of(pytestconfig).prompts_for(case),
                         original_scores=original, generation=run_options.generation,
                         general=general_ability(pytestconfig, loaded_model, model_guard, run_options),
                         general_every=run_options.general_every)
    except ValueError as exc:
        fail_the_run(request, str(exc))


def general_ability(pytestconfig: pytest.Config, loaded_model, guard, run_options: RunOptions):
    """--general-ability's measures, with the unedited model's values (measured once per model and cached, before any
    case). A measure that cannot be built is one line (AbilityError is a ValueError), as every bad option."""
    if run_options.general_ability is None:
        return None
    from harness.general_ability import GeneralAbility
    from pitfalls_editkit.scoring import Scorer

    general = GeneralAbility.build(run_options.general_ability, loaded_model,
                                   Scorer(loaded_model.model, loaded_model.tokenizer, context=guard.context),
                                   run_options.cache_path, run_options.dtype, avoid=dataset_of(pytestconfig).entity_labels())
    problem = guard.check_untouched("measuring the general ability changed the model")
    if problem is not None:
        raise ValueError(problem)
    return general


@dataclass
class WorkerProgress:
    """What one worker's items share: the chain its cases join (``--sequential``), the batches it started (``--case-batch``)."""

    chain: Any = None  # harness.executors.chained.ChainRun
    batches: dict[str, Any] = field(default_factory=dict)  # batch id -> harness.executors.lockstep.BatchStart
    said_hello: bool = False  # the run configuration and selection went to the controller (wire.WorkerHello)


@pytest.fixture(scope="session")
def worker_progress():
    progress = WorkerProgress()
    yield progress
    from harness.executors.chained import end_chain

    problem = end_chain(progress.chain)  # the last chain of this worker: back to the original model
    if problem:
        import warnings

        warnings.warn(f"sequential mode: {problem}", stacklevel=1)


def _chain_for(request: pytest.FixtureRequest, progress: WorkerProgress, bench, run_options: RunOptions):
    """Sequential mode: the chain this item's case joins (the model restored when a new chain starts)."""
    from harness.executors.chained import end_chain, start_chain
    from harness.plugin.collection import chain_of, group_cases

    chain_id = chain_of(request.node) or "chain-1-of-1"
    if progress.chain is None or progress.chain.chain.chain_id != chain_id:
        end_chain(progress.chain)
        progress.chain = start_chain(bench, chain_id, group_cases(request.config, chain_id),
                                     restart_every=run_options.sequential or None, retention_every=run_options.retention_every,
                                     retention_sample=run_options.retention_sample)
    return progress.chain


def _batch_for(request: pytest.FixtureRequest, progress: WorkerProgress, bench, batch: str):
    """``--case-batch``: the start of this item's batch, made on the first of its cases this worker meets."""
    from harness.executors.lockstep import BatchStart, start_batch
    from harness.plugin.collection import group_cases

    if batch not in progress.batches:
        progress.batches[batch] = BatchStart()  # once, also when it fails: the batch's cases then run one at a time
        progress.batches[batch] = start_batch(bench, group_cases(request.config, batch))
    return progress.batches[batch]


@pytest.fixture(scope="session")
def run_refusal(pytestconfig: pytest.Config, run_config: dict[str, Any]) -> str | None:
    """Why the run folder this run continues refuses it: it holds records of a run that used other values (a
    hyper-parameter file edited in place, another model's weights). Decided once per worker, before its first case."""
    from harness.records import what_it_used_differs

    config = pytestconfig
    workerinput = getattr(config, "workerinput", None)
    prior = json.loads(workerinput[PRIOR_RUN_INPUT]) if workerinput and PRIOR_RUN_INPUT in workerinput else config.stash[STATE].prior_run
    if not prior:
        return None
    differs = what_it_used_differs(prior["config"], run_config)
    if differs is None:
        return None
    return (f"{prior['run_dir']}: holds a run that used {differs}; its records would mix with this run's. Choose another "
            "--run-name, or put back what changed (a hyper-parameter file edited in place, other weights)")


@pytest.fixture
def run_case(request: pytest.FixtureRequest, workbench, worker_progress: WorkerProgress, run_config, run_refusal: str | None,
             run_options: RunOptions):
    """Run a case with the executor of the run's mode, attach its record to the report, and fail the item if its
    pitfall showed or the edit failed."""
    from harness.executors.chained import run_on_chain
    from harness.executors.single import run_one
    from harness.executors.workbench import CaseInputError
    from harness.guard import EditFailure
    from harness.plugin import wire
    from harness.plugin.collection import batch_of, identity_of, item_identity
    from harness.records import CaseRecord

    def attach(record: CaseRecord) -> None:
        wire.send(request.node, wire.CaseOutcome(record))

    def execute(case, paraphrases):
        if run_options.sequential is not None:
            return run_on_chain(workbench, _chain_for(request, worker_progress, workbench, run_options), case, paraphrases)
        batch = batch_of(request.node)
        if batch is not None and paraphrases is None:
            start = _batch_for(request, worker_progress, workbench, batch)
            outcome = start.take(case.case_id)
            if isinstance(outcome, Exception):
                raise outcome
            return outcome if outcome is not None else run_one(workbench, case, ahead=start.take_ahead())
        return run_one(workbench, case, paraphrases)

    if run_refusal:
        wire.send(request.node, wire.Refusal(run_refusal))
        pytest.fail(run_refusal, pytrace=False)
    if not worker_progress.said_hello:  # once per worker, with its first case's setup report
        selection = {item.nodeid: identity for item in request.session.items if (identity := item_identity(item))}
        wire.send(request.node, wire.WorkerHello(json.loads(json.dumps(run_config, default=str)), selection))
        worker_progress.said_hello = True

    def run(case, paraphrases: dict[str, tuple[str, ...]] | None = None):
        """``paraphrases``: relation id -> extra prompt templates, for a hand-written case."""
        error = None
        try:
            record = execute(case, paraphrases)
        except (EditFailure, CaseInputError) as exc:
            error = str(exc)
        if error is not None:  # outside the handler: the failure text holds the error once
            chain = worker_progress.chain.chain if worker_progress.chain is not None else None
            attach(CaseRecord(**identity_of(case), status="error", seed=workbench.seed_of(case), error=error,
                              device=str(workbench.editor.loaded.device), worker=worker_id(),
                              chain=chain.chain_id if chain else "", chain_position=chain.edits_applied if chain else None,
                              chain_segment=chain.segment if chain else None))
            pytest.fail(error, pytrace=False)
        record.worker = worker_id()
        attach(record)
        if record.pitfall and not run_options.record_only:
            pytest.fail(record.pitfall_message, pytrace=False)
        return record

    return run
