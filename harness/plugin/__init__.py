"""The pytest plugin, installed through the ``pytest11`` entry point ``pitfalls`` (see pyproject.toml).

Split by job, as well-kept pytest plugins are:

* ``options``: ``--editor``, ``--model``, ``--dataset-dir`` ... read into ``RunOptions`` and checked;
* ``collection``: one item per case, ids made for ``-k``, markers per benchmark and split;
* ``fixtures``: the model, editor, guard and case runner, once per process (worker); ``run_case``;
* ``recorder``: in the controlling process, ``cases.jsonl`` as cases finish, ``run.json``, ``summary.json``;
* ``hookspecs``: ``pytest_pitfalls_run_finished``, which the report plugin (``reports.plugin``) implements.

Installed, the plugin is active in every pytest run of the environment but
does nothing until a test asks for ``conflict_case``/``round_case`` and
``run_case`` (the files in ``suites/``, or a user's own test file).
"""

from __future__ import annotations

import pytest

from harness.plugin import hookspecs
from harness.plugin.options import STATE, PluginState, RunOptions, add_options, check_options, dataset_of, is_worker

pytest_plugins = ("harness.plugin.collection", "harness.plugin.fixtures")


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    pluginmanager.add_hookspecs(hookspecs)


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


def pytest_configure(config: pytest.Config) -> None:
    options = RunOptions.from_config(config)
    check_options(options)
    config.stash[STATE] = PluginState(options)
    if options.sequential is not None:  # each chain runs on one worker, in order: xdist's loadgroup distribution
        if is_worker(config):
            config.option.loadgroup = True
        elif getattr(config.option, "numprocesses", None):
            config.option.dist = "loadgroup"
    if not is_worker(config):
        if options.dataset_dir:
            dataset_of(config)  # a broken dataset is one usage error line, before any collection
        if not config.getoption("collectonly"):  # listing the cases writes no run folder
            from harness.plugin.recorder import ResultsRecorder

            config.pluginmanager.register(ResultsRecorder(config), "pitfalls-results")
