"""The docs a newcomer reads: every relative link leads to a file (and heading) that exists, every command-line
option they name is one a command of the project (or pytest and its plugins) accepts, and the README stays short."""

from __future__ import annotations

import contextlib
import importlib
import inspect
import io
import re
import sys
from functools import cache
from pathlib import Path

import pytest

from tests.helpers import REPO, run_inprocess

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
OPTION = re.compile(r"(?<![\w-])--[a-z][a-z0-9]*(?:-[a-z0-9]+)*")
# Commands whose --help lists the options the docs may name (python -m MODULE --help).
TOOLS = ["reports", "reports.compare", "reports.merge", "pitfalls_generator.cli", "pitfalls_generator.precheck", "harness.check_editor", "editors.mend.train",
         "benchmarks.throughput", "benchmarks.findings", "benchmarks.workers", "benchmarks.edit_speed", "benchmarks.batch_edit",
         "benchmarks.device_check", "benchmarks.guard_overhead", "benchmarks.stats_spectrum", "benchmarks.ability_cost",
         "benchmarks.grace_radius"]
# Options of other programs the docs show in full commands: pip, Slurm, Chromium, ssh-keygen.
FOREIGN = {"--quiet", "--no-deps", "--no-build-isolation", "--array", "--gpus", "--headless", "--screenshot", "--window-size",
           "--no-sandbox", "--disable-gpu"}


def slug(heading: str) -> str:
    """A heading's anchor as GitHub writes it."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def headings(page: Path) -> set[str]:
    text = page.read_text(encoding="utf-8")
    text = re.sub(r"```.*?```", "", text, flags=re.DOTALL)
    return {slug(line.lstrip("#")) for line in text.splitlines() if line.startswith("#")}


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(REPO)) for p in PAGES])
def test_every_relative_link_leads_somewhere(page: Path):
    broken = []
    for target in LINK.findall(page.read_text(encoding="utf-8")):
        if re.match(r"[a-z]+:", target):
            continue  # https:, mailto:
        path, _, anchor = target.partition("#")
        where = (page.parent / path).resolve() if path else page
        if not where.exists():
            broken.append(f"{target}: no such file")
        elif anchor and where.suffix == ".md" and anchor not in headings(where):
            broken.append(f"{target}: no heading #{anchor}")
    assert not broken, broken


def _help_of(module: str) -> str:
    """What ``python -m MODULE --help`` prints, from its ``main`` called in this process."""
    loaded = importlib.import_module(module)
    main = getattr(loaded, "main", None) or importlib.import_module(f"{module}.__main__").main
    out = io.StringIO()
    argv = sys.argv
    sys.argv = [module, "--help"]
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out), contextlib.suppress(SystemExit):
            main(["--help"]) if inspect.signature(main).parameters else main()
    finally:
        sys.argv = argv
    return out.getvalue()


@cache
def known_options(cache_dir: Path) -> frozenset[str]:
    texts = [run_inprocess("pytest", ["--help"], cache_dir).stdout, *map(_help_of, TOOLS)]
    return frozenset(option for text in texts for option in OPTION.findall(text)) | FOREIGN


def test_every_option_the_docs_name_exists(cache_dir: Path):
    known = known_options(cache_dir)
    assert {"--editor", "--mle", "--numprocesses", "--tx", "--case-batch", "--out"} <= known
    unknown = {}
    for page in PAGES:
        for option in OPTION.findall(page.read_text(encoding="utf-8")):
            if option not in known:
                unknown.setdefault(option, str(page.relative_to(REPO)))
    assert not unknown, unknown


def test_the_readme_is_a_front_page():
    lines = (REPO / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 220, len(lines)
    for page in (REPO / "docs").glob("*.md"):  # every topic page is reachable from the README
        assert f"(docs/{page.name})" in "\n".join(lines), page.name
