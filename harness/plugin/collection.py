"""Collection: one test item per case, with an id made for ``-k``, markers per benchmark and split,
and the case's identity attached to every report of the item (``wire.CaseIdentity``), so the recorder never
parses node ids."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

import pytest

from harness.plugin import wire
from harness.plugin.options import STATE, dataset_of, is_worker
from harness.records import CASES_FILE
from harness.run_files import RunFileError, read_cases
from pitfalls_benchmark.datasets import Case
from pitfalls_benchmark.splits import BENCHMARKS, SPLITS, splits_of

# The benchmark files' parameters: which fixture a test asks for to receive the cases of a benchmark.
CASE_ARGUMENTS = {"conflict_case": "conflict", "round_case": "round"}
PRECHECK_ARGUMENT = "precheck_case"  # every case, for the conflict pre-check (suites/test_precheck.py)
MARKERS = {
    **{name: bench.marker_text for name, bench in BENCHMARKS.items()},
    **{name: split.description for name, split in SPLITS.items()},
    "slow": "the full loop only: the default model end to end, and tests that make several whole runs (-m \"not slow\" skips them)",
    "pitfalls_case": "set by the plugin: the identity of the case an item runs",
    "pitfalls_chain": "set by the plugin in sequential mode: the chain an item's case joins",
    "pitfalls_batch": "set by the plugin with --case-batch: the group of cases whose first edits are worked out together",
    "precheck": "the conflict pre-check on every case of the dataset (no model; collected only when -m names it)",
}


def pytest_configure(config: pytest.Config) -> None:
    """Register the markers (every pytest run of the environment sees them in ``--markers``)."""
    for name, text in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {text}")


def identity_of(case: Case) -> dict:
    """What a case's reports and records carry about it (the fields of ``CaseRecord`` that name the case)."""
    return wire.CaseIdentity.of(case).fields()


def item_identity(item: pytest.Item) -> wire.CaseIdentity | None:
    """The case a collected item runs (None for other tests)."""
    marker = item.get_closest_marker("pitfalls_case")
    return wire.CaseIdentity(**marker.args[0]) if marker is not None else None


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """One item per case: ``conflict_case`` or ``round_case`` parametrized from the dataset."""
    for argname, benchmark in CASE_ARGUMENTS.items():
        if argname not in metafunc.fixturenames:
            continue
        dataset = dataset_of(metafunc.config)
        cases = [case for split in splits_of(benchmark) for case in dataset.cases.get(split, [])]
        params = []
        for case in cases:
            marks = [getattr(pytest.mark, benchmark), getattr(pytest.mark, case.split),
                     pytest.mark.pitfalls_case(identity_of(case))]
            params.append(pytest.param(case, id=case.case_id, marks=marks))
        metafunc.parametrize(argname, params)
    if PRECHECK_ARGUMENT in metafunc.fixturenames:
        cases = dataset_of(metafunc.config).all_cases()
        metafunc.parametrize(PRECHECK_ARGUMENT, [pytest.param(case, id=case.case_id, marks=[
            pytest.mark.precheck, getattr(pytest.mark, case.benchmark), getattr(pytest.mark, case.split)]) for case in cases])


@pytest.hookimpl(tryfirst=True)  # before xdist reads the xdist_group marks set here
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if "precheck" not in (config.getoption("markexpr", "") or ""):  # the pre-check items run only when asked for
        skipped = [item for item in items if item.get_closest_marker("precheck")]
        if skipped:
            config.hook.pytest_deselected(items=skipped)
            items[:] = [item for item in items if not item.get_closest_marker("precheck")]
    _keep_shard(config, items)
    _skip_recorded(config, items)
    if STATE in config.stash and config.stash[STATE].options.sequential is not None:
        _into_chains(config, items)
    elif STATE in config.stash and config.stash[STATE].options.case_batch > 1:
        _into_batches(config, items, config.stash[STATE].options.case_batch)
    for item in items:
        identity = item_identity(item)
        if identity is not None:
            wire.send(item, identity)


def shard_of(case_id: str, shards: int) -> int:
    """The shard (1..N) a case belongs to: a hash of its id, so the same on every machine, worker and order."""
    return int.from_bytes(hashlib.sha256(case_id.encode()).digest()[:8], "big") % shards + 1


def _keep_shard(config: pytest.Config, items: list[pytest.Item]) -> None:
    parts = config.stash[STATE].options.shard_parts if STATE in config.stash else None
    if parts is None:
        return
    k, n = parts
    others = [item for item in items if (m := item.get_closest_marker("pitfalls_case")) and shard_of(m.args[0]["case_id"], n) != k]
    if others:
        config.hook.pytest_deselected(items=others)
        dropped = {id(item) for item in others}
        items[:] = [item for item in items if id(item) not in dropped]


