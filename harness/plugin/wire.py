"""What crosses from a worker to the controlling process: five typed messages, one user-property key.

Under xdist a test report travels from the worker to the controller with its
``user_properties``; without xdist the same report reaches the recorder in
the same process. Every message of the plugin is one such property, under
:data:`KEY`, as JSON with its kind:

* :class:`CaseIdentity` (``identity``): which case an item runs, set at collection, so every report of the item
  (setup, call, teardown) names its case;
* :class:`CaseOutcome` (``record``): the case's :class:`harness.records.CaseRecord`, on the call report;
* :class:`WorkerHello` (``hello``): once per worker, on its first case's setup report: the run configuration
  and the worker's selection (each case item's node id and identity), so the controller writes ``run.json``
  and ``selection.json`` once and knows the case of an item whose worker crashed without parsing its id;
* :class:`Refusal` (``refused``): why the run folder refuses this run (nothing is written for it);
* :class:`RunStopped` (``stopped``): a run-wide error (the model or the editor cannot be built) stopped the worker's
  session at this item: the run fails with exit status 1, as without xdist (which calls the stop an interruption).

The recorder (``harness/plugin/recorder.py``) is the only reader.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Union

import pytest

from harness.records import CaseRecord
from pitfalls_benchmark.datasets import Case

KEY = "pitfalls"


@dataclass(frozen=True)
class CaseIdentity:
    """The fields of a :class:`CaseRecord` that name its case."""

    case_id: str
    benchmark: str
    split: str
    index: int
    group: str

    @classmethod
    def of(cls, case: Case) -> CaseIdentity:
        return cls(case.case_id, case.benchmark, case.split, case.index, case.group)

    def fields(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class CaseOutcome:
    record: CaseRecord


@dataclass(frozen=True)
class WorkerHello:
    config: dict[str, Any]
    selection: dict[str, CaseIdentity] = field(default_factory=dict)  # node id -> identity, in collection order


@dataclass(frozen=True)
class Refusal:
    message: str


@dataclass(frozen=True)
class RunStopped:
    message: str


Message = Union[CaseIdentity, CaseOutcome, WorkerHello, Refusal, RunStopped]


def encode(message: Message) -> tuple[str, str]:
    """The user property that carries ``message``."""
    if isinstance(message, CaseIdentity):
        body: dict[str, Any] = {"kind": "identity", **message.fields()}
    elif isinstance(message, CaseOutcome):
        body = {"kind": "record", "record": asdict(message.record)}
    elif isinstance(message, WorkerHello):
        body = {"kind": "hello", "config": message.config,
                "selection": [[nodeid, identity.fields()] for nodeid, identity in message.selection.items()]}
    elif isinstance(message, RunStopped):
        body = {"kind": "stopped", "message": message.message}
    else:
        body = {"kind": "refused", "message": message.message}
    return KEY, json.dumps(body, ensure_ascii=False, default=str)


def decode(value: str) -> Message:
    body = json.loads(value)
    kind = body.pop("kind")
    if kind == "identity":
        return CaseIdentity(**body)
    if kind == "record":
        return CaseOutcome(CaseRecord.from_dict(body["record"]))
    if kind == "hello":
        return WorkerHello(body["config"], {nodeid: CaseIdentity(**identity) for nodeid, identity in body["selection"]})
    if kind == "stopped":
        return RunStopped(body["message"])
    return Refusal(body["message"])


def send(item: pytest.Item, message: Message) -> None:
    """Attach ``message`` to ``item``: it travels with the item's next reports."""
    item.user_properties.append(encode(message))


def received(report: pytest.TestReport) -> list[Message]:
    """The plugin's messages on ``report``, in the order they were sent (an item's later reports repeat earlier ones)."""
    return [decode(value) for key, value in report.user_properties if key == KEY]


def first(report: pytest.TestReport, kind: type) -> Any:
    return next((m for m in received(report) if isinstance(m, kind)), None)
