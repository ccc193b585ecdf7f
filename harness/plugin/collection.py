"""Collection: one test item per case, with an id made for ``-k``, markers per benchmark and split,
and the case's identity attached to every report of the item (so the recorder never parses node ids)."""

from __future__ import annotations

import json

import pytest

from benchmark.splits import BENCHMARKS, SPLITS, splits_of
from harness.plugin.options import dataset_of

CASE_ID_PROPERTY = "pitfalls_case_id"  # user property: {"case_id", "benchmark", "split", "index", "group"}
# The benchmark files' parameters: which fixture a test asks for to receive the cases of a benchmark.
CASE_ARGUMENTS = {"conflict_case": "conflict", "round_case": "round"}
MARKERS = {
    **{name: bench.marker_text for name, bench in BENCHMARKS.items()},
    **{name: split.description for name, split in SPLITS.items()},
    "slow": "end-to-end runs on a real pretrained model (minutes on CPU)",
    "pitfalls_case": "set by the plugin: the identity of the case an item runs",
}


def register_markers(config: pytest.Config) -> None:
    for name, text in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {text}")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """One item per case: ``conflict_case`` or ``round_case`` parametrized from the dataset."""
    for argname, benchmark in CASE_ARGUMENTS.items():
        if argname not in metafunc.fixturenames:
            continue
        dataset = dataset_of(metafunc.config)
        cases = [case for split in splits_of(benchmark) for case in dataset.cases.get(split, [])]
        params = []
        for case in cases:
            identity = {"case_id": case.case_id, "benchmark": benchmark, "split": case.split, "index": case.index,
                        "group": case.group}
            marks = [getattr(pytest.mark, benchmark), getattr(pytest.mark, case.split),
                     pytest.mark.pitfalls_case(identity)]
            params.append(pytest.param(case, id=case.case_id, marks=marks))
        metafunc.parametrize(argname, params)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        marker = item.get_closest_marker("pitfalls_case")
        if marker is not None:
            item.user_properties.append((CASE_ID_PROPERTY, json.dumps(marker.args[0], ensure_ascii=False)))


def case_identity(report: pytest.TestReport) -> dict | None:
    """The case a report belongs to, from the identity collection attached; None for other tests."""
    value = next((v for k, v in report.user_properties if k == CASE_ID_PROPERTY), None)
    return json.loads(value) if value is not None else None
