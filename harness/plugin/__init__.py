"""The pytest plugin, installed through the ``pytest11`` entry point ``pitfalls`` (see pyproject.toml).

Split by job, as well-kept pytest plugins are:

* ``options``: ``--editor``, ``--model``, ``--dataset-dir`` ... read into ``RunOptions`` and checked;
* ``collection``: one item per case, ids made for ``-k``, markers per benchmark and split;
* ``fixtures``: the model, editor, guard and workbench, once per process (worker); ``run_case``;
* ``workers``: xdist's workers and machines: each worker's place on its machine, ``-n auto``, ``--tx`` checks;
* ``wire``: the typed messages a worker sends the controller with its reports;
* ``recorder``: in the controlling process, ``cases.jsonl`` as cases finish, ``run.json``, ``summary.json``;
* ``hookspecs``: ``pytest_pitfalls_run_finished``, which the report plugin (``reports.plugin``) implements.

Installed, the plugin is active in every pytest run of the environment but
does nothing until a test asks for ``conflict_case``/``round_case`` and
``run_case`` (the files in ``suites/``, or a user's own test file).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
from pathlib import Path

import pytest

from harness.plugin import hookspecs
from harness.plugin.options import STATE, PluginState, RunOptions, add_options, check_options, dataset_of, is_worker
from pitfalls_benchmark.splits import SPLITS

pytest_plugins = ("harness.plugin.collection", "harness.plugin.fixtures", "harness.plugin.workers")


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    pluginmanager.add_hookspecs(hookspecs)


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


def pytest_configure(config: pytest.Config) -> None:
    options = RunOptions.from_config(config)
    check_options(options)
    config.stash[STATE] = PluginState(options)
    if options.sequential is not None or options.case_batch > 1:  # a chain or batch runs on one worker: loadgroup
        if is_worker(config):
            config.option.loadgroup = True
        elif getattr(config.option, "numprocesses", None):
            config.option.dist = "loadgroup"
    if not is_worker(config):
        config.pluginmanager.register(TerminalProgress(config), "pitfalls-progress")
        if options.dataset_dir:
            dataset_of(config)  # a broken dataset is one usage error line, before any collection
        if not config.getoption("collectonly"):  # listing the cases writes no run folder
            from harness.plugin.recorder import ResultsRecorder

            config.pluginmanager.register(ResultsRecorder(config), "pitfalls-results")


# One-time work, shown once -------------------------------------------------------------------------------------------


class TerminalProgress(logging.Handler):
    """Writes ``pitfalls.progress`` records live on the terminal (capture suspended), in the controlling process.

    Under ``-n N`` the controller dequantizes a preset model itself once the workers have collected benchmark cases
    and before it sends them any, so that long step is shown once; what workers do later is in their logs.
    """

    def __init__(self, config: pytest.Config) -> None:
        super().__init__(logging.INFO)
        self.config = config
        self.prepared = False
        self.cut_file: Path | None = None  # the test file whose line of progress letters the last message cut

    def emit(self, record: logging.LogRecord) -> None:
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is None:
            return
        capture = self.config.pluginmanager.get_plugin("capturemanager")
        # Resuming the capture sets sys.stdout/stderr to pytest's own files, also where code under test had
        # redirected them (contextlib.redirect_stdout around a tool's main): leave the streams as they were found.
        streams = sys.stdout, sys.stderr
        with capture.global_and_fixture_disabled() if capture is not None else contextlib.nullcontext():
            if isinstance(reporter.currentfspath, Path):  # a file's line of progress letters (under -v: not a path)
                self.cut_file = reporter.currentfspath
            reporter.ensure_newline()
            reporter.write_line(f"pitfalls: {record.getMessage()}")
        sys.stdout, sys.stderr = streams

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """The letters of a line a message cut go on under their file's name, as pytest started it (pytest would
        write the next letter alone on a line and the file's name again for the next test)."""
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        if self.cut_file is not None and reporter is not None and reporter.currentfspath is None:
            reporter.write(f"{os.path.relpath(self.cut_file, reporter.startpath)} ")
            reporter.currentfspath = self.cut_file
        self.cut_file = None

    @pytest.hookimpl
    def pytest_sessionstart(self, session: pytest.Session) -> None:
        from pitfalls_editkit.progress import LOGGER

        LOGGER.setLevel(logging.INFO)
        LOGGER.addHandler(self)

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_node_collection_finished(self, node, ids: list[str]) -> None:
        """Under -n: once a worker has collected benchmark cases, prepare the model here before any case is sent."""
        if not self.prepared and any(CASE_ITEM.search(nodeid) for nodeid in ids):
            self.prepared = True
            prepare_once(self.config)

    @pytest.hookimpl
    def pytest_unconfigure(self, config: pytest.Config) -> None:
        from pitfalls_editkit.progress import LOGGER

        LOGGER.removeHandler(self)


CASE_ITEM = re.compile(r"\[(" + "|".join(map(re.escape, SPLITS)) + r")-\d{4}-")  # the id of an item that runs a benchmark case


def prepare_once(config: pytest.Config) -> None:
    """Before any case reaches a worker: a GGUF preset dequantized, once, with its message shown here.

    (The workers generate a missing default dataset while collecting, under a lock: seconds.)
    """
    options = config.stash[STATE].options
    try:
        from pitfalls_editkit.presets import GGUF_PRESETS

        if options.model in GGUF_PRESETS:
            from pitfalls_editkit.models import dequantized_folder

            dequantized_folder(options.model, GGUF_PRESETS[options.model], options.cache_path)
    except Exception:  # the workers meet the same problem and report it as one line; nothing is lost here
        return
