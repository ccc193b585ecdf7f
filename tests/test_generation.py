"""Greedy answers (pitfalls_editkit.generation): the same tokens as transformers' greedy generate, batched and
padded; a context editor's context and a module editor's patches are in force while the model generates; what
counts as saying a label."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from editors.grace import GRACE
from harness.executors.workbench import Workbench
from pitfalls_benchmark.datasets import load_dataset
from pitfalls_editkit.contract import EditorSettings
from pitfalls_editkit.generation import Generator, normalise, says, settled
from tests import broken_editors as broken

PROMPTS = ["The capital of France is", "Germany's official language is", "The Eiffel Tower is located in the city of",
           "Apple was founded by"]


def transformers_greedy(loaded, prompts, max_new_tokens):
    tok = loaded.tokenizer
    out = []
    for prompt in prompts:  # one at a time: no padding at all
        ids = torch.tensor([tok(prompt)["input_ids"]])
        generated = loaded.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                          max_new_tokens=max_new_tokens, min_new_tokens=max_new_tokens,
                                          pad_token_id=tok.pad_token_id, eos_token_id=None)
        out.append(tok.decode(generated[0, ids.shape[1]:], skip_special_tokens=True).split("\n")[0])
    return out


@pytest.mark.parametrize("model", ["tiny-llama", "tiny-gpt2", "tiny-gemma3"])
def test_batched_greedy_answers_are_transformers_greedy_answers(tiny_loader, model):
    loaded = tiny_loader(model)
    loaded.tokenizer.eos_token_id, saved = None, loaded.tokenizer.eos_token_id  # no early stop: compare every token
    try:
        ours = Generator(loaded.model, loaded.tokenizer, max_rows=3).answers(PROMPTS, max_new_tokens=6)
    finally:
        loaded.tokenizer.eos_token_id = saved
    assert ours == transformers_greedy(loaded, PROMPTS, 6)


@pytest.mark.parametrize("model", ["tiny-llama", "tiny-gpt2", "tiny-gemma3"])
def test_rows_that_end_early_leave_the_batch_and_the_others_answer_as_they_would_alone(tiny_loader, model):
    loaded = tiny_loader(model)
    tok = loaded.tokenizer
    alone = []
    for prompt in PROMPTS:  # each prompt's 6 greedy tokens, alone and without any stop
        ids = torch.tensor([tok(prompt)["input_ids"]])
        out = loaded.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=6,
                                    min_new_tokens=6, pad_token_id=tok.pad_token_id, eos_token_id=None)
        alone.append(out[0, ids.shape[1]:].tolist())
    stop = alone[0][1]  # taken as the end-of-text token: the first answer ends at its second token
    assert any(stop not in tokens for tokens in alone)  # so the batch goes on without that row
    expected = [tok.decode(t[: t.index(stop)] if stop in t else t, skip_special_tokens=True).split("\n")[0] for t in alone]
    tok.eos_token_id, saved = stop, tok.eos_token_id
    try:
        ours = Generator(loaded.model, tok).answers(PROMPTS, max_new_tokens=6)
    finally:
        tok.eos_token_id = saved
    assert ours == expected


def easy_edits(published: Path, n: int):
    return [case.edit for case in load_dataset(published / "GPT2-XL", splits=("easy",), limit=n).cases["easy"]]


def test_a_context_editors_context_and_a_module_editors_patch_are_in_force_while_the_model_generates(tiny_loader, cache_dir,
                                                                                                   published):
    loaded = tiny_loader("tiny-llama")
    (edit,) = easy_edits(published, 1)
    bench = Workbench.build(broken.Preface(loaded, EditorSettings(cache_dir=cache_dir)))
    generator = Generator(loaded.model, loaded.tokenizer, context=bench.guard.context)
    with bench.guard.case(bench.editor) as case:
        case.apply([edit], seed=0)
        given = bench.guard.context.prompt(edit.prompt)
        assert generator.answers([edit.prompt]) == Generator(loaded.model, loaded.tokenizer).answers([given])
    grace = Workbench.build(GRACE(loaded, EditorSettings(cache_dir=cache_dir)))
    before = generator.answers([edit.prompt], max_new_tokens=4)
    with grace.guard.case(grace.editor) as case:
        case.apply([edit], seed=0)
        during = generator.answers([edit.prompt], max_new_tokens=4)
        first = loaded.tokenizer.decode(loaded.tokenizer(" " + edit.new_object.label, add_special_tokens=False)["input_ids"][:1])
        # the codebook answers at the prompt's last token: the first token is the new object's. The next positions'
        # inputs are the generated tokens', not keys of the codebook, so on this tiny model the rest of the label is
        # not said: what teacher forcing (which feeds the label's tokens) cannot show
        assert during[0].startswith(first) and not says(during[0], edit.new_object.label), during
    assert generator.answers([edit.prompt], max_new_tokens=4) == before != during


@pytest.mark.parametrize(("answer", "label", "said"), [
    (" Paris, the capital", "Paris", True),
    (" Parisian food", "Paris", False),
    (" the United Kingdom.", "United Kingdom", True),
    ("  UNITED   kingdom", "the United Kingdom", True),
    (" New York City", "New York", True),
    (" York", "New York", False),
    ("", "Paris", False),
    (" Ａｐｐｌｅ Inc.", "Apple", True),  # NFKC: full-width letters
])
def test_saying_a_label(answer, label, said):
    assert says(answer, label) is said


# Text pieces that move word boundaries: articles, punctuation, spaces, a combining accent, full-width letters, a
# half-decoded character, pieces that glue onto the word before them.
PIECES = st.sampled_from([" the", " a", "The", " Paris", "Paris", "ian", " New", " York", ",", ".", " ", "  ", "-", "\u0301",
                          "Ｐａｒｉｓ", "\ufffd", "é", " City", "s", "_x", "\t", "Th", "e", "A", "n", " Ger", "many", "Pa",
                          "\u0323", "d", "_", "!"])
LABELS = st.lists(st.sampled_from(["Paris", "New York", "New York City", "the United Kingdom", "York", "a", "", "...", "Parisian"]),
                  min_size=1, max_size=3)


@given(st.lists(PIECES, max_size=8), st.lists(PIECES, max_size=8), LABELS)
def test_once_an_answer_is_settled_no_continuation_changes_whether_it_says_a_label(start, rest, labels):
    """What lets the generator stop a row early (``settle``): the verdicts on the prefix are the full answer's."""
    answer = "".join(start)
    if settled(answer, labels):
        full = answer + "".join(rest)
        assert [says(answer, label) for label in labels] == [says(full, label) for label in labels]


