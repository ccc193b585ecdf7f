"""Fixtures: the model, the editor, the guard and the case runner, built once per process (worker),
and ``run_case``, which runs one case and attaches its record to the item's report."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from harness.plugin.options import STATE, RunOptions, dataset_of, worker_id, worker_index, workers_on_this_machine

RECORD_PROPERTY = "pitfalls_record"  # user property: the CaseRecord's JSON
CONFIG_PROPERTY = "pitfalls_config"  # user property: the run configuration's JSON


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
    from generator.published import read_published

    dataset_of(pytestconfig)
    return read_published(pytestconfig.stash[STATE].dataset_root)[2]


@pytest.fixture(scope="session")
def loaded_model(pytestconfig: pytest.Config, run_options: RunOptions):
    from editkit.models import ModelLoadError, load_model, resolve_device

    share_cpu_threads(pytestconfig)
    try:
        device = resolve_device(run_options.device, worker_index(pytestconfig))
        if device.type == "cuda":
            import torch

            torch.cuda.set_device(device)
        return load_model(run_options.model, device, run_options.dtype, run_options.cache_path)
    except (ModelLoadError, ValueError) as exc:
        message = str(exc)
    pytest.fail(message, pytrace=False)


@pytest.fixture(scope="session")
def editor(loaded_model, model_guard, run_options: RunOptions):
    """The editor, built after the guard took the model's baseline: building it must leave the model as it was."""
    from editkit.contract import EditorSettings
    from editkit.hparams import HyperParamsError, parse_hparams_set
    from editors.corpus import CorpusError
    from editors.registry import UnknownEditorError, make_editor

    settings = EditorSettings(
        cache_dir=run_options.cache_path, stats_corpus=run_options.stats_corpus, stats_tokens=run_options.stats_tokens,
        seed=run_options.seed, hparams_file=Path(run_options.hparams) if run_options.hparams else None,
        stats_dir=Path(run_options.stats_dir).expanduser() if run_options.stats_dir else None,
        hparams_values=tuple(parse_hparams_set(list(run_options.hparams_set)).items()),
    )
    try:
        built = make_editor(run_options.editor, loaded_model, settings)
        problem = model_guard.check_untouched(f"editor {built.name!r} changed the model while being built")
        if problem is None:
            return built
        message = problem
    except (HyperParamsError, CorpusError, UnknownEditorError) as exc:
        message = str(exc)
    except Exception as exc:  # a plugin editor's constructor: one line naming it, not a traceback per case
        message = f"editor {run_options.editor!r} could not be built: {type(exc).__name__}: {' '.join(str(exc).split())[:400]}"
    pytest.fail(message, pytrace=False)


@pytest.fixture(scope="session")
def run_config(pytestconfig: pytest.Config, loaded_model, editor, run_options: RunOptions) -> dict[str, Any]:
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
        "versions": versions(), "git_commit": git_commit(),
    }


@pytest.fixture(scope="session")
def model_guard(loaded_model, run_options: RunOptions):
    """Owns every case's undo and checks the editor contract (harness/guard.py)."""
    from editkit.models import reload_weights
    from harness.guard import ModelGuard

    return ModelGuard(loaded_model.model, reload=lambda: reload_weights(loaded_model, run_options.cache_path))


@pytest.fixture(scope="session")
def case_runner(pytestconfig: pytest.Config, editor, loaded_model, model_guard, run_options: RunOptions):
    from editkit.scoring import Scorer
    from harness.original_scores import OriginalScores
    from harness.runner import CaseRunner

    original = OriginalScores(run_options.cache_path / "original-scores" / f"{loaded_model.fingerprint}-{run_options.dtype}.jsonl")
    try:
        runner = CaseRunner(editor, Scorer(loaded_model.model, loaded_model.tokenizer), lambda: dataset_of(pytestconfig),
                            seed=run_options.seed, mle=run_options.mle, guard=model_guard,
                            retention_every=run_options.retention_every, retention_sample=run_options.retention_sample,
                            original_scores=original)
    except ValueError as exc:
        pytest.fail(str(exc), pytrace=False)
    yield runner
    if runner.chain is not None:  # the last chain of this worker: back to the original model
        problem = runner.chain.restore()
        if problem:
            import warnings

            warnings.warn(f"sequential mode: {problem}", stacklevel=1)