def _skip_recorded(config: pytest.Config, items: list[pytest.Item]) -> None:
    """``--resume``: deselect the cases whose last record in the run folder is finished (errors run again).

    A line that is not a valid finished record leaves its case to run again, and says so; records of cases that
    are not in this selection stay in the file, are named, and are not counted (the summary covers the selection).
    """
    options = config.stash[STATE].options if STATE in config.stash else None
    if options is None or not options.resume:
        return
    cases = Path(options.results_dir).expanduser() / options.run_name / CASES_FILE
    try:
        lines = read_cases(cases)
    except RunFileError as exc:
        raise pytest.UsageError(str(exc)) from None
    done = {r.case_id for r in lines.latest() if r.ok}
    selected = {m.args[0]["case_id"] for item in items if (m := item.get_closest_marker("pitfalls_case"))}
    recorded = [item for item in items if (m := item.get_closest_marker("pitfalls_case")) and m.args[0]["case_id"] in done]
    if recorded:
        config.hook.pytest_deselected(items=recorded)
        items[:] = [item for item in items if item not in recorded]
    if is_worker(config):
        return
    write = config.get_terminal_writer().line  # lines left out: said by the recorder when the session starts
    foreign = sorted(done - selected)
    if foreign:
        write(f"resume: {cases} holds {len(foreign)} finished record(s) of cases outside this selection "
              f"({', '.join(foreign[:3])}{' ...' if len(foreign) > 3 else ''}); they stay in the file and are not counted")
    write(f"resume: {len(recorded)} cases already recorded in {cases.parent}, {len(items)} to run")


def chain_count(config: pytest.Config) -> int:
    """One chain per worker (``-n N``), one without xdist."""
    workerinput = getattr(config, "workerinput", None)
    return int(workerinput["workercount"]) if workerinput else 1


def _select_now(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Apply ``-k`` and ``-m`` now, through pytest's own ``mark`` plugin (it applies them again after this hook, a
    no-op): chains and batches must be dealt before xdist reads their groups, from the cases that will run."""
    config.pluginmanager.get_plugin("mark").pytest_collection_modifyitems(items=items, config=config)


def _into_chains(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Sequential mode: the cases in an order shuffled with the run's seed, dealt round-robin into one chain per worker.

    The order and the chains depend only on the selected cases, the seed and the number of workers, never on timing:
    xdist's ``loadgroup`` distribution sends each chain to one worker, in this order.
    """
    _select_now(config, items)  # so the chains are dealt from the cases that will run
    cases = [item for item in items if item.get_closest_marker("pitfalls_case")]
    others = [item for item in items if not item.get_closest_marker("pitfalls_case")]
    cases.sort(key=lambda item: item.get_closest_marker("pitfalls_case").args[0]["case_id"])
    random.Random(config.stash[STATE].options.seed).shuffle(cases)
    count = chain_count(config)
    for position, item in enumerate(cases):
        chain = f"chain-{position % count + 1}-of-{count}"
        item.add_marker(pytest.mark.pitfalls_chain(chain))
        item.add_marker(pytest.mark.xdist_group(chain))
        _group(config, chain, item)
    items[:] = cases + others


def _into_batches(config: pytest.Config, items: list[pytest.Item], size: int) -> None:
    """``--case-batch K``: consecutive selected cases in groups of K, each group sent to one worker (loadgroup)."""
    _select_now(config, items)  # as for chains: batches are made of the cases that will run
    cases = [item for item in items if item.get_closest_marker("pitfalls_case")]
    for position, item in enumerate(cases):
        batch = f"batch-{position // size + 1}"
        item.add_marker(pytest.mark.pitfalls_batch(batch))
        item.add_marker(pytest.mark.xdist_group(batch))
        _group(config, batch, item)


def _group(config: pytest.Config, group: str, item: pytest.Item) -> None:
    """Keep the case of ``item`` in its chain's or batch's list, which the fixtures start the group with."""
    params = getattr(getattr(item, "callspec", None), "params", {})
    config.stash[STATE].groups.setdefault(group, []).extend(params[arg] for arg in CASE_ARGUMENTS if arg in params)


def group_cases(config: pytest.Config, group: str) -> list[Case]:
    """The cases of a chain or batch, in the order they were dealt (the same in every worker)."""
    return list(config.stash[STATE].groups.get(group, []))


def batch_of(item: pytest.Item) -> str | None:
    marker = item.get_closest_marker("pitfalls_batch")
    return marker.args[0] if marker else None


def chain_of(item: pytest.Item) -> str | None:
    marker = item.get_closest_marker("pitfalls_chain")
    return marker.args[0] if marker else None