# Whole answers, each cut after every character below: a cut the generator would stop at must say what every
# answer continuing it says.
ANSWERS = [" The Paris of", " the Paris", " Paris, France", " Parisian", " Paris_x", " Germany", " Germ", " German",
           " An apple", " A New York City", " New York City.", " New Yorker", " the United Kingdom.", " United Kingdoms",
           " Thailand", " The", " Pare\u0301", " Pared\u0301\u0323", " ＰＡＲＩＳ", " the the Paris", " a, Paris", " France!"]
ANSWER_LABELS = ["Paris", "Germany", "New York City", "the United Kingdom", "Thailand", "An", "Paré", "France", "Pareḍ"]


def test_every_cut_the_generator_would_stop_at_says_what_each_answer_continuing_it_says():
    for answer in ANSWERS:
        for cut in range(len(answer) + 1):
            prefix = answer[:cut]
            continuing = [a for a in ANSWERS if a.startswith(prefix)]
            for label in ANSWER_LABELS:
                if settled(prefix, [label]):
                    for full in continuing:
                        assert says(prefix, label) == says(full, label), (prefix, full, label)


def test_an_answer_settles_once_its_words_run_past_the_longest_label():
    assert not settled(" Paris", ["Paris"]) and settled(" Paris, France", ["Paris"])  # "Paris" may still become "Parisian"
    assert not settled(" the Paris", ["Paris"]) and settled(" the Paris of", ["Paris"])  # "the" is dropped only before a word
    assert not settled(" New York", ["New York City", "Paris"]) and settled(" New York is big", ["New York City"])
    assert not settled(" Par\ufffd is here", ["Paris"])  # a character whose bytes continue in the next token
    assert settled(" the capital of", ["New York City"]) and not settled(" New Yor", ["New York City"])  # words differ
    assert settled(" New Yorker", ["New York City"])  # "yorker" can no longer become "york"
    assert settled(" Germ", ["France", "Paris"]) and not settled(" Germ", ["Germany"])  # "germ" begins no other label
    assert settled(" Paris,", ["Paris"]) and settled(" Paris ", ["Paris"]) and not settled(" Paris_", ["Paris"])
    assert not settled(" Th", ["Paris"]) and not settled(" An", ["Paris"])  # may become "The Paris", "An Paris"


@pytest.mark.parametrize("model", ["tiny-llama", "tiny-gpt2"])
def test_answers_cut_where_their_verdicts_settle_give_the_full_answers_verdicts(tiny_loader, model):
    loaded = tiny_loader(model)
    generator = Generator(loaded.model, loaded.tokenizer)
    full = generator.answers(PROMPTS, max_new_tokens=8)
    words = sorted({w for answer in full for w in answer.split()})
    labels = [words[0], " ".join(full[0].split()[:2]), "Paris"]  # a word the answers hold, the first answer's start
    cut = generator.answers(PROMPTS, max_new_tokens=8, settle=labels)
    assert all(f.startswith(c) for c, f in zip(cut, full)) and cut != full  # prefixes, and some are shorter
    assert [[says(a, label) for label in labels] for a in cut] == [[says(a, label) for label in labels] for a in full]
    assert any(says(a, labels[1]) for a in cut)  # a verdict that could fail: the first answer says its own start


def test_normalise_drops_a_leading_article_only_when_more_follows():
    assert normalise("The Hague") == "hague" and normalise("The") == "the" and normalise("U.S.A.") == "u s a"


