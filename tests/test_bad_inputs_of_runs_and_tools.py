"""The second bad-input catalogue: what was added after the first one (tests/test_bad_inputs.py).

Run folders read back (report, table, lifelong, resume, a folder continued),
``reports merge``, statistics files and corpora, ``--hparams-set``, plugins,
the checker, the pre-check, the generator's output folder, option
combinations. Each row asserts the exit status, that no traceback escaped and
the one line the user sees. A row whose status is 0 is a run that goes on with
what it can use and says, in one line, what it left out.
"""

from __future__ import annotations

import io
import json
import shutil
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.records import CASES_FILE, RUN_FILE, SELECTION_FILE, SUMMARY_FILE
from harness.run_files import RunFileError, read_cases, read_run_config, read_selection, read_summary
from tests.helpers import REPO, run_inprocess, suite_args

FINE = "tests.broken_editors:Fine"  # an editor that costs nothing: the rows are about files, not edits
MODULE = "model.layers.0.mlp.down_proj"  # tiny-llama's ROME layer
STATS = "stats/tiny-llama/wikipedia_stats/" + f"{MODULE}_float32_mom2_100000.npz"


def base_args(published: Path, results: Path, *extra: str) -> list[str]:
    """The options of the prepared runs: a resume with them continues the run."""
    return suite_args(published, results, "--editor", FINE, "--record-only", "--limit", "1", "-m", "easy or reverse",
                      *extra, model="tiny-llama")


