"""The case generator: properties on random graphs, the geography graph, readers, the CLI, the knowledge filter."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pitfalls_benchmark.datasets import DatasetError, load_dataset
from pitfalls_editkit.facts import Entity, Relation
from pitfalls_generator.cases import MAX_TRUE_OBJECTS, MIN_TRUE_OBJECTS, GenerationSettings, generate_cases
from pitfalls_generator.cli import MANIFEST_FILE, Source, generate_dataset, write_dataset
from pitfalls_generator.closeness import closeness_distances
from pitfalls_generator.graph import KnowledgeGraph, read_triples_file
from pitfalls_generator.schema import RelationSpec, load_relations, parse_rules
from tests.helpers import REPO

RELATION_IDS = ("R1", "R2", "R3", "R4")
RULES = parse_rules({"coverage": ["R1", "R2"], "reverse": ["R1>R2", "R3>R3"], "composite": ["R1&R2>R3"], "round": ["R3", "R4"]}, "test")
RELATIONS = {
    rid: RelationSpec(Relation(rid, f"The {rid} of {{}} is", f"What is the {rid} of {{}}?", rid), tuple(f"{{}} has {rid} no. {i}" for i in range(10)))
    for rid in RELATION_IDS
}


def ids(edit_or_triple: dict) -> tuple[str, str, str]:
    return edit_or_triple["subject"]["id"], edit_or_triple["relation"]["id"], edit_or_triple["object"]["id"]


def check_case(split: str, record: dict, graph: KnowledgeGraph) -> None:
    """The clash each split promises, and that no new object is a true object."""
    if split in ("easy", "hard"):
        s, r, o = ids(record["edit"])
        true = {t["id"] for t in record["true_objects"]}
        assert true == graph.objects(s, r) and MIN_TRUE_OBJECTS <= len(true) <= MAX_TRUE_OBJECTS
        assert o in true and record["edit"]["new_object"]["id"] not in true
        assert record["type"] == f"1-{len(true)}@{r}"
        return
    first, second = record["edits"]
    for t in record["triples"]:
        assert graph.has(*ids(t))
    for e in (first, second):
        assert e["new_object"]["id"] not in graph.objects(e["subject"]["id"], e["relation"]["id"])
        assert e["new_object"]["id"] != e["object"]["id"]
    (s, r, o), o1 = ids(first), first["new_object"]["id"]
    if split == "coverage":
        assert ids(second) == (s, r, o1) and graph.objects(s, r) == {o}
    elif split == "reverse":
        forward, inverse = record["rule"].split(">")
        assert r == forward and graph.has(o, inverse, s)
        assert ids(second) == (o1, inverse, s) and second["new_object"]["id"] != s
    else:
        (a, b), c = record["rule"].split(">")[0].split("&"), record["rule"].split(">")[1]
        t0, t1, t2 = (ids(t) for t in record["triples"])
        assert record["prerequisites"] == [0] and t0[1:] == (a, t1[0]) and t1[1:] == (b, t2[2]) and t2[:2] == (t0[0], c)
        assert ids(first) == t1 and ids(second) == t2
        assert second["true_object"]["id"] == o1 and second["new_object"]["id"] != o1


random_graphs = st.lists(
    st.tuples(st.integers(0, 9), st.sampled_from(RELATION_IDS), st.integers(0, 9)).filter(lambda t: t[0] != t[2]),
    min_size=5, max_size=60,
)


def build_graph(triples) -> KnowledgeGraph:
    graph = KnowledgeGraph()
    for s, r, o in triples:
        graph.add(Entity(f"e{s}", f"Entity <{s}> \"ü\""), r, Entity(f"e{o}", f"Entity <{o}> \"ü\""))
    return graph


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(triples=random_graphs, seed=st.integers(0, 2**16))
def test_every_generated_case_is_well_formed_and_clashes_by_its_rule(triples, seed, tmp_path):
    graph = build_graph(triples)
    records, available = generate_cases(graph, RELATIONS, RULES, GenerationSettings(seed=seed, max_cases=None))
    for split, split_records in records.items():
        assert len(split_records) == available[split]
        for record in split_records:
            check_case(split, record, graph)
    folder = tmp_path / f"seed{seed}"
    write_dataset(folder, records, RELATIONS, {})
    if any(records.values()):
        loaded = load_dataset(folder)
        assert {s: len(c) for s, c in loaded.cases.items()} == {s: len(r) for s, r in records.items() if r}


@settings(max_examples=30, deadline=None)
@given(triples=random_graphs, seed=st.integers(0, 2**16), cap=st.integers(1, 5))
def test_same_seed_same_cases(triples, seed, cap):
    graph = build_graph(triples)
    first = generate_cases(graph, RELATIONS, RULES, GenerationSettings(seed=seed, max_cases=cap))
    again = generate_cases(build_graph(list(reversed(triples))), RELATIONS, RULES, GenerationSettings(seed=seed, max_cases=cap))
    assert first == again


@pytest.fixture(scope="module")
def geography():
    return Source().load()


def test_geography_graph_gives_every_split_with_sources_and_licences(geography):
    graph, relations, rules = geography
    records, available = generate_cases(graph, relations, rules, GenerationSettings(max_cases=None))
    assert all(available[s] >= 100 for s in available), available
    for split, split_records in records.items():
        for record in split_records:
            check_case(split, record, graph)
    assert {r for r in relations} == {"P36", "P1376", "P47", "P17", "P30", "P37"}
    assert all(len(spec.paraphrases) == 10 for spec in relations.values())
    assert any("GeoNames" in s["name"] and s["license"] == "CC BY 4.0" for s in graph.sources)
    labels = [e.label for e in graph.entities.values()]
    assert len(labels) == len(set(labels)), "labels must be unique: scores are per label"
    assert graph.has(*(next(e.id for e in graph.entities.values() if e.label == name) for name in ("France",)), "P36",
                     next(e.id for e in graph.entities.values() if e.label == "Paris"))


def test_the_first_cases_of_a_split_mix_rules_and_relations(geography):
    graph, relations, rules = geography
    records, _ = generate_cases(graph, relations, rules, GenerationSettings())
    assert len({r["rule"] for r in records["reverse"][:10]}) >= 2
    assert {r["edit"]["relation"]["id"] for r in records["easy"][:10]} == {"P47", "P37"}


def test_hard_intermediates_are_nearer_the_true_objects_than_easy_ones(geography):
    graph, relations, rules = geography
    records, _ = generate_cases(graph, relations, rules, GenerationSettings(max_cases=None))
    easy = {(r["edit"]["subject"]["id"], r["edit"]["relation"]["id"]): r for r in records["easy"]}
    hard = {(r["edit"]["subject"]["id"], r["edit"]["relation"]["id"]): r for r in records["hard"]}
    assert easy.keys() == hard.keys()
    for key, h in hard.items():
        s, rel = key
        true = graph.objects(s, rel)
        candidates = [c for c in graph.range(rel) if c not in true and c != s]
        distance = closeness_distances(graph, candidates, true, s)
        assert h["closeness_hops"] == distance[h["edit"]["new_object"]["id"]] == min(distance.values())
        assert easy[key]["closeness_hops"] == max(distance.values()) > h["closeness_hops"]
    # In geography, a hard intermediate border country borders one of the true neighbours.
    france = next(h for (s, r), h in hard.items() if r == "P47" and graph.entities[s].label == "France")
    x = france["edit"]["new_object"]["id"]
    assert graph.objects(x, "P47") & {t["id"] for t in france["true_objects"]}


def test_triples_files_are_read_and_bad_lines_named(tmp_path):
    tsv = tmp_path / "g.tsv"
    tsv.write_text("subject_id\tsubject_label\trelation_id\tobject_id\tobject_label\nQ1\tA\tR1\tQ2\tB\n", encoding="utf-8")
    jsonl = tmp_path / "g.jsonl"
    jsonl.write_text(json.dumps({"subject": {"id": "Q1", "label": "A"}, "relation": "R1", "object": {"id": "Q2", "label": "B"}}) + "\n")
    assert read_triples_file(tsv).triples == read_triples_file(jsonl).triples
    jsonl.write_text('{"subject": {"id": "Q1", "label": "A"}, "relation": "R1"}\n', encoding="utf-8")
    with pytest.raises(DatasetError, match=r"g.jsonl: line 1: not a triple"):
        read_triples_file(jsonl)
    tsv.write_text("s\tl\n", encoding="utf-8")
    with pytest.raises(DatasetError, match=r"g.tsv: line 1: expected the header"):
        read_triples_file(tsv)


def test_relations_file_errors_name_the_relation(tmp_path):
    path = tmp_path / "relations.json"
    path.write_text(json.dumps({"R1": {"label": "x", "prompt": "no slot", "query": "{}?"}}), encoding="utf-8")
    with pytest.raises(DatasetError, match=r"relation R1: template 'no slot' must contain"):
        load_relations(path)


def small_published_copy(published: Path, tmp_path: Path, n: int = 40) -> Path:
    out = tmp_path / "published"
    out.mkdir()
    for path in (published / "GPT2-XL").iterdir():
        data = json.loads(path.read_text(encoding="utf-8"))
        (out / path.name).write_text(json.dumps(data[:n] if isinstance(data, list) else data), encoding="utf-8")
    return out


def test_cli_generates_fresh_cases_from_published_files(published, tmp_path):
    source = small_published_copy(published, tmp_path)
    out = tmp_path / "fresh"
    proc = subprocess.run([sys.executable, "-m", "pitfalls_generator.cli", str(out), "--from-published", str(source), "--seed", "3"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    dataset = load_dataset(out)
    manifest = json.loads((out / MANIFEST_FILE).read_text(encoding="utf-8"))
    assert manifest["seed"] == 3 and manifest["counts"] == {s: len(c) for s, c in dataset.cases.items()}
    assert {r.split(">")[0] for r in manifest["rules"]["reverse"]} <= {"P22", "P185", "P25", "P800"}
    assert dataset.cases["reverse"] and dataset.cases["easy"]


def test_cli_says_what_is_wrong_in_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "pitfalls_generator.cli", str(tmp_path / "x"), "--triples", str(tmp_path / "none.tsv"),
                           "--relations", "r.json", "--rules", "u.json"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ["error: --relations r.json: no such file"]


def test_knowledge_filter_keeps_exactly_the_known_cases(tiny_loader, tmp_path, geography):
    from pitfalls_editkit.scoring import Scorer
    from pitfalls_generator.known import filter_known

    loaded = tiny_loader("tiny-gpt2")
    scorer = Scorer(loaded.model, loaded.tokenizer)
    graph, relations, rules = geography
    records, _ = generate_cases(graph, relations, rules, GenerationSettings(max_cases=8))
    kept, report = filter_known(records, scorer, "tiny-gpt2")
    for split in records:
        assert report.kept[split] + report.dropped[split] == len(records[split])
        kept_ids = [json.dumps(r, sort_keys=True) for r in kept[split]]
        for record in records[split]:
            edit = record.get("edit") or record["edits"][0]
            prompt = edit["relation"]["prompt"].format(edit["subject"]["label"])
            true_score, new_score = scorer.fact_scores([prompt], [edit["object"]["label"], edit["new_object"]["label"]])
            if true_score <= new_score:
                assert json.dumps(record, sort_keys=True) not in kept_ids
    summary = report.as_dict()
    assert sum(v["checked"] for v in summary["known_fraction_per_relation"].values()) > 0
    out = tmp_path / "filtered"
    manifest = generate_dataset(out, Source(), GenerationSettings(max_cases=4), lambda r: filter_known(r, scorer, "tiny-gpt2"))
    assert manifest["knowledge_filter"]["model"] == "tiny-gpt2"
    assert manifest["counts"] == {s: len(c) for s, c in load_dataset(out).cases.items()}