def _cases_of(session: pytest.Session, belongs: Callable[[pytest.Item], bool]) -> list:
    """The benchmark cases of the session's items that ``belongs`` picks (a chain, a batch), in collection order."""
    from harness.plugin.collection import CASE_ARGUMENTS

    cases = []
    for item in session.items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        if belongs(item):
            cases += [params[arg] for arg in CASE_ARGUMENTS if arg in params]
    return cases


def _join_chain(request: pytest.FixtureRequest, case_runner, run_options: RunOptions) -> None:
    """Sequential mode: put the runner on this item's chain (restoring the model when a new chain starts)."""
    from harness.chain import Chain
    from harness.plugin.collection import chain_of

    chain_id = chain_of(request.node) or "chain-1-of-1"
    if case_runner.chain is not None and case_runner.chain.chain_id == chain_id:
        return
    if case_runner.chain is not None:
        case_runner.chain.restore()
    case_runner.chain = Chain(case_runner.guard, case_runner.editor, chain_id, restart_every=run_options.sequential or None)
    case_runner.score_originals(_cases_of(request.session, lambda item: chain_of(item) == chain_id))  # the original-model reading, before the chain's first edit


def _prepare_batch(request: pytest.FixtureRequest, case_runner) -> None:
    """``--case-batch``: on the first case of a batch this worker meets, run the batch's cases together (an editor with
    ``compute_updates``) or work out their first edits ahead (``prepare``); each item then reports its own case."""
    from harness.plugin.collection import batch_of

    batch = batch_of(request.node)
    if batch is None or case_runner.prepared_batch == batch:
        return
    case_runner.prepared_batch = batch  # once, also when it fails: the batch's cases then edit one at a time
    case_runner.prepare(_cases_of(request.session, lambda item: batch_of(item) == batch))


@pytest.fixture
def run_case(request: pytest.FixtureRequest, case_runner, run_config, run_options: RunOptions):
    """Run a case, attach its record to the report, and fail the item if its pitfall showed or the edit failed."""
    from harness.guard import EditFailure
    from harness.plugin.collection import identity_of
    from harness.records import CaseRecord
    from harness.runner import CaseInputError, case_seed

    def attach(record: CaseRecord) -> None:
        request.node.user_properties.append((RECORD_PROPERTY, record.to_json()))
        request.node.user_properties.append((CONFIG_PROPERTY, json.dumps(run_config, ensure_ascii=False, default=str)))

    def run(case, paraphrases: dict[str, tuple[str, ...]] | None = None):
        """``paraphrases``: relation id -> extra prompt templates, for a hand-written case."""
        if run_options.sequential is not None:
            _join_chain(request, case_runner, run_options)
        try:
            _prepare_batch(request, case_runner)
            record = case_runner.run(case, paraphrases)
        except (EditFailure, CaseInputError) as exc:
            chain = case_runner.chain
            attach(CaseRecord(**identity_of(case), status="error", seed=case_seed(run_options.seed, case.case_id),
                              error=str(exc), device=str(case_runner.editor.loaded.device), worker=worker_id(),
                              chain=chain.chain_id if chain else "", chain_position=chain.edits_applied if chain else None,
                              chain_segment=chain.segment if chain else None))
            pytest.fail(str(exc), pytrace=False)
        record.worker = worker_id()
        attach(record)
        if record.pitfall and not run_options.record_only:
            pytest.fail(record.pitfall_message, pytrace=False)
        return record

    return run
