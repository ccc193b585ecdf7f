"""Many workers and machines through xdist: each worker's index on its own machine, -n auto, remote-style gateways."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import execnet
import pytest

from harness.plugin.options import HOST_INDEX, HOST_WORKERS
from harness.plugin.workers import WorkerStarts, pytest_configure_node, pytest_xdist_auto_num_workers
from tests.helpers import records, run_pytest


def test_each_worker_learns_its_index_on_its_own_machine():
    specs = [execnet.XSpec(f"ssh=gpu-node-1//id=gw{i}") for i in range(2)] + [execnet.XSpec(f"popen//id=gw{i}") for i in (2, 3, 4)]
    manager = SimpleNamespace(specs=specs)
    seen = []
    for spec in specs:
        node = SimpleNamespace(nodemanager=manager, gateway=SimpleNamespace(spec=spec), workerinput={})
        pytest_configure_node(node)
        seen.append((node.workerinput[HOST_INDEX], node.workerinput[HOST_WORKERS]))
    assert seen == [(0, 2), (1, 2), (0, 3), (1, 3), (2, 3)]  # GPU i mod count on each machine, cores shared per machine


def test_a_worker_that_goes_down_while_xdist_sets_it_up_stops_the_run_with_its_error_in_one_line():
    # The race the bad-input row tx-worker-cannot-start meets now and then: the worker's Python has already exited
    # when xdist sends it its setup, and xdist's session start raises "cannot send to <Channel ... closed>".
    class ClosedChannel:
        def waitclose(self, timeout):
            raise execnet.RemoteError("Traceback (most recent call last):\n  ...\nModuleNotFoundError: No module named '_pytest'\n")

    class Controller:  # the part of xdist's WorkerController the hook reads
        channel = ClosedChannel()
        gateway = SimpleNamespace(id="gw1", spec=execnet.XSpec("popen//python=/nowhere/python"))

        def setup(self):
            raise OSError("cannot send to <Channel id=3 closed>")

    starts = WorkerStarts().pytest_sessionstart(session=None)
    next(starts)
    try:
        Controller().setup()
    except OSError as exc:
        with pytest.raises(pytest.exit.Exception) as stopped:
            starts.throw(exc)
    assert stopped.value.returncode == pytest.ExitCode.USAGE_ERROR
    assert stopped.value.msg.startswith("worker gw1 (local) could not start: ModuleNotFoundError: No module named '_pytest'. "
                                        "Install the harness")
    other = WorkerStarts().pytest_sessionstart(session=None)
    next(other)
    with pytest.raises(OSError, match="disk full"):  # an OSError from elsewhere is not ours to explain
        other.throw(OSError("disk full"))


def test_n_auto_is_one_worker_per_two_cores_on_a_cpu_machine(monkeypatch):
    import harness.plugin.workers as plugin

    monkeypatch.setattr(plugin.RunOptions, "from_config", classmethod(lambda cls, config: SimpleNamespace(device="cpu")))
    assert pytest_xdist_auto_num_workers(SimpleNamespace()) == max(1, (os.cpu_count() or 1) // 2)


@pytest.mark.slow
def test_gateway_workers_send_their_results_to_one_run_folder(published, cache_dir, tmp_path):
    """xdist's own gateways (--tx; popen here, ssh=host on a cluster) report to the one controlling process."""
    proc = run_pytest(["suites/", "--editor", "ft", "--model", "tiny-llama", "--dataset-dir", str(published / "GPT2-XL"),
                       "--limit", "1", "-m", "round", "--record-only", "--tx", "2*popen", "--dist", "load",
                       "--results-dir", str(tmp_path), "--run-name", "tx"], cache_dir)
    assert proc.returncode == 0, proc.stdout[-3000:]
    lines = records(tmp_path / "tx" / "cases.jsonl")
    assert len(lines) == 2 and {r["status"] for r in lines} == {"ok"}
    assert {r["worker"] for r in lines} <= {"gw0", "gw1"} and all(r["worker"] for r in lines)
    assert (tmp_path / "tx" / "summary.json").is_file() and (tmp_path / "tx" / "report.html").is_file()
    assert [p.name for p in Path(tmp_path).iterdir()] == ["tx"]


@pytest.mark.slow
def test_the_unedited_models_scores_are_computed_once_for_every_editor(published, cache_dir, tmp_path):
    """A second editor's run on the same model reads M0 from the cache: nothing is added, the numbers are the same."""
    fresh_cache = tmp_path / "cache"
    common = ["suites/", "--model", "tiny-llama", "--dataset-dir", str(published / "GPT2-XL"), "--limit", "2", "-m", "round or composite",
              "--record-only", "--stats-tokens", "5000", "--cache-dir", str(fresh_cache), "--results-dir", str(tmp_path)]
    proc = run_pytest([*common, "--editor", "ft", "--run-name", "ft"], cache_dir)
    assert proc.returncode == 0, proc.stdout[-3000:]
    (stored,) = (fresh_cache / "original-scores").glob("*.jsonl")
    lines = stored.read_text().splitlines()
    assert len(lines) == 6  # 4 round cases' M0, 2 composite cases' tied fact
    proc = run_pytest([*common, "--editor", "r-rome", "--run-name", "r-rome"], cache_dir)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert stored.read_text().splitlines() == lines
    m0 = lambda name: {r["case_id"]: (r["scores"].get("m0_true"), r["scores"].get("m0_tied")) for r in records(tmp_path / name / "cases.jsonl")}
    assert m0("ft") == m0("r-rome")


