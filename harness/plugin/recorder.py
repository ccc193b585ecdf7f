"""The results recorder, registered in the controlling process only (the one process under ``-n N``).

It opens the run folder when the first case items are known (locked for the
session: a second pytest run writing into the same folder is refused, and so
is a run whose options differ from the records already there), writes each
case's record to ``cases.jsonl`` as its report arrives, the run configuration
to ``run.json``, ``selection.json`` when the items are known, and
``summary.json`` at the end; then it calls ``pytest_pitfalls_run_finished``
so the report can be rendered. A results folder that cannot be written is
one line on the terminal and a failed session; every line already written
stays on disk.
"""

from __future__ import annotations

import json
import signal
import stat
import threading
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest
from filelock import FileLock, Timeout

from harness.general_ability import general_ability_lines
from harness.plugin import wire
from harness.plugin.collection import item_identity
from harness.plugin.fixtures import PRIOR_RUN_INPUT
from harness.plugin.options import STATE
from harness.records import (
    CASES_FILE,
    RUN_FILE,
    SELECTION_FILE,
    SUMMARY_FILE,
    CaseLog,
    CaseRecord,
    run_folder,
    write_atomically,
    write_run_config,
    write_summary,
)
from harness.run_files import CaseLines, RunFileError, counted_records, read_cases, read_run_config, read_selection
from pitfalls_benchmark import metrics as M

LOCK_FILE = ".writer.lock"
# The options that make two runs comparable: a run folder holds runs of one such set only.
REQUESTED = ("model", "editor", "mle", "seed", "dataset_dir", "limit", "dtype", "hparams", "hparams_set", "stats_corpus", "stats_tokens", "stats_dir", "shard",
             "sequential", "retention_every", "retention_sample")


class ResultsFolderError(Exception):
    """The run folder cannot be used; the message is the one line the user sees."""


