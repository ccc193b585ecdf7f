"""--general-ability: perplexity, the knowledge-graph quiz and a local lm-evaluation-harness task on the edited
model; a large edit moves them and the undo brings back the unedited values exactly; bad specs are one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from editors import make_editor
from harness.executors.workbench import Workbench
from harness.general_ability import AbilityError, GeneralAbility, KnowledgeQuiz, parse_specs
from harness.records import mean_with_interval
from pitfalls_benchmark.datasets import load_dataset
from pitfalls_editkit.contract import EditorSettings
from tests.helpers import records, run_pytest, suite_args

QUESTIONS = [("The capital of France is", ["Paris", "Rome", "Berlin", "Madrid"], 0),
             ("The capital of Italy is", ["Paris", "Rome", "Berlin", "Madrid"], 1),
             ("The capital of Germany is", ["Paris", "Rome", "Berlin", "Madrid"], 2)]


def local_task(folder: Path) -> Path:
    """A local lm-eval task YAML (multiple choice over a JSON-lines file), offline."""
    data = folder / "capitals.jsonl"
    data.write_text("".join(json.dumps({"question": q, "choices": c, "answer": a}) + "\n" for q, c, a in QUESTIONS))
    task = folder / "capitals.yaml"
    task.write_text(f"""task: pitfalls_capitals
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{question}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: answer
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
""")
    return task


@pytest.mark.slow  # lm-eval's task building: about 14 s of the quick loop's 140
def test_a_large_edit_moves_the_general_ability_and_the_undo_brings_back_the_unedited_values_exactly(tiny_loader, cache_dir,
                                                                                                   published, tmp_path):
    pytest.importorskip("lm_eval")
    loaded = tiny_loader("tiny-llama")
    editor = make_editor("ft", loaded, EditorSettings(cache_dir=cache_dir, hparams_values=(("lr", 1.0), ("norm_constraint", 10.0))))
    bench = Workbench.build(editor)
    spec = f"perplexity,kg,lm-eval:{local_task(tmp_path)}"
    ability = GeneralAbility.build(spec, loaded, bench.scorer, tmp_path / "cache", "float32")
    unedited = ability.measure(loaded, bench.scorer)
    assert unedited == ability.unedited  # what was cached is what the unedited model gives
    assert set(unedited) == {"perplexity", "kg", f"lm-eval:{tmp_path / 'capitals.yaml'}:acc"}
    edit = load_dataset(published / "GPT2-XL", splits=("easy",), limit=1).cases["easy"][0].edit
    with bench.guard.case(editor) as case:
        case.apply([edit], seed=0)
        edited = ability.measure(loaded, bench.scorer)
    assert edited["perplexity"] != unedited["perplexity"]  # the edit's cost shows
    assert ability.measure(loaded, bench.scorer) == unedited  # and the undo takes it back, exactly


def test_the_quiz_asks_about_no_entity_the_runs_cases_name(published):
    from pitfalls_editkit.facts import fill
    from pitfalls_generator.geography import build_geography_graph, geography_files
    from pitfalls_generator.schema import load_relations

    graph, relations = build_geography_graph(), load_relations(geography_files()[0])
    subject_of = {fill(relations[t.relation].relation.prompt, graph.entities[t.subject].label): graph.entities[t.subject].label
                  for t in graph.triples if t.relation in relations}
    full = KnowledgeQuiz.build(parse_specs("kg")[0], None)
    # the first 3 questions' subjects and the next 3 questions' choices
    avoid = frozenset([subject_of[p].casefold() for p, _ in full.questions[:3]]
                      + [label.casefold() for _, choices in full.questions[3:6] for label in choices])
    quiz = KnowledgeQuiz.build(parse_specs("kg")[0], None, avoid)
    assert len(quiz.questions) == len(full.questions) and not set(map(str, quiz.questions)) & set(map(str, full.questions[:6]))
    for prompt, choices in quiz.questions:
        assert not {c.casefold() for c in choices} & avoid and subject_of[prompt].casefold() not in avoid, prompt
    dataset = load_dataset(published / "GPT2-XL", splits=("easy", "composite"), limit=2)
    labels = dataset.entity_labels()
    round_case, conflict_case = dataset.cases["easy"][0], dataset.cases["composite"][0]
    assert {e.label.casefold() for e in round_case.true_objects} <= labels  # the round trip's other true objects too
    assert {f.object.label.casefold() for f in conflict_case.triples} <= labels  # and the facts a conflict rests on


def test_a_measures_interval_stays_in_its_range():
    """The quiz is a share of questions and perplexity at least 1; Student's t alone leaves both (three quizzes of 98-100%
    reach 102%); an lm-eval metric's range is not known, so it is not clipped."""
    quiz = mean_with_interval([1.0, 0.98, 1.0], "kg")
    assert quiz["high"] == 1.0 and quiz["low"] < quiz["mean"] < 1.0
    perplexity = mean_with_interval([1.01, 1.02, 3.0], "perplexity:notes.txt")
    assert perplexity["low"] == 1.0 and perplexity["high"] > 3.0
    task = mean_with_interval([1.0, 0.98, 1.0], "lm-eval:arc_easy:acc")
    assert task["high"] > 1.0


