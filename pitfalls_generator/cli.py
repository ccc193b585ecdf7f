"""Generate a dataset folder in the published format: ``python -m pitfalls_generator.cli OUT [options]``.

Sources of facts (one of):

* the geography graph built from the ``pyworldatlas`` package (default);
* ``--triples FILE --relations FILE --rules FILE``: a user's own graph;
* ``--from-published DIR``: the triples, prompts and rules inside published-format files.

``--filter-model NAME`` keeps only cases whose facts that model knows
(pitfalls_generator/known.py). The folder gets the five split files, both
prompt files and ``generation.json`` (source, licences, seed, counts, filter
report). The suites use :func:`default_dataset_dir` when no ``--dataset-dir`` is given.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from pitfalls_benchmark.datasets import DatasetError, load_dataset
from pitfalls_benchmark.splits import BENCHMARKS, ROUND_SPLITS, SPLITS
from pitfalls_editkit.cache import default_cache_dir, locked
from pitfalls_editkit.folders import overlaps
from pitfalls_generator.cases import GenerationSettings, generate_cases
from pitfalls_generator.closeness import SUMMARY as CLOSENESS_SUMMARY
from pitfalls_generator.graph import KnowledgeGraph, read_triples_file
from pitfalls_generator.schema import RelationSpec, Rules, check_rules, load_relations, load_rules

MANIFEST_FILE = "generation.json"
GENERATOR_VERSION = 2  # bump when the same inputs would give other cases (2: cases in shuffled order)


@dataclass(frozen=True)
class Source:
    """Where the facts come from: ``geography``, ``triples`` or ``published``."""

    kind: str = "geography"
    triples: str | None = None
    relations: str | None = None
    rules: str | None = None
    published: str | None = None

    def load(self) -> tuple[KnowledgeGraph, dict[str, RelationSpec], Rules]:
        if self.kind == "geography":
            from pitfalls_generator.geography import build_geography_graph, geography_files

            relations_file, rules_file = geography_files()
            relations = load_relations(relations_file)
            return build_geography_graph(), relations, load_rules(rules_file, relations)
        if self.kind == "triples":
            if not (self.triples and self.relations and self.rules):
                raise DatasetError("--triples needs --relations and --rules too")
            relations = load_relations(self.relations)
            graph = read_triples_file(self.triples)
            unknown = sorted({t.relation for t in graph.triples} - set(relations))
            if unknown:
                raise DatasetError(f"--triples {self.triples}: relation(s) {', '.join(unknown[:5])} have no entry in "
                                   f"--relations {self.relations}; add their prompts or drop those triples")
            return graph, relations, load_rules(self.rules, relations)
        if self.kind == "published":
            from pitfalls_generator.from_published import read_published

            graph, relations, rules = read_published(self.published)
            check_rules(rules, relations, str(self.published))
            return graph, relations, rules
        raise DatasetError(f"unknown source {self.kind!r}")


def write_dataset(out_dir: Path, records: dict[str, list[dict]], relations: dict[str, RelationSpec], manifest: dict) -> None:
    """The split files, the prompt files of the relations they use, then the manifest."""
    out_dir.mkdir(parents=True, exist_ok=True)
    used: dict[str, set[str]] = {"conflict": set(), "round": set()}
    for split, split_records in records.items():
        if not split_records:  # a split the rules gave no case for has no file (an empty case file is an error)
            (out_dir / SPLITS[split].file).unlink(missing_ok=True)  # nor one left from an earlier generation here
            continue
        (out_dir / SPLITS[split].file).write_text(json.dumps(split_records, ensure_ascii=False, indent=1), encoding="utf-8")
        for rec in split_records:
            if split in ROUND_SPLITS:
                used["round"].add(rec["edit"]["relation"]["id"])
            else:
                used["conflict"] |= {x["relation"]["id"] for x in rec["triples"] + rec["edits"]}
    for kind, name in ((b.name, b.prompts_file) for b in BENCHMARKS.values()):
        prompts = {rid: list(relations[rid].paraphrases) for rid in sorted(used[kind])}
        (out_dir / name).write_text(json.dumps(prompts, ensure_ascii=False, indent=1), encoding="utf-8")
    (out_dir / MANIFEST_FILE).write_text(json.dumps(manifest, ensure_ascii=False, indent=1), encoding="utf-8")


def generate_dataset(out_dir: Path, source: Source, settings: GenerationSettings, known_filter=None) -> dict:
    """Generate, optionally filter, write; returns the manifest. ``known_filter(records) -> (records, report)``."""
    graph, relations, rules = source.load()
    records, available = generate_cases(graph, relations, rules, settings)
    report = None
    if known_filter is not None:
        records, report = known_filter(records)
    manifest = {
        "generator": "pitfalls_generator.cli", "generator_version": GENERATOR_VERSION,
        "source": asdict(source), "fact_sources": graph.sources, "seed": settings.seed, "max_cases": settings.max_cases,
        "graph": {"entities": len(graph.entities), "triples": len(graph.triples)},
        "rules": {"coverage": list(rules.coverage), "reverse": [r.text for r in rules.reverse],
                  "composite": [r.text for r in rules.composite], "round": list(rules.round)},
        "available": available, "generated": {split: len(r) for split, r in records.items()},
        "counts": {split: len(r) for split, r in records.items()},
        "knowledge_filter": report.as_dict() if report else None,
        "round_closeness": CLOSENESS_SUMMARY,
    }
    write_dataset(out_dir, records, relations, manifest)
    return manifest


def default_dataset_dir(cache_dir: Path | None = None) -> Path:
    """The geography dataset (seed 0, 300 cases per split), generated once into the cache."""
    from pitfalls_generator.geography import atlas_version

    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    folder = cache_dir / "datasets" / f"geography-v{GENERATOR_VERSION}-pyworldatlas{atlas_version()}-seed0"
    with locked(folder):
        if not (folder / MANIFEST_FILE).is_file():
            tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=folder.name + "."))
            try:
                from pitfalls_editkit.progress import step

                with step(f"generating the geography dataset into {folder} (once)"):
                    generate_dataset(tmp, Source(), GenerationSettings())
                if folder.exists():
                    shutil.rmtree(folder)
                os.replace(tmp, folder)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    return folder


def _model_filter(args: argparse.Namespace):
    import torch

    from pitfalls_editkit.models import load_model, resolve_device
    from pitfalls_editkit.scoring import Scorer
    from pitfalls_generator.known import filter_known

    loaded = load_model(args.filter_model, resolve_device(args.device), args.dtype, cache_dir=Path(args.cache_dir) if args.cache_dir else None)
    scorer = Scorer(loaded.model, loaded.tokenizer)

    def known(records):
        with torch.no_grad():
            return filter_known(records, scorer, args.filter_model)

    return known


def input_inside(out: Path, inputs: dict[str, str | None]) -> str | None:
    """Why ``out`` overlaps one of the inputs (the folder is, holds or lies inside it), or None."""
    for option, value in inputs.items():
        if value and overlaps(out, value):
            return f"is, holds or lies inside the input of {option} {value}"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pitfalls_generator", description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", help="folder to write (created; files in it are replaced)")
    parser.add_argument("--triples", help="a user's graph: JSON lines or TSV (see pitfalls_generator/graph.py)")
    parser.add_argument("--relations", help="relations file: prompts and 10 paraphrases per relation")
    parser.add_argument("--rules", help="rules file: coverage, reverse, composite and round rules")
    parser.add_argument("--from-published", metavar="DIR", help="take facts, prompts and rules from published-format files")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-cases", type=int, default=300, help="at most this many cases per split (0: all)")
    parser.add_argument("--filter-model", help="keep only cases whose facts this model knows (a preset, folder or hub id)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--cache-dir", default=None)
    args = parser.parse_args(argv)
    if args.from_published and args.triples:
        parser.error("--from-published and --triples exclude each other")
    source = (Source("published", published=args.from_published) if args.from_published
              else Source("triples", args.triples, args.relations, args.rules) if args.triples else Source())
    settings = GenerationSettings(seed=args.seed, max_cases=args.max_cases or None)
    out = Path(args.out_dir)
    if out.exists() and not out.is_dir():
        print(f"error: {out}: exists and is a file; give a folder to write the dataset into", file=sys.stderr)
        return 2
    if args.max_cases < 0:
        parser.error(f"--max-cases {args.max_cases}: give 0 (all) or more")
    overlap = input_inside(out, {"--from-published": args.from_published, "--triples": args.triples,
                                 "--relations": args.relations, "--rules": args.rules})
    if overlap:
        print(f"error: {out}: {overlap}; write the dataset into another folder (its files would be replaced)", file=sys.stderr)
        return 2
    try:
        manifest = generate_dataset(Path(args.out_dir), source, settings, _model_filter(args) if args.filter_model else None)
        load_dataset(args.out_dir)  # what we wrote must read back
    except DatasetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: {args.out_dir}: cannot write the dataset ({exc.strerror or exc}); choose a writable folder", file=sys.stderr)
        return 2
    print(json.dumps({"out_dir": args.out_dir, "counts": manifest["counts"], "available": manifest["available"],
                      "knowledge_filter": manifest["knowledge_filter"]}, indent=1, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
