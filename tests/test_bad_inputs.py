"""The bad-input catalogue: every input a user can get wrong gives one clear line, never a traceback, never a green run.

Each row is one bad input: what to set up, the command, the exit status, and
the line the user must see (naming the option, file or record, and saying
what to do). Classes (README, "Troubleshooting"): options, dataset files,
prompt files, hyper-parameter files, the statistics corpus, the results
folder, the generator, the report and the contract checker.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import REPO, run_inprocess, run_subprocess, suite_args

PUBLISHED_SPLITS = ("coverage_edit.json", "reverse_edit.json", "composite_edit.json", "easy.json", "hard.json")


@dataclass
class Bad:
    id: str
    args: list[str]  # {data}, {tmp}, {hp} are replaced; the command is pytest suites/ unless `tool` says otherwise
    expect: str  # a substring of one line of the output
    status: int | tuple[int, ...] = (1, 2, 4)  # exit status: never 0
    setup: Callable[[Path, Path], None] | None = None  # (dataset folder, tmp folder)
    tool: str = "pytest"  # pytest | generate | reports | check
    tiny_run: bool = False  # the run loads a tiny model (the error is recorded per case)
    subprocess: bool = False  # run in a new process: the rows that check the line crosses a process boundary as it is


def mutate(split_file: str, change: Callable[[list], object]) -> Callable[[Path, Path], None]:
    def setup(data: Path, _tmp: Path) -> None:
        path = data / split_file
        records = json.loads(path.read_text(encoding="utf-8"))
        change(records)
        path.write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")
    return setup


def write(name: str, content: str | bytes) -> Callable[[Path, Path], None]:
    def setup(data: Path, tmp: Path) -> None:
        target = (data if name.endswith(".json") and not name.startswith("tmp/") else tmp) / name.removeprefix("tmp/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return setup


def hparams(change: Callable[[dict], None], method: str = "rome", key: str = "tiny-gpt2") -> Callable[[Path, Path], None]:
    def setup(_data: Path, tmp: Path) -> None:
        values = json.loads((REPO / "editors" / "hparams" / method / f"{key}.json").read_text())
        change(values)
        (tmp / "hp.json").write_text(json.dumps(values, allow_nan=True), encoding="utf-8")
    return setup


def python_without_packages(path: Path) -> None:
    """A Python that starts without site-packages, as a remote machine's Python without the harness (or pytest)."""
    path.write_text(f'#!/bin/sh\nexec {sys.executable} -S "$@"\n')
    path.chmod(0o755)


def first_edit(records: list) -> dict:
    return records[0]["edit"]


def _set(obj: dict, key: str, value: object) -> None:
    obj[key] = value


