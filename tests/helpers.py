"""What the harness's own tests share: where the repository is, the suite's command line, runs of the suites and the
tools, in this process (fast) or in a new one (when the process boundary is the point), and reading records back.

An in-process run calls the same ``main`` a user's command does, with the same arguments, its standard output and
error captured into one text; an exception that escapes it is written there as the traceback a user would see, so
``"Traceback" not in output`` means the same in both ways.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
# The tools a user runs, by the spelling the docs give them (python -m ...), and where their main() is.
TOOLS: dict[str, tuple[str, str]] = {
    "pytest": ("pytest", "pytest:main"),
    "generate": ("pitfalls_generator", "pitfalls_generator.cli:main"),
    "reports": ("reports", "reports.__main__:main"),
    "check": ("harness.check_editor", "harness.check_editor:main"),
    "precheck": ("pitfalls_generator.precheck", "pitfalls_generator.precheck:main"),
}


@dataclass
class Ran:
    """A finished command: its exit status and everything it printed (standard output, then standard error)."""

    returncode: int
    stdout: str
    stderr: str = ""

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def suite_args(published: Path | None, results: Path, *extra: str, model: str = "tiny-gpt2", run_name: str | None = None) -> list[str]:
    """``pytest suites/`` as the tests run it: a tiny model, the published GPT2-XL data, quick statistics."""
    args = [str(REPO / "suites"), "-p", "no:cacheprovider", "-p", "no:randomly", "--model", model, "--stats-tokens", "5000",
            "--results-dir", str(results)]
    if published is not None:
        args += ["--dataset-dir", str(published / "GPT2-XL")]
    if run_name:
        args += ["--run-name", run_name]
    return args + list(extra)


def env_for(cache_dir: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "PITFALLS_CACHE_DIR": str(cache_dir), "PYTHONUNBUFFERED": "1", **extra}


def run_subprocess(tool: str, args: Sequence[str], cache_dir: Path, timeout: int = 600, cwd: Path = REPO,
                   pythonpath: Sequence[Path] = (), **extra_env: str) -> Ran:
    """A tool in a new Python process, as a user starts it (``pythonpath`` first on the import path)."""
    env = env_for(cache_dir, **extra_env)
    env["PYTHONPATH"] = os.pathsep.join([*map(str, pythonpath), env.get("PYTHONPATH", "")]).strip(os.pathsep)
    proc = subprocess.run([sys.executable, "-m", TOOLS[tool][0], *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
    return Ran(proc.returncode, proc.stdout, proc.stderr)


@contextlib.contextmanager
def _environment(cwd: Path, env: dict[str, str]) -> Iterator[None]:
    before_env, before_cwd = dict(os.environ), os.getcwd()
    os.environ.update(env)
    os.chdir(cwd)
    try:
        yield
    finally:
        os.chdir(before_cwd)
        os.environ.clear()
        os.environ.update(before_env)


# A pytest run inside the test's process: its output captured at the sys level; no unraisable-exception plugin, which
# ends each session with five full garbage collections of the test process's whole heap (about 1 s a run here).
IN_PROCESS_PYTEST = ["--capture=sys", "-p", "no:unraisableexception"]


def run_inprocess(tool: str, args: Sequence[str], cache_dir: Path, cwd: Path = REPO, **extra_env: str) -> Ran:
    """A tool's ``main`` called in this process with the user's arguments (see the module docstring)."""
    module, _, name = TOOLS[tool][1].partition(":")
    main: Callable[[list[str]], int] = getattr(__import__(module, fromlist=[name]), name)
    out = io.StringIO()
    with _environment(cwd, {"PITFALLS_CACHE_DIR": str(cache_dir), **extra_env}), \
            contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        try:
            status = main((IN_PROCESS_PYTEST if tool == "pytest" else []) + list(args))
        except SystemExit as exc:
            status = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            if not isinstance(exc.code, (int, type(None))):
                print(exc.code, file=sys.stderr)
        except Exception:
            traceback.print_exc()
            status = 1
    return Ran(int(status), out.getvalue())


def run_suite(published: Path | None, results: Path, cache_dir: Path, *extra: str, model: str = "tiny-gpt2",
              run_name: str | None = None, subprocess_: bool = False, timeout: int = 600) -> Ran:
    """``pytest suites/`` on a tiny model, in this process unless ``subprocess_`` (under ``-n N`` workers are new
    processes either way)."""
    args = suite_args(published, results, *extra, model=model, run_name=run_name)
    if subprocess_:
        return run_subprocess("pytest", args, cache_dir, timeout=timeout)
    return run_inprocess("pytest", args, cache_dir)


def run_pytest(args: Sequence[str], cache_dir: Path, timeout: int = 600, cwd: Path = REPO, pythonpath: Sequence[Path] = (),
               subprocess_: bool = False) -> Ran:
    """``pytest ARGS`` from ``cwd`` as a user starts it: in this process, unless ``subprocess_`` or a ``pythonpath`` (a
    package installed into a folder) asks for a new one."""
    args = [*args, "-p", "no:randomly", "-p", "no:cacheprovider"]
    if subprocess_ or pythonpath:
        return run_subprocess("pytest", args, cache_dir, timeout=timeout, cwd=cwd, pythonpath=pythonpath)
    return run_inprocess("pytest", args, cache_dir, cwd=cwd)


def quick_settings(cache_dir: Path) -> Any:
    """Editor settings for tiny models: statistics from 5,000 tokens; the checker's example edits as the dataset's."""
    from harness.check_editor import CHECK_EXAMPLES
    from pitfalls_editkit.contract import EditorSettings

    return EditorSettings(cache_dir=cache_dir, stats_tokens=5000, dataset_edits=lambda: CHECK_EXAMPLES)


def settings_with_examples(cache_dir: Path, published: Path, **values: Any) -> Any:
    """Editor settings whose dataset edits are the published GPT2-XL data's (IKE's demonstrations, WISE's unrelated
    prompts); ``values``: hyper-parameters replaced, as --hparams-set does."""
    from pitfalls_benchmark.datasets import example_edits
    from pitfalls_editkit.contract import EditorSettings

    examples = example_edits(published / "GPT2-XL")
    return EditorSettings(cache_dir=cache_dir, dataset_edits=lambda: examples, hparams_values=tuple(values.items()))


def first_easy_edits(published: Path, n: int) -> list:
    """The edits of the first ``n`` RoundEdit easy cases of the published GPT2-XL data."""
    from pitfalls_benchmark.datasets import load_dataset

    return [case.edit for case in load_dataset(published / "GPT2-XL", splits=("easy",), limit=n).cases["easy"]]


def records(path: Path) -> list[dict]:
    """The complete JSON lines of a results file (a torn last line is not a record)."""
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            pass
    return out


def records_by_case(folder: Path) -> dict[str, dict]:
    return {r["case_id"]: r for r in records(folder / "cases.jsonl")}
