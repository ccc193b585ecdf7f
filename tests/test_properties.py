"""Property tests: any labels (markup, quotes, RTL marks, braces, emoji, control characters) either load and render
escaped, or are one clear error naming file and record; never a traceback."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from markupsafe import escape

from harness.records import CaseRecord, write_run_config
from pitfalls_benchmark.datasets import DatasetError, load_dataset
from pitfalls_editkit.facts import TemplateError, fill
from reports.render import render_report

NASTY = st.sampled_from(['<script>alert(1)</script>', '" onmouseover="x', "{}", "{0:>99}", "{role}", "{{}}", "\u202eevil", "🙂",
                         "Zürich 東京", "&amp;", "'", "\\", "\x00", "\n", " ", ""])
LABELS = st.one_of(st.text(max_size=40), NASTY, st.lists(NASTY, min_size=1, max_size=4).map("".join))


def round_record(subject: str, old: str, other: str, new: str, prompt: str) -> dict:
    relation = {"id": "P47", "prompt": prompt}
    return {"type": "1-N@P47", "edit": {"subject": {"id": "s", "label": subject}, "relation": relation,
                                        "object": {"id": "o", "label": old}, "new_object": {"id": "n", "label": new}},
            "true_objects": [{"id": "o", "label": old}, {"id": "t", "label": other}]}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(subject=LABELS, old=LABELS, other=LABELS, new=LABELS, prompt=st.one_of(LABELS, LABELS.map(lambda t: t + " {} " + t)))
def test_any_labels_load_exactly_or_are_one_clear_error(subject, old, other, new, prompt):
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        (root / "easy.json").write_text(json.dumps([round_record(subject, old, other, new, prompt)], ensure_ascii=False), encoding="utf-8")
        (root / "round_prompts.json").write_text(json.dumps({"P47": ["{} borders"]}), encoding="utf-8")
        try:
            case = load_dataset(root).cases["easy"][0]
        except DatasetError as exc:
            message = str(exc)
            assert "\n" not in message and message.startswith(str(root))
            return
        assert case.edit.subject.label == subject and case.edit.new_object.label == new
        assert fill(prompt, subject) == prompt.replace("{}", subject, 1)  # every other brace is literal text


@given(template=st.text(max_size=30), subject=st.text(max_size=30))
def test_fill_never_interprets_braces(template, subject):
    try:
        filled = fill(template, subject)
    except TemplateError:
        assert template.count("{}") != 1
        return
    before, after = template.split("{}")
    assert filled == before + subject + after


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(label=LABELS, metric_name=LABELS)
def test_any_text_in_a_run_folder_renders_escaped(tmp_path_factory, label, metric_name):
    run = tmp_path_factory.mktemp("run")
    record = CaseRecord(case_id=f"easy-0000-P47-{label}", benchmark="round", split="easy", index=0, group=label,
                        scores={"true_objects": [label, "x"], "new_object": label, "m0_true": [0.5, 0.1], "m2_true": [0.4, 0.2]},
                        metrics={"Succ": 1.0, "D": 0.1, "IR": 0.5, "FR": 0, "JS": 0.2, metric_name: 0.3},
                        edits=[f"{label} borders [{label} -> y]"], notes=[label], pitfall_message=label)
    (run / "cases.jsonl").write_text(record.to_json() + "\n", encoding="utf-8")
    write_run_config(run, {"model": label, "editor": label, "hparams": {label: label}})
    with open(render_report([run], run / "report.html"), encoding="utf-8", newline="") as page:  # "\r" stays "\r"
        html = page.read()
    if label:
        assert str(escape(label)) in html
    for raw in ("<script>alert(1)</script>", '" onmouseover="x'):
        if raw in label or raw in metric_name:
            assert raw not in html