CATALOGUE: list[Bad] = [
    # ------------------------------------------------------------------ options
    Bad("editor-unknown", ["--editor", "romeo"], "--editor 'romeo': unknown editor (known: alphaedit, emmet, ft, grace, ike, lora, memit, mend, r-rome, rome, wise",
        subprocess=True),
    Bad("editor-module-missing", ["--editor", "nosuch_pkg.editing:X"], "--editor 'nosuch_pkg.editing:X': cannot import module"),
    Bad("editor-class-missing", ["--editor", "editors.rome:NotThere"], "module 'editors.rome' has no 'NotThere'"),
    Bad("editor-not-an-editor", ["--editor", "pitfalls_editkit.facts:Edit"], "is not a subclass of pitfalls_editkit.Editor"),
    Bad("limit-negative", ["--limit", "-1"], "--limit -1: selects no case"),
    Bad("limit-zero", ["--limit", "0"], "--limit 0: selects no case; give 1 or more"),
    Bad("device-unknown", ["--device", "gpu"], "--device 'gpu': expected auto, cpu, cuda or cuda:N"),
    Bad("device-bad-index", ["--device", "cuda:x"], "--device 'cuda:x': expected auto, cpu, cuda or cuda:N"),
    Bad("dtype-unknown", ["--dtype", "float8"], "--dtype 'float8': expected one of float32, float16, bfloat16"),
    Bad("stats-tokens-zero", ["--stats-tokens", "0"], "--stats-tokens 0: must be at least 1"),
    Bad("stats-tokens-negative", ["--stats-tokens", "-5"], "--stats-tokens -5: must be at least 1"),
    Bad("hparams-missing-file", ["--hparams", "{tmp}/nope.json"], "/nope.json: no such file"),
    Bad("run-name-path", ["--run-name", "a/b"], "--run-name 'a/b': give a folder name (no path separators)"),
    Bad("shard-beyond-count", ["--shard", "4/3"], "--shard '4/3': expected K/N with 1 <= K <= N, e.g. --shard 2/8"),
    Bad("shard-not-a-fraction", ["--shard", "half"], "--shard 'half': expected K/N with 1 <= K <= N"),
    Bad("case-batch-zero", ["--case-batch", "0"], "--case-batch 0: give K >= 1 cases worked out together"),
    Bad("case-batch-in-a-chain", ["--case-batch", "4", "--sequential"], "--case-batch: in --sequential mode every edit is made"),
    Bad("resume-without-run-name", ["--resume"], "--resume: give the --run-name of the run to go on with"),
    Bad("resume-a-chain", ["--resume", "--run-name", "r", "--sequential"], "--resume: a --sequential chain depends on every earlier edit"),
    Bad("results-dir-is-file", ["--results-dir", "{tmp}/afile"], "/afile: is a file, not a folder", setup=write("tmp/afile", "x")),
    Bad("model-missing-folder", ["--model", "/no/such/model"], "--model /no/such/model: no such folder"),
    Bad("model-folder-without-config", ["--model", "{tmp}", "-m", "easy", "--limit", "1"], "folder has no config.json", status=1),
    Bad("dataset-dir-missing", ["--dataset-dir", "{tmp}/nowhere"], "/nowhere: no such folder"),
    Bad("dataset-dir-empty", ["--dataset-dir", "{tmp}/empty"], "holds none of the case files",
        setup=lambda data, tmp: (tmp / "empty").mkdir()),
    Bad("tx-path-outside-rsync-roots", ["--tx", "popen//chdir={tmp}/remote", "--rsyncdir={tmp}", "--dist", "load"],
        "which xdist sends to the remote workers only as an absolute path inside an --rsyncdir folder"),
    Bad("tx-worker-cannot-start", ["--tx", "2*popen//python={tmp}/python", "--dist", "load"],
        # gw0 or gw1: whichever worker's failure reaches the controller first names itself
        "(local) could not start: ModuleNotFoundError: No module named '_pytest'. Install the harness",
        setup=lambda data, tmp: python_without_packages(tmp / "python")),
    Bad("hparams-set-no-equals", ["--hparams-set", "rank"], "--hparams-set 'rank': expected KEY=VALUE"),
    Bad("hparams-set-unknown-key", ["--hparams-set", "nosuch=1", "-m", "easy", "--limit", "1"],
        "--hparams-set nosuch: ROMEHyperParams has no such key", status=1),
    Bad("sequential-negative", ["--sequential", "-2"], "--sequential -2: give N >= 1 cases per segment"),
    Bad("retention-every-negative", ["--sequential", "--retention-every", "-1"], "--retention-every -1 / --retention-sample 20"),
    Bad("stats-dir-is-file", ["--stats-dir", "{tmp}/afile"], "/afile: is a file; give the folder that holds <model>/<dataset>_stats/",
        setup=write("tmp/afile", "x")),
    # ------------------------------------------------------------------ the statistics corpus
    Bad("corpus-hf-folder-no-dataset", ["--stats-corpus", "hf:{tmp}/hfdata"], "/hfdata as a dataset",
        setup=lambda data, tmp: (tmp / "hfdata").mkdir()),
    Bad("corpus-missing", ["--stats-corpus", "{tmp}/corpus.txt"], "neither 'gensim-wiki', nor hf:NAME[:CONFIG] / hf:FOLDER, nor an existing file"),
    Bad("corpus-empty", ["--stats-corpus", "{tmp}/corpus.txt"], "/corpus.txt: holds no text", setup=write("tmp/corpus.txt", "\n\n")),
    Bad("corpus-not-utf8", ["--stats-corpus", "{tmp}/corpus.txt"], "cannot read it as UTF-8 text",
        setup=write("tmp/corpus.txt", b"\xff\xfe\x00bad")),
    Bad("corpus-bad-jsonl", ["--stats-corpus", "{tmp}/corpus.jsonl"], "line 1 is not a JSON object with a 'text' field",
        setup=write("tmp/corpus.jsonl", "[1, 2]\n")),
    Bad("corpus-too-short", ["--stats-corpus", "{tmp}/corpus.txt"], "too short: no paragraph has 8 words or more",
        setup=write("tmp/corpus.txt", "Only four words here.\n\nAnd three more.")),
    # ------------------------------------------------------------------ dataset files
    Bad("case-file-not-json", [], "easy.json: not valid JSON", setup=write("easy.json", "[{"), subprocess=True),
    Bad("case-file-not-utf8", [], "easy.json: not UTF-8 text", setup=write("easy.json", b"[\"\xff\"]")),
    Bad("case-file-empty-list", [], "easy.json: holds no cases (an empty list); add cases or remove the file",
        setup=write("easy.json", "[]")),
    Bad("case-file-object", [], "hard.json: expected a list of records, got dict", setup=write("hard.json", "{}")),
    Bad("record-missing-subject", [], "hard.json: record 0: missing 'edit.subject'",
        setup=mutate("hard.json", lambda r: first_edit(r).pop("subject"))),
    Bad("subject-label-empty", [], "easy.json: record 0: 'edit.subject.label' is empty",
        setup=mutate("easy.json", lambda r: _set(first_edit(r)["subject"], "label", ""))),
    Bad("object-label-whitespace", [], "coverage_edit.json: record 0: 'edits[0].new_object.label' is empty",
        setup=mutate("coverage_edit.json", lambda r: _set(r[0]["edits"][0]["new_object"], "label", "   "))),
    Bad("subject-label-3000-chars", [], "'edit.subject.label' is 3000 characters long (at most 500)",
        setup=mutate("easy.json", lambda r: _set(first_edit(r)["subject"], "label", "x" * 3000))),
    Bad("label-with-newline", [], "holds a line break, tab or NUL",
        setup=mutate("hard.json", lambda r: _set(first_edit(r)["new_object"], "label", "New\nYork"))),
    Bad("prompt-without-slot", [], "prompt template 'The capital of France is' must contain '{}' exactly once (found 0)",
        setup=mutate("easy.json", lambda r: _set(first_edit(r)["relation"], "prompt", "The capital of France is"))),
    Bad("prompt-two-slots", [], "must contain '{}' exactly once (found 2)",
        setup=mutate("reverse_edit.json", lambda r: _set(r[0]["edits"][0]["relation"], "prompt", "{} and {} are"))),
    Bad("type-in-wrong-file", [], "coverage_edit.json: record 0: type 'reverse' found in the coverage file",
        setup=mutate("coverage_edit.json", lambda r: _set(r[0], "type", "reverse"))),
    Bad("new-object-is-true-object", [], "edit.new_object", setup=mutate(
        "easy.json", lambda r: _set(first_edit(r), "new_object", r[0]["true_objects"][-1]))),
    Bad("composite-prerequisites-out-of-range", [], "composite_edit.json: record 0: 'prerequisites' [99] do not index 'triples'",
        setup=mutate("composite_edit.json", lambda r: _set(r[0], "prerequisites", [99]))),
    Bad("relation-not-in-prompts", [], "unknown relation P99999", setup=mutate(
        "hard.json", lambda r: _set(first_edit(r)["relation"], "id", "P99999"))),
    # ------------------------------------------------------------------ prompt files
    Bad("prompts-file-missing", [], "round_prompts.json: missing (needed by the case files",
        setup=lambda data, tmp: (data / "round_prompts.json").unlink()),
    Bad("prompts-not-a-list", [], "conflict_prompts.json: relation P36: expected a list of prompt strings",
        setup=lambda data, tmp: _edit_json(data / "conflict_prompts.json", lambda p: _set(p, "P36", "{} capital"))),
    Bad("prompts-template-without-slot", [], "round_prompts.json: relation",
        setup=lambda data, tmp: _edit_json(data / "round_prompts.json", lambda p: p[next(iter(p))].append("no slot here"))),
    # ------------------------------------------------------------------ hyper-parameter files (the editor is built on the worker)
    Bad("hparams-steps-zero", ["--hparams", "{tmp}/hp.json"], "hp.json: v_num_grad_steps = 0: must be >= 1", status=1,
        setup=hparams(lambda h: _set(h, "v_num_grad_steps", 0)), tiny_run=True, subprocess=True),
    Bad("hparams-lr-nan", ["--hparams", "{tmp}/hp.json"], "hp.json: v_lr = nan: must be a finite number", status=1,
        setup=hparams(lambda h: _set(h, "v_lr", float("nan"))), tiny_run=True),
    Bad("hparams-unknown-key", ["--hparams", "{tmp}/hp.json"], "hp.json: unknown key(s) v_stepz for ROMEHyperParams", status=1,
        setup=hparams(lambda h: _set(h, "v_stepz", 3)), tiny_run=True),
    Bad("hparams-missing-key", ["--hparams", "{tmp}/hp.json"], "hp.json: missing key(s) v_lr for ROMEHyperParams", status=1,
        setup=hparams(lambda h: h.pop("v_lr")), tiny_run=True),
    Bad("hparams-wrong-type", ["--hparams", "{tmp}/hp.json"], "hp.json: layers should be list[int], got '0'", status=1,
        setup=hparams(lambda h: _set(h, "layers", "0")), tiny_run=True),
    Bad("hparams-not-json", ["--hparams", "{tmp}/hp.json"], "hp.json: cannot read hyper-parameters", status=1,
        setup=write("tmp/hp.json", "{layers: 1"), tiny_run=True),
    Bad("hparams-template-format-spec", ["--hparams", "{tmp}/hp.json"], "must contain '{}' exactly once", status=1,
        setup=hparams(lambda h: _set(h, "rewrite_module_tmp", "transformer.h.{0:>200000000}.mlp.c_proj")), tiny_run=True),
    Bad("hparams-module-not-in-model", ["--hparams", "{tmp}/hp.json"], "which is not a module of the model", status=1,
        setup=hparams(lambda h: _set(h, "rewrite_module_tmp", "model.layers.{}.mlp.down_proj")), tiny_run=True),
    Bad("ft-layers-empty", ["--editor", "ft", "--hparams", "{tmp}/hp.json"], "hp.json: layers is empty; give at least one value",
        status=1, setup=hparams(lambda h: _set(h, "layers", []), method="ft"), tiny_run=True),
    Bad("mend-layer-beyond-model", ["--editor", "mend", "--hparams", "{tmp}/hp.json"], "layers [2, 99]: each must be in -4..3",
        status=1, setup=hparams(lambda h: _set(h, "layers", [2, 99]), method="mend"), tiny_run=True),
    Bad("wise-act-margin-two-values", ["--editor", "wise", "--hparams", "{tmp}/hp.json"],
        "hp.json: act_margin [5.0, 20.0]: give [alpha, beta, gamma]", status=1,
        setup=hparams(lambda h: _set(h, "act_margin", [5.0, 20.0]), method="wise"), tiny_run=True),
    Bad("wise-module-not-in-model", ["--editor", "wise", "--hparams", "{tmp}/hp.json"], "which is not a module of the model",
        status=1, setup=hparams(lambda h: _set(h, "module_tmp", "model.layers.{}.mlp.down_proj"), method="wise"), tiny_run=True),
    Bad("lora-targets-name-nothing", ["--editor", "lora", "--hparams-set", "target_modules=[\"q_proj\"]"],
        "target_modules ['q_proj'] (layers all) name no module of tiny-gpt2; give module names or their last parts", status=1,
        tiny_run=True),
    Bad("ike-k-negative", ["--editor", "ike", "--hparams-set", "k=-1"], "k = -1: must be >= 0", status=1, tiny_run=True),
    Bad("ike-more-demonstrations-than-edits", ["--editor", "ike", "--hparams-set", "k=50"],
        "IKE needs 51 dataset edits unrelated to the edits in force for 50 demonstrations, found", status=1, tiny_run=True),
    Bad("grace-with-mle", ["--editor", "grace", "--mle"], "editor 'grace' cannot edit a batch (supports_batch is False)"),
    Bad("general-ability-unknown", ["--general-ability", "bleu"], "--general-ability 'bleu': unknown measure"),
    Bad("general-every-zero", ["--general-every", "0"], "--general-every 0: give K >= 1 edits between measurements"),
    Bad("general-ability-unknown-task", ["--general-ability", "lm-eval:no_such_task_anywhere"],
        "lm-eval knows no task 'no_such_task_anywhere'", status=1, tiny_run=True),
    Bad("general-ability-text-too-short", ["--general-ability", "perplexity:{tmp}/short.txt"],
        "fewer than one window (128); give a longer source", status=1, tiny_run=True,
        setup=write("tmp/short.txt", "Far fewer words than one window of the model holds, in any tokenizer at all.\n")),
    Bad("generation-zero-tokens", ["--generation", "0"], "--generation 0: give N >= 1 new tokens a generated answer may have"),
    Bad("generation-with-case-batch", ["--generation", "--case-batch", "4"], "--generation runs cases one at a time: drop --case-batch"),
    # ------------------------------------------------------------------ the results folder
    Bad("results-dir-under-a-file", ["--results-dir", "{tmp}/afile/results"], "cannot write the run folder",
        setup=write("tmp/afile", "x"), tiny_run=True),
    Bad("results-file-is-a-device", ["--results-dir", "{tmp}/r", "--run-name", "full"], "cases.jsonl: not a regular file",
        setup=lambda data, tmp: _device_run_folder(tmp / "r" / "full"), tiny_run=True),
    Bad("results-file-is-a-pipe", ["--results-dir", "{tmp}/r", "--run-name", "pipe"], "cases.jsonl: is a pipe or socket, not a file",
        setup=lambda data, tmp: _pipe_run_folder(tmp / "r" / "pipe"), tiny_run=True),
    Bad("run-folder-of-another-run", ["--results-dir", "{tmp}/r", "--run-name", "old"], "holds a run with editor='memit', this one has "
        "editor='rome'; choose another --run-name", setup=lambda data, tmp: _other_run(tmp / "r" / "old"), tiny_run=True),
    # ------------------------------------------------------------------ the generator
    Bad("generate-rules-not-utf8", ["{tmp}/out", "--triples", "{tmp}/t.jsonl", "--relations", "{tmp}/rel.json", "--rules",
                                    "{tmp}/rules.json"], "rules.json: not UTF-8 text", tool="generate",
        setup=lambda data, tmp: _graph_files(tmp, rules=b"\xff\xfe{}")),
    Bad("generate-out-is-file", ["{tmp}/afile"], "afile: exists and is a file; give a folder", tool="generate",
        setup=write("tmp/afile", "x"), subprocess=True),
    Bad("generate-unknown-relation", ["{tmp}/out", "--triples", "{tmp}/t.jsonl", "--relations", "{tmp}/rel.json", "--rules",
                                      "{tmp}/rules.json"], "relation(s) P999 have no entry in --relations", tool="generate",
        setup=lambda data, tmp: _graph_files(tmp, extra_triple=("P999",))),
    Bad("generate-two-labels", ["{tmp}/out", "--triples", "{tmp}/t.jsonl", "--relations", "{tmp}/rel.json", "--rules",
                                "{tmp}/rules.json"], "t.jsonl: line 3: entity Q1 has two labels: 'France' and 'Frankreich'",
        tool="generate", setup=lambda data, tmp: _graph_files(tmp, relabel=True)),
    Bad("generate-triples-without-rules", ["{tmp}/out", "--triples", "{tmp}/t.jsonl"], "--triples needs --relations and --rules too",
        tool="generate", setup=lambda data, tmp: _graph_files(tmp)),
    Bad("generate-max-cases-negative", ["{tmp}/out", "--max-cases", "-1"], "--max-cases -1: give 0 (all) or more", tool="generate"),
    # ------------------------------------------------------------------ the report and the checker
    Bad("report-not-a-run-folder", ["{tmp}"], "no cases.jsonl (not a results folder of the harness)", tool="reports",
        subprocess=True),
    Bad("merge-not-a-run-folder", ["merge", "{tmp}/merged", "{tmp}"], "no cases.jsonl (not a run folder of the harness)",
        tool="reports"),
    Bad("check-unknown-editor", ["nosuch"], "error: --editor 'nosuch': unknown editor", tool="check", subprocess=True),
    Bad("check-model-missing", ["rome", "--model", "/no/such/model"], "--model /no/such/model", tool="check"),
]


