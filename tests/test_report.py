"""The HTML report: rendered from small results folders, loaded in headless Chromium, numbers and escaping checked."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from html import unescape
from pathlib import Path

import pytest

from harness.records import SELECTION_FILE, CaseRecord, summarize, write_summary
from reports.charts import Series, bar_chart
from reports.render import render_report
from reports.runs import RunFolderError, load_run
from tests.helpers import REPO

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
NASTY = '<script>alert("x")</script> {{ braces }} "quotes" & Zürich 東京'


def case_record(split: str, index: int, pitfall: bool, metrics: dict, config: dict, group: str = "P36") -> dict:
    scores = ({"true_objects": ["Paris", NASTY], "new_object": "Lyon", "m0_true": [0.5, 0.2], "m1_new": 0.7, "m1_old": 0.1,
               "m2_true": [0.6, 0.1], "m2_new": 0.05, "m0_new": 0.01}
              if split in ("easy", "hard") else {"m1_e1_new": 0.8, "m2_e1_new": 0.2, "m2_e2_new": 0.9})
    return {"status": "ok", "case_id": f"{split}-{index:04d}-{group}-{'zurich' if index else 'x'}", "benchmark": "round"
            if split in ("easy", "hard") else "conflict", "split": split, "index": index, "group": group, "seed": index,
            "scores": scores, "metrics": metrics, "pitfall": pitfall, "pitfall_message": "CS_imp = 0" if pitfall else "",
            "seconds_edit": 1.5, "seconds_eval": 0.5, "edits": [f"The capital of {NASTY} is [Paris -> Lyon]"],
            "notes": [], "config": config, "generated": [f"The capital of {NASTY} is => {NASTY}"]}  # --generation text is untrusted


def write_run(folder: Path, editor: str, records: list[dict], expected: dict[str, int], finished: bool) -> Path:
    folder.mkdir(parents=True)
    (folder / "cases.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    (folder / SELECTION_FILE).write_text(json.dumps({"expected": expected}), encoding="utf-8")
    if finished:
        write_summary(folder, [CaseRecord.from_dict(r) for r in records], records[0]["config"])  # lines in the older format: config in each
    return folder


@pytest.fixture()
def runs(tmp_path: Path) -> list[Path]:
    differs = {"rome": [], "memit": ["statistics from gensim-wiki (the paper's: 100,000 Wikipedia articles)"]}
    config = lambda editor: {"model": "openai-community/gpt2-xl", "editor": editor, "seed": 0, "hparams": {"layers": [17]},
                             "versions": {"torch": "2.13.0"}, "git_commit": "abc123",
                             "paper_setting": not differs[editor], "paper_setting_differs": differs[editor]}
    rome = [case_record("coverage", i, False, {"Succ": 1, "CS_exp": 1, "CM": 0.9 - 0.1 * i}, config("rome")) for i in range(3)]
    rome += [case_record("reverse", i, True, {"Succ": 1, "CS_exp": 1, "CS_imp": 0, "CM": 0.05}, config("rome"), "P36>P1376") for i in range(2)]
    rome += [case_record("easy", i, i == 0, {"Succ": 1.0, "D": 0.02 * (i + 1), "IR": 0.5, "FR": int(i == 0), "JS": 0.1}, config("rome"), "P47")
             for i in range(4)]
    memit = [case_record("coverage", i, i == 1, {"Succ": 1, "CS_exp": int(i != 1), "CM": 0.5}, config("memit")) for i in range(2)]
    return [write_run(tmp_path / "rome-run", "rome", rome, {"coverage": 3, "reverse": 2, "easy": 4}, finished=True),
            write_run(tmp_path / "memit-run", "memit", memit, {"coverage": 5, "composite": 2}, finished=False)]


def chromium(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", f"--user-data-dir={tmp_path / 'chromium-profile'}",
             "--enable-logging=stderr", "--v=0", "--window-size=1400,2600"]
    return subprocess.run([CHROMIUM, *flags, *args], capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it)")
def test_report_loads_in_chromium_without_errors_and_shows_the_numbers(runs, tmp_path):
    out = tmp_path / "report.html"
    proc = subprocess.run([sys.executable, "-m", "reports", *map(str, runs), "-o", str(out)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    shot = tmp_path / "report.png"
    page = chromium([f"--screenshot={shot}", out.as_uri()], tmp_path)
    assert shot.is_file() and shot.stat().st_size > 10_000
    dom = chromium(["--dump-dom", out.as_uri()], tmp_path)
    console = [ln for ln in (page.stderr + dom.stderr).splitlines() if ":CONSOLE" in ln]
    assert not console, console
    html = dom.stdout
    # The headline cells hold the fixture's numbers: coverage CM mean of 0.9, 0.8, 0.7 -> 80.00 %, reverse CS_imp 0.
    rome = summarize(load_run(runs[0]).records)
    assert f"{rome['coverage']['metrics']['CM']['value']:.2f} [" in html and "80.00 [" in html
    assert "paper 99.96" in html and "paper 0.00" in html  # GPT-2 XL ROME in the paper's setting: Single Succ, Reverse CS_imp
    # MEMIT's run is not in the paper's setting: no published value (its coverage Succ is 79.24), and the reason instead.
    assert "paper 79.24" not in html and "not the paper's setting: statistics from gensim-wiki" in html
    assert re.search(r"9 of 11 cases|11 of 11 cases", html), "the case table's script ran"
    assert "memit-run</b> is incomplete" in html and "coverage: 2 of 5 cases finished" in html and "composite: 0 of 2" in html
    # Dataset text is escaped: no injected element, the text shown as text.
    assert "<script>alert" not in html and unescape("&lt;script&gt;alert") in unescape(html)
    assert "Zürich 東京" in html and "{{ braces }}" in html


def test_escaping_in_charts_and_unknown_folders(tmp_path):
    svg = str(bar_chart("t", ["<b>&"], [Series('"s"', [50.0])]))
    assert "<b>&" not in svg and "&lt;b&gt;&amp;" in svg
    with pytest.raises(RunFolderError, match="no cases.jsonl"):
        load_run(tmp_path)


def test_interrupted_run_renders_with_a_torn_last_line(runs, tmp_path):
    cases = runs[1] / "cases.jsonl"
    cases.write_text(cases.read_text(encoding="utf-8") + '{"status": "ok", "case_id": "cov', encoding="utf-8")
    out = render_report([runs[1]], tmp_path / "partial.html")
    html = out.read_text(encoding="utf-8")
    assert "is incomplete (no summary.json" in html and "2 of 5 cases finished" in html


@pytest.mark.slow
def test_compare_runs_each_editor_then_renders_one_report(cache_dir, tmp_path):
    import os

    env = {**os.environ, "PITFALLS_CACHE_DIR": str(cache_dir)}
    proc = subprocess.run([sys.executable, "-m", "reports.compare", "--model", "tiny-gpt2", "--editors", "ft", "mend+mle",
                           "--limit", "1", "-k", "easy", "--out", str(tmp_path / "cmp")], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    html = (tmp_path / "cmp" / "report.html").read_text(encoding="utf-8")
    assert "ft · ft" in html and "mend+MLE · mend-mle" in html
    assert f"report: {(tmp_path / 'cmp' / 'report.html').resolve()}" in proc.stdout


def lifelong_runs(tmp_path: Path) -> list[Path]:
    """A sequential run whose round-trip pitfalls grow along the chain, and the same editor's fresh-model run."""
    def config(sequential):
        return {"model": "tiny-llama", "editor": "rome", "seed": 0, "sequential": sequential, "paper_setting": False,
                "paper_setting_differs": ["model tiny-llama"],
                "general_ability": {"measures": "perplexity", "every_edits_on_a_chain": 10, "unedited": {"perplexity": 40.0}}}
    chain = []
    for i in range(60):  # position 2i: pitfalls appear after edit 60
        split = ("easy", "hard", "reverse")[i % 3]
        pitfall = i >= 30
        metrics = ({"Succ": 1.0, "D": 0.01 * i, "IR": 0.02 * i, "FR": int(pitfall), "JS": 0.1} if split != "reverse"
                   else {"Succ": 1, "CS_exp": 1, "CS_imp": int(not pitfall), "CM": 0.5})
        record = case_record(split, i, pitfall, metrics, config(0))
        record.update(chain="chain-1-of-1", chain_position=2 * i, chain_segment=0)
        if i % 5 == 4:
            record["retention"] = {"after_edits": 2 * i + 2, "sample": 10, "held": max(0, 10 - i // 6), "rate": 0.5}
        if i % 5 == 4:  # --general-ability: measured after the case's edit
            record["general_ability"] = {"perplexity": 50.0 + i}
        chain.append(record)
    fresh = [case_record(s, i, False, {"Succ": 1.0, "D": 0.02, "IR": 0.1, "FR": 0, "JS": 0.1}, config(None)) for i in range(4)
             for s in ("easy",)]
    return [write_run(tmp_path / "chain", "rome", chain, {"easy": 20, "hard": 20, "reverse": 20}, finished=True),
            write_run(tmp_path / "fresh", "rome", fresh, {"easy": 4}, finished=True)]


def test_lifelong_bins_and_the_first_and_last_bin_of_each_split(tmp_path):
    from reports.lifelong import bin_width, first_and_last_bins, lifelong_curves

    assert [bin_width(n) for n in (5, 59, 118, 999)] == [1, 10, 20, 200]
    chain, fresh = lifelong_runs(tmp_path)
    bins = first_and_last_bins(load_run(chain).records)
    first, last = bins["easy"]
    assert first.value == 0 and last.value == 100 and first.low_edge == 0 and last.high_edge >= 118
    curves = dict(lifelong_curves([load_run(chain), load_run(fresh)]))
    (ir,) = curves["IR (%)"]
    assert ir.reference == pytest.approx(10.0)  # the fresh run's IR, in %
    width = bin_width(120)  # positions reach 118, retention is measured up to 120 edits
    first_bin = [0.02 * i for i in range(60) if i % 3 != 2 and 2 * i < width]
    assert ir.points[0].value == pytest.approx(100 * sum(first_bin) / len(first_bin))
    assert [p.value for p in ir.points] == sorted(p.value for p in ir.points)  # IR grows along the chain
    (retention,) = curves["Retention of earlier edits (%)"]
    assert retention.points[0].value > retention.points[-1].value and retention.reference is None
    from reports.lifelong import lifelong_table

    table = lifelong_table([load_run(chain), load_run(fresh)]).splitlines()
    assert len(table) == 3 and table[2].startswith("| rome · chain | 119 | ")  # last position + its edits; the fresh run: no row
    assert "| 0% (n=" in table[2] and "-> 100% (n=" in table[2]
    assert table[0].endswith("| perplexity: unedited -> first -> last measurement (edits) | edit + eval s |")
    assert "| 40 -> 54 (after 9) -> 109 (after 119) |" in table[2]  # the unedited value from run.json, then each end
    assert "| 20 / - of 40 |" in table[2]  # round trips with FR = 1 on the chain; no reading against the original model
    from reports.lifelong import general_ability_curves

    ((title, (curve,)),) = general_ability_curves([load_run(chain)], 9)
    first = curve.points[0]  # the first measurement: case 4 at position 8, after its edit: 9 edits applied
    assert curve.reference == 40.0 and (first.low_edge, first.n, first.value) == (9, 1, 54.0)


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it)")
def test_the_lifelong_curves_render_in_chromium(tmp_path):
    runs = lifelong_runs(tmp_path)
    out = render_report(runs, tmp_path / "lifelong.html")
    shot = tmp_path / "lifelong.png"  # kept in the test's folder to look at
    page = chromium([f"--screenshot={shot}", out.as_uri()], tmp_path)
    assert shot.is_file() and shot.stat().st_size > 10_000
    dom = chromium(["--dump-dom", out.as_uri()], tmp_path).stdout
    assert not [ln for ln in page.stderr.splitlines() if ":CONSOLE" in ln]
    for title in ("Pitfall rate, RoundEdit", "CS_imp", "IR (%)", "D (%)", "Retention of earlier edits"):
        assert f"Lifelong: {title}" in dom
    assert dom.count('class="s0 band"') >= 5 and 'class="s0 reference"' in dom  # 95% bands and the fresh-model line


def test_the_markdown_table_has_one_row_per_run_with_intervals_counts_and_time(runs):
    """``python -m reports table``: the README's findings table, from the run folders themselves."""
    out = subprocess.run([sys.executable, "-m", "reports", "table", *map(str, reversed(runs))], cwd=REPO, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    conflict, round_ = out.stdout.split("**RoundEdit**")
    cells = [line.split(" | ") for line in conflict.splitlines() if line.startswith("| ") and "run" in line]
    names = [row[0].lstrip("| ") for row in cells]
    assert names == ["rome-run", "memit-run"]  # the editors' shipped order, whatever order the folders were given in
    rows = dict(zip(names, cells))
    head = next(line for line in conflict.splitlines() if line.startswith("| editor")).split(" | ")
    cm = head.index("Coverage CM ^")
    assert rows["rome-run"][cm].startswith("80.00 [")  # mean of 0.9, 0.8, 0.7
    assert rows["rome-run"][head.index("Reverse CS_imp ^")].startswith("0.00")
    assert rows["rome-run"][-2] == "3/2/0" and rows["rome-run"][-1] == "0 |"  # 5 cases of 2 s: 0 minutes
    assert rows["memit-run"][head.index("Reverse CS_exp ^")] == "-"
    assert "rome-run" in round_ and "memit-run" not in round_  # memit has no round-edit split
    failed = subprocess.run([sys.executable, "-m", "reports", "table", str(runs[0].parent / "nowhere")], cwd=REPO,
                            capture_output=True, text=True, timeout=60)
    assert failed.returncode == 2 and failed.stderr.startswith("error: ") and "nowhere" in failed.stderr


def test_the_findings_tables_are_what_the_kept_records_give():
    """Every row of the findings tables (docs/findings.md) is recomputed from the records kept under docs/findings/."""
    from benchmarks.findings import KEPT
    from reports.tables import markdown_tables

    kept = sorted(p for p in KEPT.iterdir() if (p / "cases.jsonl").is_file())
    assert kept, f"no kept findings records under {KEPT}"
    computed = [line for line in markdown_tables([load_run(run) for run in kept]).splitlines() if line.startswith("| ")]
    page = (REPO / "docs" / "findings.md").read_text(encoding="utf-8")
    section = page.split("\n## ", 1)[0]  # the tables come before any later section
    rows = [line for line in computed if not line.startswith("| editor")]
    assert len(rows) >= len(kept)  # every kept run has a row in at least one table
    # The section's table lines are exactly the computed ones, in the same order: no stale, stray or missing row.
    assert [line for line in section.splitlines() if line.startswith("| ")] == computed


def test_the_generation_and_chain_findings_are_what_the_kept_records_give():
    """docs/findings.md's teacher-forced against generated table and docs/lifelong.md's general-ability table and
    kept chains' rows are recomputed from the records kept under docs/findings/."""
    from benchmarks.findings import KEPT
    from reports.lifelong import ability_measured, lifelong_table
    from reports.tables import generation_table

    generation = KEPT.parent / "gemma3-270m-gpt2xl-generation"
    runs = [load_run(p) for p in sorted(generation.iterdir()) if (p / "cases.jsonl").is_file()]
    computed = [line for line in generation_table(runs).splitlines() if line.startswith("| ")]
    page = (REPO / "docs" / "findings.md").read_text(encoding="utf-8")
    section = page.split("## Teacher-forced against generated verdicts", 1)[1].split("\n## ", 1)[0]
    assert len(runs) >= 3 and [line for line in section.splitlines() if line.startswith("| ")] == computed

    lifelong = (REPO / "docs" / "lifelong.md").read_text(encoding="utf-8")
    chains = KEPT.parent / "gemma3-270m-geography-chains"
    kept_chains = [load_run(p) for p in sorted(chains.iterdir()) if (p / "cases.jsonl").is_file()]
    table = [line for line in lifelong_table(kept_chains).splitlines() if line.startswith("| ")]
    assert len(kept_chains) >= 4 and all(line in lifelong.splitlines() for line in table)  # python -m reports lifelong's rows
    measured = [run for run in kept_chains if run.config.get("general_ability")]
    assert len(measured) >= 2
    for run in measured:  # every chain kept with --general-ability has its rows in the table of measurements
        label = {"rome": "ROME", "memit": "MEMIT", "alphaedit": "AlphaEdit", "grace": "GRACE", "wise": "WISE", "ft": "FT"}.get(run.editor, run.editor)
        unedited = run.config["general_ability"]["unedited"]
        values = {measure: [unedited[measure], *(v for _, v in ability_measured(run, measure))] for measure in ("perplexity", "kg")}
        assert f"| {label}, perplexity | " + " | ".join(f"{v:.1f}" for v in values["perplexity"]) + " |" in lifelong
        assert f"| {label}, kg (% right) | " + " | ".join(f"{100 * v:.0f}" for v in values["kg"]) + " |" in lifelong


def test_findings_are_kept_without_the_datasets_text_and_restored_for_a_resume(runs, tmp_path):
    from benchmarks.findings import restore, save

    kept = tmp_path / "kept"
    assert save(runs[0].parent, kept) == [("memit-run", 2), ("rome-run", 9)]
    text = (kept / "rome-run" / "cases.jsonl").read_text(encoding="utf-8")
    assert NASTY not in text and "Paris" not in text and "Lyon" not in text  # labels, edits and messages are left out
    kept_run, original = load_run(kept / "rome-run"), load_run(runs[0])
    assert [r.case_id for r in kept_run.records] == [r.case_id for r in original.records]
    assert kept_run.splits == original.splits  # the table reads the same numbers
    again = tmp_path / "again"
    (again / "memit-run").mkdir(parents=True)
    (again / "memit-run" / "cases.jsonl").write_text("", encoding="utf-8")  # a run already there is left alone
    assert restore(kept, again) == [("rome-run", 9)]
    assert (again / "memit-run" / "cases.jsonl").read_text() == ""
    missing = subprocess.run([sys.executable, "-m", "benchmarks.findings", "restore", str(again), "--kept", str(tmp_path / "nowhere")],
                             cwd=REPO, capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2 and missing.stderr.startswith("error: ") and "nowhere" in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1


def test_kept_records_hold_a_chains_fields_the_generated_twins_and_general_ability_but_no_generated_text(tmp_path):
    from benchmarks.findings import save

    record = {**case_record("easy", 0, False, {"Succ": 1.0, "D": 0.01, "IR": 0.0, "FR": 0, "JS": 0.02}, {"editor": "rome"}),
              "chain": "chain-1-of-1", "chain_position": 0, "chain_segment": 0, "generation_metrics": {"Succ": 1.0, "IR": 0.0, "FR": 0},
              "generation_pitfall": False, "general_ability": {"kg": 0.75}, "generated": [f"The capital of {NASTY} is => {NASTY}"]}
    write_run(tmp_path / "results" / "chain-run", "rome", [record], {"easy": 1}, finished=True)
    save(tmp_path / "results", tmp_path / "kept")
    (kept,) = [json.loads(line) for line in (tmp_path / "kept" / "chain-run" / "cases.jsonl").read_text(encoding="utf-8").splitlines()]
    assert kept["chain_position"] == 0 and kept["generation_pitfall"] is False and kept["general_ability"] == {"kg": 0.75}
    assert kept["edits"] == [""] * len(record["edits"]) and record["edits"]  # counted by the lifelong view, without text
    assert kept["generation_metrics"] == {"Succ": 1.0, "IR": 0.0, "FR": 0} and "generated" not in kept
    assert NASTY not in (tmp_path / "kept" / "chain-run" / "cases.jsonl").read_text(encoding="utf-8")


def test_the_generation_table_counts_both_verdicts_and_their_agreement_per_split(tmp_path, capsys):
    from reports.__main__ import main
    from reports.tables import generation_table

    config = {"editor": "rome"}
    rows = []
    for index, (taught, generated) in enumerate([(True, True), (True, False), (False, False), (False, True)]):
        record = case_record("reverse", index, taught, {"CS_exp": 1.0, "CS_imp": 0.0, "CM": 0.1}, config)
        rows.append({**record, "generation_metrics": {"CS_exp": 1.0, "CS_imp": float(not generated)},
                     "generation_pitfall": generated})
    rows.append(case_record("easy", 0, True, {"Succ": 1.0, "D": 0.01, "IR": 0.5, "FR": 1, "JS": 0.02}, config))  # no twin
    run = write_run(tmp_path / "gen", "rome", rows, {"reverse": 4, "easy": 1}, finished=True)
    table = generation_table([load_run(run)])
    assert "| gen | reverse | 4 | 2 | 2 | 50.00 [15.0, 85.0] |" in table, table  # 2 of 4 agree (Wilson interval)
    assert "| easy |" not in table
    plain = write_run(tmp_path / "plain", "rome", rows[-1:], {"easy": 1}, finished=True)
    capsys.readouterr()
    assert main(["generation", str(plain)]) == 0
    assert capsys.readouterr().out.strip() == "no run here has --generation records"
    assert main(["generation", str(tmp_path / "nosuch")]) == 2  # a folder that is not a run: one line, as for `table`
    assert capsys.readouterr().err.strip().startswith("error: ")