class ResultsRecorder:
    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.options = config.stash[STATE].options
        self.case_log: CaseLog | None = None
        self.run_dir: Path | None = None
        self.lock: FileLock | None = None
        self.summary: dict[str, Any] | None = None
        self.config_written = False
        self.selection_written = False
        self.error: str | None = None  # the results folder fault, once
        self.refused = False  # a worker refused the run folder (it holds a run that used other values)
        self.stopped = False  # a run-wide error stopped a session (wire.RunStopped): exit 1, also under xdist
        self.previous_sigterm: Any = None  # the SIGTERM handler before this run's (set once a run folder is written)
        self.terminated = False  # SIGTERM stopped the run
        self.identities: dict[str, wire.CaseIdentity] = {}  # node id -> case, from the workers' hellos (crashed items)
        self.session: pytest.Session | None = None  # set when the session starts: a fault stops it
        self.notices: list[str] = []  # lines of cases.jsonl left out, records outside the selection
        self.earlier = CaseLines(Path(CASES_FILE))  # what the run folder held when this session opened it
        self.latest: list[CaseRecord] = []  # the latest record per case when the session ended

    # The run folder -------------------------------------------------------------------

    def requested(self) -> dict[str, Any]:
        """The options that make a run what it is, as run.json stores them (JSON: tuples become lists)."""
        options = asdict(self.options)
        return json.loads(json.dumps({name: options[name] for name in REQUESTED}))

    def _open(self) -> CaseLog:
        if self.case_log is not None:
            return self.case_log
        o = self.options
        try:
            self.run_dir = run_folder(Path(o.results_dir).expanduser(), o.run_name, o.editor, o.model, o.mle)
            self.lock = FileLock(str(self.run_dir / LOCK_FILE))
            try:
                self.lock.acquire(timeout=0)
            except Timeout:
                self.lock = None
                raise ResultsFolderError(f"{self.run_dir}: another pytest run is writing to this run folder; wait for it to "
                                         "finish or choose another --run-name") from None
            for name in (CASES_FILE, RUN_FILE, SUMMARY_FILE, SELECTION_FILE):  # opening a pipe or socket would hang the run
                mode = (self.run_dir / name).stat().st_mode if (self.run_dir / name).exists() else 0
                if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
                    raise ResultsFolderError(f"{self.run_dir / name}: is a pipe or socket, not a file; remove it or choose "
                                             "another --run-name")
            try:
                before = read_run_config(self.run_dir)
                self.earlier = read_cases(self.run_dir / CASES_FILE)  # unreadable as a whole (not a file, not UTF-8): refused now
                read_selection(self.run_dir)
            except RunFileError as exc:
                raise ResultsFolderError(str(exc)) from None
            asked = before.get("requested")
            if (self.run_dir / CASES_FILE).is_file() and asked is not None and asked != self.requested():
                differs = next(k for k in REQUESTED if asked.get(k) != self.requested()[k])
                raise ResultsFolderError(
                    f"{self.run_dir}: holds a run with {differs}={asked.get(differs)!r}, this one has {differs}="
                    f"{self.requested()[differs]!r}; choose another --run-name (the same options continue that run)")
            if not before:
                write_run_config(self.run_dir, {"requested": self.requested()})
            self.case_log = CaseLog(self.run_dir / CASES_FILE)
            self._stop_on_sigterm()
        except OSError as exc:
            raise ResultsFolderError(f"--results-dir {o.results_dir}: cannot write the run folder ({exc.strerror or exc}); "
                                     "choose a writable folder with room") from None
        return self.case_log

    def _stop_on_sigterm(self) -> None:
        """Once this process writes a run folder, SIGTERM (a scheduler's time limit) stops the run as Ctrl-C does:
        the finished records stay, the summary and the report are written and marked incomplete, the status is
        pytest's "interrupted". Only the main thread may set a handler; the previous one comes back at the end."""
        if self.previous_sigterm is not None or threading.current_thread() is not threading.main_thread():
            return

        def interrupt(signum: int, frame: Any) -> None:
            self.terminated = True
            raise KeyboardInterrupt("SIGTERM")

        previous = signal.signal(signal.SIGTERM, interrupt)
        self.previous_sigterm = signal.SIG_DFL if previous is None else previous

    def _fail(self, message: str) -> None:
        """A results-folder fault: one line now, the session stops and fails; what is on disk stays."""
        if self.error is None:
            self.error = message
            reporter = self.config.pluginmanager.get_plugin("terminalreporter")
            if reporter is not None:
                reporter.write_line(f"ERROR: {message}", red=True, bold=True)
        if self.session is not None:
            self.session.shouldstop = message

    def _guarded(self, action: Any) -> Any:
        if self.error is not None:
            return None
        try:
            return action()
        except (ResultsFolderError, RunFileError) as exc:
            self._fail(str(exc))
        except OSError as exc:
            self._fail(f"{self.run_dir or self.options.results_dir}: cannot write results ({exc.strerror or exc}); "
                       "the cases finished so far are in cases.jsonl")
        return None

    # Hooks ----------------------------------------------------------------------------

    @pytest.hookimpl(tryfirst=True)  # before xdist starts any worker
    def pytest_sessionstart(self, session: pytest.Session) -> None:
        """A named run folder that exists is checked now, so a refused run runs no item: one usage line."""
        self.session = session
        o = self.options
        if not o.run_name or not (Path(o.results_dir).expanduser() / o.run_name).is_dir():
            return
        try:
            self._open()
        except ResultsFolderError as exc:
            raise pytest.UsageError(str(exc)) from None
        state = self.config.stash[STATE]
        state.prior_run = {"run_dir": str(self.run_dir), "config": read_run_config(self.run_dir)}
        if o.resume:  # said here, once, with or without workers (under -n the controller collects nothing)
            if self.earlier.notice():
                self.config.get_terminal_writer().line(f"resume: {self.earlier.notice()}")
            if self.config.pluginmanager.has_plugin("dsession"):  # without workers, collection says how many run
                finished = sum(1 for r in self.earlier.latest() if r.ok)
                self.config.get_terminal_writer().line(f"resume: {finished} cases already recorded in {self.run_dir}; "
                                                       "the workers skip those among their cases")

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: Any) -> None:
        """Each worker gets the run folder's configuration, to refuse before its first case a run that uses other values."""
        prior = self.config.stash[STATE].prior_run
        if prior is not None:
            node.workerinput[PRIOR_RUN_INPUT] = json.dumps(prior, ensure_ascii=False, default=str)

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        """A session stopped before it finished (a usage error at its start): the lock is released all the same."""
        if self.lock is not None and self.lock.is_locked:
            self.lock.release()
        if self.previous_sigterm is not None:
            signal.signal(signal.SIGTERM, self.previous_sigterm)

    def _write_selection(self, identities: list[wire.CaseIdentity]) -> None:
        """``selection.json``: how many cases of each split were selected, and which, so a report can tell an
        interrupted run and a merge can list missing cases."""
        if self.selection_written or not identities:
            return

        def write() -> None:
            self._open()
            before = read_selection(self.run_dir)  # a resumed run: the cases recorded before stay selected
            cases = list(before.cases) if before else []
            expected = dict(before.expected) if before else {}
            known = set(cases)
            for identity in identities:
                if identity.case_id not in known:
                    known.add(identity.case_id)
                    cases.append(identity.case_id)
                    expected[identity.split] = expected.get(identity.split, 0) + 1
            write_atomically(self.run_dir / SELECTION_FILE, json.dumps({"expected": expected, "cases": cases}))
            self.selection_written = True

        self._guarded(write)

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        # Without xdist the items are here; under -n N the controller collects nothing and each worker's hello says.
        self._write_selection([i for i in map(item_identity, session.items) if i])

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        messages = wire.received(report)
        for message in messages:
            if isinstance(message, wire.Refusal):  # the run folder holds a run that used other values: nothing is written
                self.refused = True
                self._fail(message.message)
                return
            if isinstance(message, wire.RunStopped):
                self.stopped = True
            if isinstance(message, wire.WorkerHello) and report.when == "setup":  # later reports of the item repeat it
                self.identities.update(message.selection)
                self._write_selection(list(message.selection.values()))
                self._guarded(lambda config=message.config: self._write_config(config))
        outcome = next((m for m in messages if isinstance(m, wire.CaseOutcome)), None)
        if report.when == "call" and outcome is not None:
            self._guarded(lambda: self._open().write(outcome.record))
            return
        if outcome is not None or not report.failed or report.when not in ("setup", "call", "???"):  # xdist: "???" = crash
            return
        identity = next((m for m in messages if isinstance(m, wire.CaseIdentity)), None) or self.identities.get(report.nodeid)
        if identity is not None:
            record = CaseRecord(**identity.fields(), status="error", error=_one_line(report), worker=_worker_of(report))
            self._guarded(lambda: self._open().write(record))
        elif report.when == "???" and self.case_log is not None:  # a worker died before its first case said hello
            self._fail(f"a worker crashed while setting up {report.nodeid} before any case reached it: that case has no "
                       "record; run again with --resume")

    def _write_config(self, config: dict[str, Any]) -> None:
        if self.config_written:
            return
        self._open()
        write_run_config(self.run_dir, {**config, "requested": self.requested()})
        self.config_written = True

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if self.case_log is not None:
            try:
                self.case_log.close()
            except OSError:  # the buffered line could not be written either; the fault was reported when it happened
                pass
            self._guarded(self._finish)
        if self.lock is not None:
            self.lock.release()
        if self.refused:
            session.exitstatus = pytest.ExitCode.USAGE_ERROR
        elif self.stopped and session.exitstatus == pytest.ExitCode.INTERRUPTED:  # xdist's word for a worker's stop
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
        elif self.error is not None:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED if session.exitstatus == 0 else session.exitstatus

    def _finish(self) -> None:
        if "model_fingerprint" not in read_run_config(self.run_dir):  # no case reached the editor: say what was asked
            o = self.options
            write_run_config(self.run_dir, {"model": o.model, "editor": o.run_label, "seed": o.seed, "mle": o.mle,
                                            "dataset_dir": self.config.stash[STATE].dataset_root, "limit": o.limit,
                                            "requested": self.requested()})
        lines = read_cases(self.case_log.path)  # a re-used run folder may hold earlier lines
        self.latest = lines.latest()
        records, outside = counted_records(self.latest, read_selection(self.run_dir), self.run_dir)
        self.notices = [n for n in (lines.notice(), outside) if n]
        self.summary = write_summary(self.run_dir, records, read_run_config(self.run_dir))
        self.config.hook.pytest_pitfalls_run_finished(config=self.config, run_dir=self.run_dir, summary=self.summary)

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.terminated and self.run_dir is not None:
            terminalreporter.section("knowledge-editing pitfalls")
            terminalreporter.write_line(f"stopped by SIGTERM: the finished cases are in {self.run_dir / CASES_FILE}, the summary "
                                        f"and report cover them and say the run is incomplete; go on with --resume "
                                        f"--run-name {self.run_dir.name}")
        if self.error is not None:
            terminalreporter.section("knowledge-editing pitfalls")
            terminalreporter.write_line(f"results not complete: {self.error}")
        if not self.summary:
            return
        terminalreporter.section("knowledge-editing pitfalls")
        for split, info in self.summary["splits"].items():
            terminalreporter.write_line(f"{split}: {info['n']} cases, {info['pitfalls']} with the pitfall, {info['errors']} errors")
            if "generation" in info:
                generated = info["generation"]
                terminalreporter.write_line(f"{split}, generated: {generated['pitfalls']} with the pitfall; the verdicts agree in "
                                            f"{M.format_aggregate(generated['agreement'])} % of {generated['n']} cases")
        for line in general_ability_lines([r for r in self.latest if r.ok], self.summary.get("config", {})):
            terminalreporter.write_line(line)
        for notice in self.notices:
            terminalreporter.write_line(notice)
        errors_only = {r.split for r in self.latest if not r.ok} - set(self.summary["splits"])
        for split in sorted(errors_only):
            terminalreporter.write_line(f"{split}: 0 cases scored, every case an error")
        terminalreporter.write_line(f"results: {self.run_dir / CASES_FILE}  summary: {self.run_dir / SUMMARY_FILE}")


def _worker_of(report: pytest.TestReport) -> str:
    node = getattr(report, "node", None)  # xdist sets the worker's node on reports it forwards
    return str(getattr(node, "gateway", None) and node.gateway.id or "")


def _one_line(report: pytest.TestReport) -> str:
    text = str(report.longrepr) if report.longrepr else "error"
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("E ")]
    return (errors[-1][2:].strip() if errors else lines[-1])[:500]