def _edit_json(path: Path, change: Callable[[dict], object]) -> None:
    data = json.loads(path.read_text(encoding="utf-8"))
    change(data)
    path.write_text(json.dumps(data), encoding="utf-8")


def _device_run_folder(run: Path) -> None:
    """A run folder whose cases.jsonl is /dev/full, a device: reading it back would never end. (A disk that fills up
    mid-run: tests/test_faults.py.)"""
    run.mkdir(parents=True)
    (run / "cases.jsonl").symlink_to("/dev/full")


def _pipe_run_folder(run: Path) -> None:
    """A run folder whose cases.jsonl is a named pipe: opening it for writing would wait for a reader forever."""
    run.mkdir(parents=True)
    os.mkfifo(run / "cases.jsonl")


def _other_run(run: Path) -> None:
    run.mkdir(parents=True)
    requested = {"model": "tiny-gpt2", "editor": "memit", "mle": False, "seed": 0, "dataset_dir": None, "limit": 1,
                 "dtype": "float32", "hparams": None, "stats_corpus": "gensim-wiki", "stats_tokens": 5000}
    (run / "run.json").write_text(json.dumps({"requested": requested}), encoding="utf-8")
    (run / "cases.jsonl").write_text('{"case_id": "easy-0000-x", "benchmark": "round", "split": "easy", "index": 0, "group": "P1"}\n')