@pytest.mark.parametrize(("spec", "message"), [
    ("bleu", "--general-ability 'bleu': unknown measure; give perplexity[:SOURCE], kg or lm-eval:TASK"),
    ("kg:extra", "--general-ability 'kg:extra': kg takes no argument"),
    ("lm-eval", "--general-ability 'lm-eval': name the task"),
    ("lm-eval:/no/such/task.yaml", "--general-ability 'lm-eval:/no/such/task.yaml': no such task file"),
    ("kg,kg", "a measure is named twice"),
])
def test_a_spec_that_cannot_be_measured_is_one_line(spec, message):
    with pytest.raises(AbilityError) as failure:
        parse_specs(spec)
    assert message in str(failure.value)


def test_sources_and_tasks_that_cannot_be_measured_are_one_line(tiny_loader, cache_dir, tmp_path):
    pytest.importorskip("lm_eval")
    loaded = tiny_loader("tiny-llama")
    scorer = Workbench.build(make_editor("ft", loaded, EditorSettings(cache_dir=cache_dir))).scorer
    short = tmp_path / "short.txt"
    short.write_text("A text of fewer words than one window holds, by far, in this tokenizer.\n")
    broken = tmp_path / "broken.yaml"
    broken.write_text("task: [unclosed\n")
    for spec, message in ((f"perplexity:{short}", "fewer than one window (128); give a longer source"),
                          (f"perplexity:{tmp_path / 'none.txt'}", "none.txt"),
                          (f"lm-eval:{broken}", "cannot read the task file"),
                          ("lm-eval:no_such_task_anywhere", "lm-eval knows no task 'no_such_task_anywhere'")):
        with pytest.raises(AbilityError) as failure:
            GeneralAbility.build(spec, loaded, scorer, tmp_path / "cache", "float32")
        assert message in str(failure.value) and "\n" not in str(failure.value), str(failure.value)


@pytest.mark.slow
def test_generation_and_general_ability_in_the_suites_and_the_report(published, cache_dir, tmp_path):
    pytest.importorskip("lm_eval")
    task = local_task(tmp_path)
    proc = run_pytest(suite_args(published, tmp_path, "--editor", "rome", "--record-only", "--limit", "2", "--generation",
                                 "--general-ability", f"perplexity,kg,lm-eval:{task}", model="tiny-llama", run_name="both"),
                      cache_dir)
    assert proc.returncode == 0, proc.output[-3000:]
    lines = records(tmp_path / "both" / "cases.jsonl")
    assert len(lines) == 10 and all(r["general_ability"].keys() == {"perplexity", "kg", f"lm-eval:{task}:acc"} for r in lines)
    assert all(r["generation_pitfall"] in (True, False) for r in lines)
    assert "general ability, perplexity:" in proc.output and "verdicts agree in" in proc.output
    config = json.loads((tmp_path / "both" / "run.json").read_text())
    assert set(config["general_ability"]["unedited"]) == {"perplexity", "kg", f"lm-eval:{task}:acc"}
    html = (tmp_path / "both" / "report.html").read_text(encoding="utf-8")
    assert "General ability: " in html and "Teacher-forced and generated verdicts" in html
    chain = run_pytest(suite_args(published, tmp_path, "--editor", "rome", "--record-only", "--limit", "2", "--sequential",
                                  "--general-ability", "kg", "--general-every", "4", model="tiny-llama", run_name="chain"), cache_dir)
    assert chain.returncode == 0, chain.output[-3000:]
    measured = [r["chain_position"] for r in records(tmp_path / "chain" / "cases.jsonl") if r["general_ability"]]
    assert measured and len(measured) < 10  # at the cases where the chain passed a multiple of 4 edits
    chain_html = (tmp_path / "chain" / "report.html").read_text(encoding="utf-8")
    assert "General ability, kg (not in %; the reference line: the unedited model)" in chain_html  # the lifelong curve
