"""Faults during a run: a worker killed mid-case, SIGINT to the controller, a results folder that fills up, two runs
into one folder. Each test asserts what is on disk afterwards."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from filelock import FileLock

from tests.helpers import REPO, env_for, suite_args
from tests.helpers import records as lines

pytestmark = pytest.mark.slow  # whole runs of the suites, several per test: the full loop, not the quick one


def suite_command(published: Path, results: Path, run_name: str, *extra: str) -> list[str]:
    """The suites in a new process (these tests signal or kill it), on tiny-llama, recording without failing."""
    return [sys.executable, "-m", "pytest", *suite_args(published, results, "--record-only", *extra, model="tiny-llama",
                                                        run_name=run_name)]


def wait_for(condition, seconds: float = 300) -> None:
    deadline = time.time() + seconds
    while not condition():
        if time.time() > deadline:
            raise TimeoutError("condition not reached")
        time.sleep(0.2)


@pytest.fixture(scope="module", autouse=True)
def warm_tiny_model(tiny_loader):
    tiny_loader("tiny-llama")  # the tokenizer cache exists before any run below (some limit what may be written)


def test_a_killed_worker_leaves_an_error_record_for_its_case(published, cache_dir, tmp_path):
    pidfile = tmp_path / "worker.pid"
    cmd = suite_command(published, tmp_path, "crash", "--editor", "tests.broken_editors:Sleeper", "-m", "easy", "--limit", "4", "-n", "2")
    proc = subprocess.Popen(cmd, cwd=REPO, env=env_for(cache_dir, PITFALLS_TEST_PIDFILE=str(pidfile)),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wait_for(lambda: pidfile.exists() and pidfile.read_text().strip())
    os.kill(int(pidfile.read_text()), signal.SIGKILL)
    output, _ = proc.communicate(timeout=600)
    records = lines(tmp_path / "crash" / "cases.jsonl")
    assert len(records) == 4, output[-3000:]
    crashed = [r for r in records if r["status"] == "error"]
    assert len(crashed) == 1 and "crashed while running" in crashed[0]["error"], records
    assert crashed[0]["split"] == "easy" and crashed[0]["case_id"].startswith("easy-")
    summary = json.loads((tmp_path / "crash" / "summary.json").read_text())
    assert summary["splits"]["easy"]["errors"] == 1 and summary["splits"]["easy"]["n"] == 3
    assert "Traceback" not in output


def test_sigint_to_the_controller_keeps_every_finished_case_and_renders_the_report(published, cache_dir, tmp_path):
    cmd = suite_command(published, tmp_path, "cut", "--editor", "tests.broken_editors:Fine", "-m", "round", "--limit", "300")
    # Ctrl-C as a terminal delivers it: a run started from a background job of a script inherits SIGINT ignored
    # (POSIX), and Python then installs no KeyboardInterrupt handler; give the run the default disposition.
    proc = subprocess.Popen(cmd, cwd=REPO, env=env_for(cache_dir), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    log = tmp_path / "cut" / "cases.jsonl"
    wait_for(lambda: log.exists() and len(log.read_text().splitlines()) >= 3)
    proc.send_signal(signal.SIGINT)
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode == 2, output[-2000:]  # pytest's "interrupted"
    records = lines(log)
    assert 3 <= len(records) < 600 and all(r["status"] == "ok" for r in records)
    summary = json.loads((tmp_path / "cut" / "summary.json").read_text())
    assert sum(info["n"] for info in summary["splits"].values()) == len(records)
    assert "is incomplete" in (tmp_path / "cut" / "report.html").read_text(encoding="utf-8")


@pytest.mark.parametrize("workers", ["0", "2"])
def test_sigterm_to_the_controller_is_a_ctrl_c_with_one_line_and_the_summary_and_report(published, cache_dir, tmp_path, workers):
    """What a cluster scheduler sends at a time limit: the finished records stay, summary and report say incomplete."""
    cmd = suite_command(published, tmp_path, "cut", "--editor", "tests.broken_editors:Fine", "-m", "round", "--limit", "300",
                        "-n", workers)
    proc = subprocess.Popen(cmd, cwd=REPO, env=env_for(cache_dir), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    log = tmp_path / "cut" / "cases.jsonl"
    wait_for(lambda: log.exists() and len(log.read_text().splitlines()) >= 3)
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode == 2, output[-2000:]  # pytest's "interrupted", as after Ctrl-C
    assert "stopped by SIGTERM: the finished cases are in" in output and "--resume --run-name cut" in output, output[-2000:]
    records = lines(log)
    assert 3 <= len(records) < 600 and all(r["status"] == "ok" for r in records)
    summary = json.loads((tmp_path / "cut" / "summary.json").read_text())
    assert sum(info["n"] for info in summary["splits"].values()) == len(records)
    assert "is incomplete" in (tmp_path / "cut" / "report.html").read_text(encoding="utf-8")


def test_a_results_folder_that_fills_up_mid_run_is_one_line_and_keeps_what_was_written(published, cache_dir, tmp_path):
    limit = 12_000  # bytes any one file may grow to: run.json and a few case lines fit, then writes fail ("File too large")
    cmd = suite_command(published, tmp_path, "full", "--editor", "tests.broken_editors:Fine", "-m", "round", "--limit", "50")
    proc = subprocess.run(cmd, cwd=REPO, env=env_for(cache_dir), capture_output=True, text=True, timeout=600,
                          preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit)))
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "Traceback" not in output and "INTERNALERROR" not in output, output[-3000:]
    assert any("cannot write results (File too large)" in line for line in output.splitlines()), output[-3000:]
    records = lines(tmp_path / "full" / "cases.jsonl")
    assert len(records) >= 2 and all(r["status"] == "ok" and r["metrics"] for r in records)


def test_two_runs_into_one_folder(published, cache_dir, tmp_path):
    first = suite_command(published, tmp_path, "shared", "--editor", "tests.broken_editors:Slow", "-m", "round", "--limit", "5")
    proc = subprocess.Popen(first, cwd=REPO, env=env_for(cache_dir), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    log = tmp_path / "shared" / "cases.jsonl"
    wait_for(lambda: log.exists() and log.read_text().strip())
    # At once: the second writer is refused with one line, the first goes on.
    second = subprocess.run(first, cwd=REPO, env=env_for(cache_dir), capture_output=True, text=True, timeout=300)
    assert second.returncode != 0 and "another pytest run is writing to this run folder" in second.stdout + second.stderr
    output, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, output[-2000:]
    done = lines(log)
    assert len(done) == 10
    # One after the other with other options: refused, nothing appended.
    other = suite_command(published, tmp_path, "shared", "--editor", "rome", "-m", "round", "--limit", "5")
    refused = subprocess.run(other, cwd=REPO, env=env_for(cache_dir), capture_output=True, text=True, timeout=300)
    assert refused.returncode != 0 and "holds a run with editor='tests.broken_editors:Slow'" in refused.stdout + refused.stderr
    assert len(lines(log)) == 10
    # The same options again: the run continues in the folder; the summary counts each case once.
    again = subprocess.run(first, cwd=REPO, env=env_for(cache_dir), capture_output=True, text=True, timeout=600)
    assert again.returncode == 0
    summary = json.loads((tmp_path / "shared" / "summary.json").read_text())
    assert sum(info["n"] for info in summary["splits"].values()) == 10 and len(lines(log)) == 20


def test_a_lock_held_by_another_process_is_reported(published, cache_dir, tmp_path):
    (tmp_path / "held").mkdir()
    with FileLock(str(tmp_path / "held" / ".writer.lock")):
        proc = subprocess.run(suite_command(published, tmp_path, "held", "-m", "easy", "--limit", "1"), cwd=REPO,
                              env=env_for(cache_dir), capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "Traceback" not in proc.stdout + proc.stderr
    assert f"{tmp_path / 'held'}: another pytest run is writing to this run folder" in proc.stdout + proc.stderr