def _graph_files(tmp: Path, rules: bytes | None = None, extra_triple: tuple = (), relabel: bool = False) -> None:
    triples = [({"id": "Q1", "label": "France"}, "P36", {"id": "Q2", "label": "Paris"}),
               ({"id": "Q3", "label": "Italy"}, "P36", {"id": "Q4", "label": "Rome"})]
    if relabel:
        triples.append(({"id": "Q1", "label": "Frankreich"}, "P36", {"id": "Q2", "label": "Paris"}))
    if extra_triple:
        triples.append(({"id": "Q5", "label": "Spain"}, extra_triple[0], {"id": "Q6", "label": "Madrid"}))
    (tmp / "t.jsonl").write_text("".join(json.dumps({"subject": s, "relation": r, "object": o}) + "\n" for s, r, o in triples))
    relation = {"label": "capital", "prompt": "The capital of {} is", "query": "What is the capital of {}?",
                "paraphrases": ["{}'s capital is"]}
    (tmp / "rel.json").write_text(json.dumps({"P36": relation}))
    (tmp / "rules.json").write_bytes(rules if rules is not None else json.dumps({"coverage": ["P36"]}).encode())


def command(bad: Bad, data: Path, tmp: Path) -> list[str]:
    """The row's arguments for its tool (``pytest suites/`` with a tiny model unless the row says otherwise)."""
    args = [a.format(data=data, tmp=tmp) for a in bad.args]
    if bad.tool != "pytest":
        return args
    extra = [] if "--dataset-dir" in args else ["--dataset-dir", str(data)]
    if bad.tiny_run and "-m" not in args:
        extra += ["-m", "easy", "--limit", "1"]
    return suite_args(None, tmp / "results", *extra, *args)