@pytest.fixture(scope="module")
def prepared(published: Path, cache_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished run (``base``) and the two shards of another (``s1``, ``s2``), made once for the module."""
    results = tmp_path_factory.mktemp("prepared")
    for name, extra in (("base", ()), ("s1", ("--shard", "1/2")), ("s2", ("--shard", "2/2"))):
        ran = run_inprocess("pytest", base_args(published, results, "--run-name", name, *extra), cache_dir)
        assert ran.returncode == 0, ran.output[-3000:]
    assert all(read_cases(results / s / CASES_FILE).records for s in ("base", "s1", "s2"))
    return results


@dataclass
class Row:
    id: str
    args: list[str]  # {tmp} is the row's folder, holding a copy of the prepared runs under r/; {data}: published GPT2-XL
    expect: str  # a substring of one line of the output
    status: int | tuple[int, ...] = (1, 2, 4)
    setup: Callable[[Path], None] | None = None
    tool: str = "reports"  # pytest | reports | check | precheck | generate
    base_run: bool = False  # pytest rows: the prepared run's options (a resume continues it)
    model: str = "tiny-gpt2"  # pytest rows


# ------------------------------------------------------------------ setups


def put(relative: str, content: str | bytes) -> Callable[[Path], None]:
    """Write ``content`` to ``{tmp}/relative`` (replacing what is there, a folder too)."""
    def setup(tmp: Path) -> None:
        target = tmp / relative
        if target.is_dir():
            shutil.rmtree(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return setup


def folder_at(relative: str) -> Callable[[Path], None]:
    def setup(tmp: Path) -> None:
        (tmp / relative).unlink(missing_ok=True)
        (tmp / relative).mkdir(parents=True)
    return setup


def edit_json(relative: str, change: Callable[[dict], object]) -> Callable[[Path], None]:
    def setup(tmp: Path) -> None:
        data = json.loads((tmp / relative).read_text())
        change(data)
        (tmp / relative).write_text(json.dumps(data, allow_nan=True))
    return setup


def edit_first_record(relative: str, change: Callable[[dict], object]) -> Callable[[Path], None]:
    """Change the first line of a ``cases.jsonl``."""
    def setup(tmp: Path) -> None:
        lines = (tmp / relative).read_text().splitlines()
        record = json.loads(lines[0])
        change(record)
        lines[0] = json.dumps(record, allow_nan=True)
        (tmp / relative).write_text("\n".join(lines) + "\n")
    return setup


def append_line(relative: str, line: str) -> Callable[[Path], None]:
    def setup(tmp: Path) -> None:
        with (tmp / relative).open("a") as handle:
            handle.write(line + "\n")
    return setup


def edit_easy_record(relative: str, change: Callable[[dict], object]) -> Callable[[Path], None]:
    """Change the first record of split easy in a ``cases.jsonl``."""
    def setup(tmp: Path) -> None:
        lines = (tmp / relative).read_text().splitlines()
        number = next(i for i, line in enumerate(lines) if json.loads(line)["split"] == "easy")
        record = json.loads(lines[number])
        change(record)
        lines[number] = json.dumps(record, allow_nan=True)
        (tmp / relative).write_text("\n".join(lines) + "\n")
    return setup


def both(*setups: Callable[[Path], None]) -> Callable[[Path], None]:
    def setup(tmp: Path) -> None:
        for step in setups:
            step(tmp)
    return setup


def set_metric(value: object) -> Callable[[dict], None]:
    return lambda record: record["metrics"].__setitem__(next(iter(record["metrics"])), value)


def deep(levels: int) -> str:
    return "[" * levels + "]" * levels


def npz(arrays: dict[str, np.ndarray]) -> Callable[[Path], None]:
    def setup(tmp: Path) -> None:
        path = tmp / STATS
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, **arrays)
    return setup


def spd(size: int) -> np.ndarray:
    basis = np.random.default_rng(0).standard_normal((size, size))
    return basis @ basis.T + size * np.eye(size)


def npz_claiming_shape(shape: tuple[int, ...]) -> Callable[[Path], None]:
    """An .npz whose mom2.mom2 header declares ``shape`` and holds no data."""
    def setup(tmp: Path) -> None:
        path = tmp / STATS
        path.parent.mkdir(parents=True, exist_ok=True)
        header = io.BytesIO()
        np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": shape})
        count = io.BytesIO()
        np.save(count, np.array(5))
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("mom2.mom2.npy", header.getvalue())
            archive.writestr("mom2.count.npy", count.getvalue())
    return setup


def merged_once(tmp: Path) -> None:
    from reports.merge import merge_runs

    merge_runs(tmp / "m", [tmp / "r" / "s1", tmp / "r" / "s2"])


def shard_copy_with_other_metrics(tmp: Path) -> None:
    shutil.copytree(tmp / "r" / "s1", tmp / "r" / "s1b")
    edit_first_record("r/s1b/cases.jsonl", set_metric(0.123456))(tmp)


def pickle_model_folder(tmp: Path) -> None:
    """A model folder whose only weights file is a pickle that would run a command."""
    import os
    import pickle

    from pitfalls_editkit.tiny_models import build

    model, tokenizer = build("tiny-gpt2", tmp / "cache")
    model.config.save_pretrained(tmp / "pk")
    tokenizer.save_pretrained(tmp / "pk")

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {tmp / 'pk' / 'ran'}",))

    (tmp / "pk" / "pytorch_model.bin").write_bytes(pickle.dumps({"weight": Payload()}))


def hf_folder_of_nulls(tmp: Path) -> None:
    import datasets

    datasets.Dataset.from_dict({"text": [None] * 5}).save_to_disk(str(tmp / "nulls"))


def published_copy(tmp: Path) -> None:
    from tests.conftest import PUBLISHED

    shutil.copytree(PUBLISHED / "GPT2-XL", tmp / "src")


BASE = "{tmp}/r/base"
REPORT = ["{tmp}/r/base", "-o", "{tmp}/report.html"]
MERGE = ["merge", "{tmp}/m", "{tmp}/r/s1", "{tmp}/r/s2"]
NOTE = 0  # the status of a run that goes on and says what it left out
ROME_STATS = ["--editor", "rome", "--stats-dir", "{tmp}/stats", "--stats-corpus", "hf:wikipedia:20200501.en",
              "-k", "easy", "--limit", "1", "--record-only"]

def stats_row(id: str, expect: str, setup: Callable[[Path], None]) -> Row:
    """ROME on tiny-llama reading its statistics file from --stats-dir: the case records the file's fault."""
    return Row(id, ROME_STATS, expect, tool="pytest", model="tiny-llama", setup=setup)


CATALOGUE: list[Row] = [
    # ------------------------------------------------------------------ run.json, read by the report, table, lifelong
    Row("report-run-json-torn", REPORT, "run.json: not valid JSON", setup=put("r/base/run.json", '{"model": "tiny')),
    Row("report-run-json-not-utf8", REPORT, "run.json: not UTF-8 text (byte 0)", setup=put("r/base/run.json", b"\xff\xfe{}")),
    Row("report-run-json-a-list", REPORT, "run.json: holds a JSON list, not an object", setup=put("r/base/run.json", "[1, 2]")),
    Row("report-run-json-model-a-number", REPORT, "run.json: key 'model' holds int",
        setup=edit_json("r/base/run.json", lambda c: c.__setitem__("model", 7))),
    Row("report-run-json-deep", REPORT, "run.json: nested deeper than 32 levels",
        setup=put("r/base/run.json", '{"model": "x", "hparams": {"a": ' + deep(40) + "}}")),
    Row("report-run-json-very-deep", REPORT, "run.json: nested deeper than 32 levels",
        setup=put("r/base/run.json", '{"hparams": ' + deep(100000) + "}")),
    Row("report-run-json-huge-integer", REPORT, "run.json: an integer of 40 digits (at most 19)",
        setup=put("r/base/run.json", '{"seed": ' + "9" * 40 + "}")),
    Row("report-run-json-huge-string", REPORT, "run.json: a string of 1000001 characters",
        setup=put("r/base/run.json", '{"model": "' + "x" * 1_000_001 + '"}')),
    Row("report-run-json-a-folder", REPORT, "run.json: not a regular file", setup=folder_at("r/base/run.json")),
    Row("report-run-json-nan-seed", REPORT, "run.json: key 'seed' holds float",
        setup=put("r/base/run.json", '{"seed": NaN}')),
    Row("table-run-json-torn", ["table", BASE], "run.json: not valid JSON", setup=put("r/base/run.json", "{")),
    Row("lifelong-run-json-torn", ["lifelong", BASE], "run.json: not valid JSON", setup=put("r/base/run.json", "{")),
    # ------------------------------------------------------------------ summary.json and selection.json
    Row("report-summary-torn", REPORT, "summary.json: not valid JSON", setup=put("r/base/summary.json", '{"config": {')),
    Row("report-summary-config-a-list", REPORT, "summary.json: key 'config' holds list",
        setup=put("r/base/summary.json", '{"config": [], "splits": {}}')),
    Row("report-summary-a-string", REPORT, "summary.json: holds a JSON str, not an object", setup=put("r/base/summary.json", '"x"')),
    Row("report-selection-torn", REPORT, "selection.json: not valid JSON", setup=put("r/base/selection.json", '{"expected": ')),
    Row("report-selection-unknown-split", REPORT, "selection.json: 'expected' is not a mapping of split to a count",
        setup=put("r/base/selection.json", '{"expected": {"sideways": 3}, "cases": []}')),
    Row("report-selection-negative-count", REPORT, "selection.json: 'expected' is not a mapping of split to a count",
        setup=put("r/base/selection.json", '{"expected": {"easy": -1}, "cases": []}')),
    Row("report-selection-cases-not-text", REPORT, "selection.json: 'cases' is not a list of case ids",
        setup=put("r/base/selection.json", '{"expected": {}, "cases": [1, 2]}')),
    Row("table-selection-not-utf8", ["table", BASE], "selection.json: not UTF-8 text", setup=put("r/base/selection.json", b"\x80")),
    # ------------------------------------------------------------------ cases.jsonl
    Row("report-cases-not-utf8", REPORT, "cases.jsonl: not UTF-8 text", setup=put("r/base/cases.jsonl", b'{"case_id": "\xff"}\n')),
    Row("report-cases-a-folder", REPORT, "cases.jsonl: not a regular file", setup=folder_at("r/base/cases.jsonl")),
    Row("report-cases-torn-line", REPORT, "1 line(s) are not finished records and were left out (line 3: not valid JSON",
        status=NOTE, setup=append_line("r/base/cases.jsonl", '{"case_id": "easy-00')),
    Row("report-cases-nan-metric", REPORT, "line 1: metrics.", status=NOTE,
        setup=edit_first_record("r/base/cases.jsonl", set_metric(float("nan")))),
    Row("report-cases-infinite-metric", REPORT, "is inf, not a finite number", status=NOTE,
        setup=edit_first_record("r/base/cases.jsonl", set_metric(float("inf")))),
    Row("report-cases-metric-text", REPORT, "holds str '0.5', not a number", status=NOTE,
        setup=edit_first_record("r/base/cases.jsonl", set_metric("0.5"))),
    Row("report-cases-metric-missing", REPORT, "line 1: status ok without metric", status=NOTE,
        setup=edit_first_record("r/base/cases.jsonl", lambda r: r["metrics"].clear())),
    Row("report-cases-unknown-split", REPORT, "line 1: split 'sideways' is not one of", status=NOTE,
        setup=edit_first_record("r/base/cases.jsonl", lambda r: r.__setitem__("split", "sideways"))),
    Row("report-cases-benchmark-mismatch", REPORT, "is not the benchmark of split", status=NOTE,
        setup=edit_first_record("r/base/cases.jsonl", lambda r: r.__setitem__("benchmark", "conflict" if r["benchmark"] == "round"
                                                                                else "round"))),
    Row("report-cases-index-a-bool", REPORT, "line 1: 'index' holds bool", status=NOTE,
        setup=edit_first_record("r/base/cases.jsonl", lambda r: r.__setitem__("index", True))),
    Row("report-cases-negative-index", REPORT, "line 1: index -3 is negative", status=NOTE,
        setup=edit_first_record("r/base/cases.jsonl", lambda r: r.__setitem__("index", -3))),
    Row("report-cases-huge-index", REPORT, "an integer of 30 digits", status=NOTE,
        setup=append_line("r/base/cases.jsonl", '{"case_id": "x", "index": ' + "1" * 30 + "}")),
    Row("report-cases-deep-line", REPORT, "nested deeper than 32 levels", status=NOTE,
        setup=append_line("r/base/cases.jsonl", deep(5000))),
    Row("report-cases-unknown-status", REPORT, "line 1: status 'done' is not one of ok, error", status=NOTE,
        setup=edit_first_record("r/base/cases.jsonl", lambda r: r.__setitem__("status", "done"))),
    Row("report-cases-negative-seconds", REPORT, "line 1: seconds_edit -1 is not a finite number of seconds", status=NOTE,
        setup=edit_first_record("r/base/cases.jsonl", lambda r: r.__setitem__("seconds_edit", -1))),
    Row("report-cases-empty-case-id", REPORT, "line 1: an empty case_id", status=NOTE,
        setup=edit_first_record("r/base/cases.jsonl", lambda r: r.__setitem__("case_id", ""))),
    Row("report-cases-a-list-line", REPORT, "a JSON list, not a record", status=NOTE, setup=append_line("r/base/cases.jsonl", "[1]")),
    Row("report-cases-outside-selection", REPORT, "record(s) of cases outside the run's selection (easy-0099-P1-x)", status=NOTE,
        setup=edit_easy_record("r/base/cases.jsonl", lambda r: r.update(case_id="easy-0099-P1-x"))),
    Row("table-cases-nan-metric", ["table", BASE], "line 1: metrics.", status=NOTE,
        setup=edit_first_record("r/base/cases.jsonl", set_metric(float("nan")))),
    # ------------------------------------------------------------------ reports merge
    Row("merge-into-one-of-its-shards", ["merge", "{tmp}/r/s1", "{tmp}/r/s1", "{tmp}/r/s2"], "is, holds or lies inside the shard folder"),
    Row("merge-into-the-shards-parent", ["merge", "{tmp}/r", "{tmp}/r/s1", "{tmp}/r/s2"], "is, holds or lies inside the shard folder"),
    Row("merge-into-a-shards-subfolder", ["merge", "{tmp}/r/s1/merged", "{tmp}/r/s1", "{tmp}/r/s2"],
        "is, holds or lies inside the shard folder"),
    Row("merge-into-another-run", ["merge", BASE, "{tmp}/r/s1", "{tmp}/r/s2"], "base: holds a run already; merge into a new folder, "
        "or give --replace"),
    Row("merge-twice-into-one-folder", MERGE, "m: holds a run already", setup=merged_once),
    Row("merge-into-a-file", MERGE, "m: exists and is not a folder", setup=put("m", "x")),
    Row("merge-into-a-folder-of-other-files", MERGE, "m: a folder that holds other files", setup=put("m/notes.txt", "mine")),
    Row("merge-shards-that-disagree", ["merge", "{tmp}/m", "{tmp}/r/s1", "{tmp}/r/s1b", "{tmp}/r/s2"],
        "hold finished records that differ (metrics); merge only shards of one run", setup=shard_copy_with_other_metrics),
    Row("merge-shard-run-json-torn", MERGE, "run.json: not valid JSON", setup=put("r/s2/run.json", "{")),
    Row("merge-shard-cases-not-utf8", MERGE, "cases.jsonl: not UTF-8 text", setup=put("r/s2/cases.jsonl", b"\xfe\n")),
    Row("merge-shard-selection-torn", MERGE, "selection.json: not valid JSON", setup=put("r/s2/selection.json", "[")),
    Row("merge-shard-spec-garbage", MERGE, "not K/N",
        setup=edit_json("r/s2/run.json", lambda c: c["requested"].__setitem__("shard", "x/y"))),
    Row("merge-shard-torn-line", MERGE, "note: ", status=NOTE, setup=append_line("r/s2/cases.jsonl", '{"case_')),
    # ------------------------------------------------------------------ --resume and a run folder continued
    Row("resume-run-json-torn", ["--run-name", "base", "--resume"], "run.json: not valid JSON", status=4, tool="pytest",
        base_run=True, setup=put("r/base/run.json", '{"requested": ')),
    Row("resume-run-json-a-list", ["--run-name", "base", "--resume"], "run.json: holds a JSON list", status=4, tool="pytest",
        base_run=True, setup=put("r/base/run.json", "[]")),
    Row("resume-cases-not-utf8", ["--run-name", "base", "--resume"], "cases.jsonl: not UTF-8 text", status=4, tool="pytest",
        base_run=True, setup=put("r/base/cases.jsonl", b"\xc3\x28\n")),
    Row("resume-cases-a-folder", ["--run-name", "base", "--resume"], "cases.jsonl: not a regular file", status=4, tool="pytest",
        base_run=True, setup=folder_at("r/base/cases.jsonl")),
    Row("resume-selection-torn", ["--run-name", "base", "--resume"], "selection.json: not valid JSON", status=4, tool="pytest",
        base_run=True, setup=put("r/base/selection.json", "{")),
    Row("resume-nan-record-runs-again", ["--run-name", "base", "--resume"], "are not finished records and were left out (line 1: metrics.", status=NOTE, tool="pytest", base_run=True,
        setup=edit_first_record("r/base/cases.jsonl", set_metric(float("nan")))),
    Row("resume-record-outside-selection", ["--run-name", "base", "--resume"], "of cases outside this selection (easy-0099-P1-x)",
        status=NOTE, tool="pytest", base_run=True,
        setup=edit_easy_record("r/base/cases.jsonl", lambda r: r.update(case_id="easy-0099-P1-x"))),
    Row("continue-run-json-deep", ["--run-name", "base"], "run.json: nested deeper than 32 levels", status=4, tool="pytest",
        base_run=True, setup=put("r/base/run.json", deep(60))),
    # ------------------------------------------------------------------ statistics files and corpora
    stats_row("stats-npz-truncated", "cannot read it as a .npz statistics file",
        setup=put(STATS, b"PK\x03\x04 truncated")),
    stats_row("stats-npz-strings", "mom2.mom2 holds <U1, not real numbers",
        setup=npz({"mom2.mom2": np.full((128, 128), "a"), "mom2.count": np.array(5)})),
    stats_row("stats-npz-shape-lie", "declares shape (1000000, 1000000)",
        setup=npz_claiming_shape((1_000_000, 1_000_000))),
    stats_row("stats-npz-not-positive-semidefinite", "is not positive semidefinite",
        setup=npz({"mom2.mom2": -spd(128), "mom2.count": np.array(5)})),
    stats_row("stats-npz-not-symmetric", "is not symmetric",
        setup=npz({"mom2.mom2": spd(128) + np.triu(np.full((128, 128), 50.0)), "mom2.count": np.array(5)})),
    stats_row("stats-npz-nan", "holds NaN or infinite values",
        setup=npz({"mom2.mom2": np.full((128, 128), np.nan), "mom2.count": np.array(5)})),
    stats_row("stats-npz-count-zero", "the count of keys is 0.0, expected a whole number >= 1",
        setup=npz({"mom2.mom2": spd(128), "mom2.count": np.array(0)})),
    stats_row("stats-npz-other-models-size", "mom2.mom2 has shape (8, 8), expected (128, 128) for this module",
        setup=npz({"mom2.mom2": spd(8), "mom2.count": np.array(5)})),
    stats_row("stats-npz-other-keys", "has no 'mom2.mom2' and 'mom2.count'",
        setup=npz({"weights": spd(128)})),
    Row("stats-corpus-jsonl-null-text", ["--stats-corpus", "{tmp}/corpus.jsonl"], "line 1: 'text' holds NoneType, not text",
        status=4, tool="pytest", setup=put("corpus.jsonl", '{"text": null}\n')),
    Row("stats-corpus-jsonl-deep", ["--stats-corpus", "{tmp}/corpus.jsonl"], "line 1 is not a JSON object with a 'text' field",
        status=4, tool="pytest", setup=put("corpus.jsonl", deep(3000) + "\n")),
    Row("stats-corpus-hf-null-text", ["--stats-corpus", "hf:{tmp}/nulls"], "row 0 has NoneType 'None' in its 'text' column, not text",
        status=4, tool="pytest", setup=hf_folder_of_nulls),
    # ------------------------------------------------------------------ --hparams-set and hyper-parameter files
    Row("hparams-set-out-of-range", ["--hparams-set", "v_num_grad_steps=0", "-k", "easy", "--limit", "1"],
        "--hparams-set v_num_grad_steps=0 (over ", status=1, tool="pytest"),
    Row("hparams-set-wrong-type", ["--hparams-set", "layers=\"x\"", "-k", "easy", "--limit", "1"],
        "--hparams-set layers=\"x\" (over ", status=1, tool="pytest"),
    Row("hparams-set-deep", ["--hparams-set", "v_lr=" + deep(50)], "--hparams-set v_lr: nested deeper than 32 levels", status=4,
        tool="pytest"),
    Row("hparams-set-huge-integer", ["--hparams-set", "v_num_grad_steps=" + "9" * 5000], "--hparams-set v_num_grad_steps: an integer "
        "of 5000 digits", status=4, tool="pytest"),
    Row("hparams-file-deep", ["--hparams", "{tmp}/hp.json", "-k", "easy", "--limit", "1"], "hp.json: cannot read hyper-parameters "
        "(nested deeper than 32 levels)", status=1, tool="pytest", setup=put("hp.json", '{"layers": ' + deep(10000) + "}")),
    Row("hparams-file-huge-integer", ["--hparams", "{tmp}/hp.json", "-k", "easy", "--limit", "1"], "hp.json: cannot read "
        "hyper-parameters (an integer of 50 digits", status=1, tool="pytest", setup=put("hp.json", '{"layers": [' + "7" * 50 + "]}")),
    # ------------------------------------------------------------------ options that are wrong whatever the case
    Row("mle-with-an-editor-that-cannot-batch", ["--editor", "rome", "--mle"], "editor 'rome' cannot edit a batch", status=4,
        tool="pytest"),
    Row("results-into-the-dataset-folder", ["--dataset-dir", "{tmp}/src", "--results-dir", "{tmp}", "--run-name", "src"],
        "the run folder is, holds or lies inside --dataset-dir", status=4, tool="pytest", setup=published_copy),
    Row("results-inside-the-dataset-folder", ["--dataset-dir", "{tmp}/src", "--results-dir", "{tmp}/src/results"],
        "the run folder is, holds or lies inside --dataset-dir", status=4, tool="pytest", setup=published_copy),
    Row("report-over-its-own-records", ["{tmp}/r/base", "-o", "{tmp}/r/base/cases.jsonl"], "is a folder or a file of a run it "
        "reads; write the report elsewhere"),
    Row("shard-arabic-indic-digits", ["--shard", "\u0661/\u0662"], "--shard '\u0661/\u0662': expected K/N", status=4, tool="pytest"),
    Row("shard-superscript-digits", ["--shard", "\u00b2/\u00b3"], "--shard '\u00b2/\u00b3': expected K/N", status=4, tool="pytest"),
    Row("plugin-raises-at-import", ["--editor", "tests.editor_raises_at_import:X"], "importing module 'tests.editor_raises_at_import' "
        "raised RuntimeError: this plugin's module is broken on purpose", status=4, tool="pytest"),
    Row("model-folder-with-a-pickle", ["rome", "--model", "{tmp}/pk"], "a weights file holds a pickle that is not plain tensors",
        tool="check", setup=pickle_model_folder),
    # ------------------------------------------------------------------ the checker, the pre-check, the generator
    Row("check-plugin-raises-at-import", ["tests.editor_raises_at_import:X"], "raised RuntimeError: this plugin's module is broken",
        tool="check"),
    Row("check-constructor-raises", ["tests.broken_editors:ConstructorRaises"], "could not be built: RuntimeError: injected failure "
        "in the constructor", tool="check"),
    Row("check-device-unknown", ["rome", "--device", "gpu"], "--device 'gpu': expected auto, cpu, cuda or cuda:N", tool="check"),
    Row("check-stats-tokens-zero", ["rome", "--stats-tokens", "0"], "--stats-tokens 0: must be at least 1", tool="check"),
    Row("check-hparams-missing", ["rome", "--hparams", "{tmp}/none.json"], "--hparams {tmp}/none.json: no such file", tool="check"),
    Row("precheck-edits-a-folder", ["{tmp}", "--rules", str(REPO / "pitfalls_generator" / "data" / "geography.rules.json")],
        "is a folder; give a JSON-lines file of edit requests", tool="precheck"),
    Row("precheck-json-in-a-missing-folder", ["{tmp}/e.jsonl", "--rules", "{tmp}/rules.json", "--json", "{tmp}/no/such/f.json"],
        "--json {tmp}/no/such/f.json: cannot write a file there", tool="precheck"),
    Row("precheck-json-a-folder", ["{tmp}/e.jsonl", "--rules", "{tmp}/rules.json", "--json", "{tmp}"],
        "cannot write a file there", tool="precheck"),
    Row("precheck-rules-deep", ["{tmp}/e.jsonl", "--rules", "{tmp}/deep.json"], "deep.json: nested deeper than 32 levels",
        tool="precheck", setup=put("deep.json", deep(2000))),
    Row("precheck-edits-deep-line", ["{tmp}/deep.jsonl", "--rules", "{tmp}/deep.json"], "deep.jsonl: line 1: nested deeper",
        tool="precheck", setup=both(put("deep.jsonl", '{"a": ' * 2000 + "1" + "}" * 2000 + "\n"), put("deep.json", "{}"))),
    Row("generate-into-its-published-source", ["{tmp}/src", "--from-published", "{tmp}/src"], "is, holds or lies inside the input of "
        "--from-published", tool="generate", setup=published_copy),
    Row("generate-into-a-folder-inside-its-source", ["{tmp}/src/out", "--from-published", "{tmp}/src"], "is, holds or lies inside "
        "the input of --from-published", tool="generate", setup=published_copy),
    Row("generate-into-the-folder-of-its-triples", ["{tmp}", "--triples", "{tmp}/t.jsonl", "--relations", "{tmp}/rel.json",
                                                   "--rules", "{tmp}/rules.json"], "is, holds or lies inside the input of --triples",
        tool="generate", setup=put("t.jsonl", "")),
]


def command(row: Row, tmp: Path, published: Path) -> list[str]:
    args = [a.format(tmp=tmp) for a in row.args]
    if row.tool != "pytest":
        return args
    if row.base_run:
        return base_args(published, tmp / "r", *args)
    extra = [] if "-k" in args or "-m" in args else ["-m", "easy", "--limit", "1"]
    return suite_args(published, tmp / "results", *extra, *args, model=row.model)


def test_the_catalogue_is_large_and_its_ids_unique():
    assert len(CATALOGUE) >= 60 and len({row.id for row in CATALOGUE}) == len(CATALOGUE)


def runs_cases(row: Row) -> bool:
    """A row whose command loads a model and runs cases (not refused before collection): in the full loop only."""
    return row.tool == "pytest" and row.status != 4


@pytest.mark.parametrize("row", [pytest.param(row, marks=pytest.mark.slow) if runs_cases(row) else row for row in CATALOGUE],
                         ids=[row.id for row in CATALOGUE])
def test_bad_input_is_one_clear_line(row: Row, prepared: Path, tmp_path: Path, published: Path, cache_dir: Path):
    shutil.copytree(prepared, tmp_path / "r")
    (tmp_path / "e.jsonl").write_text("")
    (tmp_path / "rules.json").write_text("{}")
    if row.setup:
        row.setup(tmp_path)
    ran = run_inprocess(row.tool, command(row, tmp_path, published), cache_dir)
    statuses = row.status if isinstance(row.status, tuple) else (row.status,)
    assert ran.returncode in statuses, f"exit {ran.returncode}\n{ran.output[-3000:]}"
    assert "Traceback" not in ran.output and "INTERNALERROR" not in ran.output, ran.output[-3000:]
    expected = row.expect.format(tmp=tmp_path)
    assert any(expected in line for line in ran.output.splitlines()), f"expected a line with {expected!r}:\n{ran.output[-3000:]}"
    assert not (tmp_path / "pk" / "ran").exists()  # no payload ever ran


def test_nothing_in_a_refused_merge_or_generation_was_destroyed(prepared: Path, tmp_path: Path, cache_dir: Path):
    """The inputs of a refused command are byte-identical afterwards; a merge that replaces a run says so first."""
    shutil.copytree(prepared, tmp_path / "r")
    before = {p: p.read_bytes() for p in (tmp_path / "r").rglob("*") if p.is_file()}
    for args in (["merge", str(tmp_path / "r" / "s1"), str(tmp_path / "r" / "s1"), str(tmp_path / "r" / "s2")],
                 ["merge", str(tmp_path / "r" / "base"), str(tmp_path / "r" / "s1"), str(tmp_path / "r" / "s2")]):
        assert run_inprocess("reports", args, cache_dir).returncode == 2
    assert {p: p.read_bytes() for p in (tmp_path / "r").rglob("*") if p.is_file()} == before
    replaced = run_inprocess("reports", ["merge", str(tmp_path / "r" / "base"), str(tmp_path / "r" / "s1"), str(tmp_path / "r" / "s2"),
                                         "--replace"], cache_dir)
    assert replaced.returncode == 0, replaced.output
    merged = read_cases(tmp_path / "r" / "base" / CASES_FILE).records
    shards = read_cases(tmp_path / "r" / "s1" / CASES_FILE).records + read_cases(tmp_path / "r" / "s2" / CASES_FILE).records
    assert sorted(r.case_id for r in merged) == sorted(r.case_id for r in shards)
    assert not [p for p in tmp_path.joinpath("r").iterdir() if p.name.startswith(".")]  # no temporary folder left


RUN_FILES = (RUN_FILE, CASES_FILE, SUMMARY_FILE, SELECTION_FILE)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.sampled_from(RUN_FILES), content=st.one_of(
    st.binary(max_size=300),
    st.text(max_size=300).map(str.encode),
    st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                 lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
                 max_leaves=20).map(lambda value: json.dumps(value).encode()),
))
def test_any_bytes_in_any_run_file_give_records_or_one_clear_line(tmp_path: Path, name: str, content: bytes):
    """The reader never lets an exception other than its own one-line RunFileError escape."""
    folder = tmp_path / "run"
    folder.mkdir(exist_ok=True)
    for other in RUN_FILES:
        (folder / other).unlink(missing_ok=True)
    (folder / name).write_bytes(content)
    for lines in ([content + b"\n" + content], [content]):
        (folder / name).write_bytes(b"".join(lines))
        try:
            read_run_config(folder)
            read_cases(folder / CASES_FILE)
            read_selection(folder)
            read_summary(folder)
        except RunFileError as exc:
            message = str(exc)
            assert "\n" not in message and message.startswith(str(folder)), message