@pytest.mark.slow
def test_one_time_work_says_what_it_does_once(cache_dir, tmp_path):
    """A first run on an empty cache names each one-time step and its time; under -n 2 the controller says it once."""
    common = ["suites/", "--editor", "rome", "--model", "tiny-llama", "--limit", "1", "-k", "easy", "--record-only",
              "--stats-tokens", "5000", "--results-dir", str(tmp_path)]
    proc = run_pytest([*common, "--cache-dir", str(tmp_path / "cache-a"), "--run-name", "a"], cache_dir)
    assert proc.returncode == 0, proc.stdout[-3000:]
    out = proc.stdout
    for step in ("generating the geography dataset", "sampling context templates", "computing the second moment"):
        assert f"pitfalls: {step}" in out, out[-3000:]
    assert "pitfalls: generating the geography dataset" in out and ": done in " in out
    proc = run_pytest([*common, "--cache-dir", str(tmp_path / "cache-b"), "--run-name", "b", "-n", "2"], cache_dir)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert proc.stdout.count("pitfalls: ") <= 2  # what workers do is in their logs, not repeated N times here


def test_a_progress_line_leaves_redirected_streams_as_they_were(cache_dir, tmp_path):
    """Code under test that redirects sys.stdout (a tool's main called in-process) still gets its output when one-time
    work logs a progress line: showing it suspends and resumes pytest's capture, which set sys.stdout to its own file
    (pytest tests/test_contract.py without -n lost the checker's table so)."""
    (tmp_path / "test_redirect.py").write_text(
        "import contextlib, io\nfrom pitfalls_editkit.progress import step\n\n"
        "def test_redirected():\n    out = io.StringIO()\n    with contextlib.redirect_stdout(out):\n"
        "        with step('warming up'):\n            pass\n        print('the table')\n"
        "    assert out.getvalue() == 'the table\\n'\n")
    proc = run_pytest([str(tmp_path / "test_redirect.py")], cache_dir, cwd=tmp_path)
    assert proc.returncode == 0 and "pitfalls: warming up ..." in proc.stdout, proc.stdout[-2000:]


def test_a_progress_line_keeps_the_letters_under_their_file_name(cache_dir, tmp_path):
    """A one-time step logged inside a test cuts its file's line of progress letters: the letters go on under the file's
    name (they were left alone on a line, and pytest wrote the name again for the next test); under -v nothing is added."""
    (tmp_path / "test_steps.py").write_text(
        "from pitfalls_editkit.progress import step\n\n"
        "def test_first():\n    with step('warming up'):\n        pass\n\n"
        "def test_second():\n    pass\n\ndef test_third():\n    pass\n")
    proc = run_pytest([str(tmp_path / "test_steps.py")], cache_dir, cwd=tmp_path)
    lines = proc.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("test_steps.py"))
    assert proc.returncode == 0 and [line.split(" [")[0].rstrip() for line in lines[start:start + 4]] == [
        "test_steps.py", "pitfalls: warming up ...", "pitfalls: warming up: done in 0 s", "test_steps.py ..."], lines
    proc = run_pytest([str(tmp_path / "test_steps.py"), "-v"], cache_dir, cwd=tmp_path)
    assert proc.returncode == 0 and "test_steps.py::test_third PASSED" in proc.stdout, proc.stdout[-2000:]
    assert "pitfalls: warming up: done in 0 s" in proc.stdout and "\ntest_steps.py \n" not in proc.stdout


def test_the_installed_plugin_leaves_other_sessions_alone(cache_dir, tmp_path):
    """Another project's pytest -n 2 session (the plugin is active in every session of the environment) prepares nothing."""
    # Parametrized ids end in "[...]" like a case's: the controller must not take them for cases (no dataset, no folder).
    (tmp_path / "test_other.py").write_text("import pytest\n\ndef test_one():\n    assert 1\n\n"
                                            "@pytest.mark.parametrize('x', [1, 2])\ndef test_two(x):\n    assert x\n")
    proc = run_pytest([str(tmp_path / "test_other.py"), "-n", "2", "--cache-dir", str(tmp_path / "cache")], cache_dir, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:]
    assert "pitfalls: " not in proc.stdout and not (tmp_path / "cache").exists() and not (tmp_path / "results").exists()


def test_the_controller_dequantizes_once_when_workers_collected_cases(monkeypatch):
    import pitfalls_editkit.models
    from harness.plugin import TerminalProgress
    from harness.plugin.options import STATE, PluginState

    calls = []
    monkeypatch.setattr(pitfalls_editkit.models, "dequantized_folder", lambda name, preset, cache: calls.append(name))
    config = SimpleNamespace(stash={STATE: PluginState(SimpleNamespace(model="gemma3-270m", cache_path=Path("/nowhere")))})
    progress = TerminalProgress(config)
    progress.pytest_xdist_node_collection_finished(None, ["tests/test_other.py::test_one"])
    assert calls == []  # another project's items: nothing to prepare
    for _ in range(2):  # two workers report the benchmark's items: prepared once
        progress.pytest_xdist_node_collection_finished(None, ["suites/test_round_edit.py::test_round_edit[easy-0000-P366-fpart]"])
    assert calls == ["gemma3-270m"]