@pytest.fixture()
def dataset_copy(published: Path, tmp_path: Path) -> Path:
    """The first 2 cases of every split of the published GPT2-XL data and its prompt files."""
    data = tmp_path / "data"
    data.mkdir()
    for name in PUBLISHED_SPLITS:
        records = json.loads((published / "GPT2-XL" / name).read_text(encoding="utf-8"))[:2]
        (data / name).write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")
    for name in ("conflict_prompts.json", "round_prompts.json"):
        (data / name).write_text((published / "GPT2-XL" / name).read_text(encoding="utf-8"), encoding="utf-8")
    return data


def test_the_catalogue_is_large_and_its_ids_unique():
    assert len(CATALOGUE) >= 40 and len({b.id for b in CATALOGUE}) == len(CATALOGUE)


@pytest.mark.parametrize("bad", [pytest.param(b, marks=pytest.mark.slow) if b.tiny_run else b for b in CATALOGUE],
                         ids=[b.id for b in CATALOGUE])  # rows that load a model and run cases: the full loop
def test_bad_input_is_one_clear_line(bad: Bad, dataset_copy: Path, tmp_path: Path, published: Path, cache_dir: Path):
    work = tmp_path / "work"
    work.mkdir()
    if bad.setup:
        bad.setup(dataset_copy, work)
    run = run_subprocess if bad.subprocess else run_inprocess
    proc = run(bad.tool, command(bad, dataset_copy, work), cache_dir)
    output = proc.output
    statuses = bad.status if isinstance(bad.status, tuple) else (bad.status,)
    assert proc.returncode in statuses, f"exit {proc.returncode}\n{output[-3000:]}"
    assert "Traceback" not in output and "INTERNALERROR" not in output, output[-3000:]
    assert any(bad.expect in line for line in output.splitlines()), f"expected a line with {bad.expect!r}:\n{output[-3000:]}"