def test_each_case_gets_the_generated_twin_of_its_verdicts_computed_by_the_same_plan(tiny_loader, cache_dir, published,
                                                                                    monkeypatch):
    from harness.executors.single import run_one
    from harness.executors.workbench import Workbench as Bench
    from pitfalls_benchmark.datasets import load_dataset as load

    loaded = tiny_loader("tiny-llama")
    dataset = load(published / "GPT2-XL", limit=1)
    bench = Workbench.build(GRACE(loaded, EditorSettings(cache_dir=cache_dir)), dataset, generation=4)

    def first_object_said_everywhere(self, paraphrases, subject, relation, objects, heard, from_disk=False):
        heard.append(f"{subject} => {objects[0]}")
        return [1.0] + [0.0] * (len(objects) - 1)

    monkeypatch.setattr(Bench, "said", first_object_said_everywhere)
    for case in dataset.all_cases():
        record = run_one(bench, case)
        twin = record.generation_metrics
        if case.split == "coverage":  # m2 scores [e2 new, e1 new]: e2 said -> CS_exp 1; alone: e2 said -> Succ 1
            assert twin == {"Succ": 1, "CS_exp": 1} and record.generation_pitfall is False
        elif case.split in ("reverse", "composite"):  # every scoring step says its first object, so e2 ties e1 at 1
            assert twin["CS_exp"] == 0 and record.generation_pitfall is True
        else:  # m1 says the new object, m2 the old one; no other true object is said before or after
            assert twin == {"Succ": 1.0, "IR": 0.0, "FR": 0} and record.generation_pitfall is False
        assert record.generated and all(" => " in line for line in record.generated)


def test_the_unedited_models_answers_are_generated_once_and_read_from_disk_after(tiny_loader, cache_dir, published, tmp_path,
                                                                                  monkeypatch):
    from harness.executors.single import run_one
    from harness.original_scores import OriginalScores

    loaded = tiny_loader("tiny-llama")
    dataset = load_dataset(published / "GPT2-XL", splits=("easy", "composite"), limit=1)  # each scores the unedited model once
    calls = []
    generate = Generator.answers

    def counted(self, prompts, max_new_tokens=8, settle=()):
        calls.append(len(prompts))
        return generate(self, prompts, max_new_tokens, settle)

    monkeypatch.setattr(Generator, "answers", counted)
    runs = []
    for _ in range(2):  # the second run reads the file anew, as another editor's run or worker does
        originals = OriginalScores(tmp_path / "original.jsonl")
        editor = GRACE(loaded, EditorSettings(cache_dir=cache_dir, hparams_values=(("n_iter", 1),)))  # what it says is not asked
        bench = Workbench.build(editor, dataset, generation=4, original_scores=originals)
        calls.clear()
        runs.append(([run_one(bench, case) for case in dataset.all_cases()], len(calls), originals.hits))
    (first, first_calls, first_hits), (second, second_calls, second_hits) = runs
    assert first_hits == 0 and second_hits >= 2  # the unedited model's answers of both cases come from disk
    assert second_calls == first_calls - 2 and second_calls > 0  # the edited model's answers are generated each time
    for a, b in zip(first, second):
        assert a.generated == b.generated and a.generation_metrics == b.generation_metrics and a.metrics == b.metrics


def test_kept_answers_that_are_torn_foreign_or_not_a_list_of_text_are_generated_again(tmp_path):
    from harness.original_scores import OriginalScores

    prompts = ["ab", "cd"]
    path = tmp_path / "original.jsonl"
    key = OriginalScores.key(prompts, ["greedy answers, at most 4 new tokens"])
    path.write_text("\n".join([json.dumps({"key": key, "answers": ["only one"]}),
                                json.dumps({"key": key, "answers": [1, 2]}),
                                json.dumps({"key": key, "answers": "xy"}),  # a string of two characters: not two answers
                                '{"key": "' + key + '", "answers": ["cut']) + "\n")
    kept = OriginalScores(path)
    assert kept.answers(prompts, 4, lambda: ["A", "B"]) == ["A", "B"] and kept.misses == 1
    again = OriginalScores(path)  # the generated answers were appended and are read back
    assert again.answers(prompts, 4, lambda: pytest.fail("generated again")) == ["A", "B"] and again.hits == 1


@pytest.mark.slow
def test_generation_runs_in_the_suites_and_the_report_shows_both_verdicts_escaped(published, cache_dir, tmp_path):
    from tests.helpers import records, run_pytest, suite_args

    proc = run_pytest(suite_args(published, tmp_path, "--editor", "tests.broken_editors:Preface", "--generation", "3",
                                 "--record-only", "--limit", "1", model="tiny-llama", run_name="gen"), cache_dir)
    assert proc.returncode == 0, proc.output[-3000:]
    lines = records(tmp_path / "gen" / "cases.jsonl")
    assert len(lines) == 5 and all(r["generation_pitfall"] in (True, False) and r["generated"] for r in lines)
    assert "verdicts agree in" in proc.output
    config = __import__("json").loads((tmp_path / "gen" / "run.json").read_text())
    assert config["generation"]["max_new_tokens"] == 3
    html = (tmp_path / "gen" / "report.html").read_text(encoding="utf-8")
    assert "Teacher-forced and generated verdicts" in html and "generated: " in html
