"""General ability (``--general-ability SPEC[,SPEC...]``): what editing costs the model beyond the edited facts.

A method that avoids every pitfall by damaging the model would look good on the pitfall metrics alone; these
measures say what the edited model still does. Each ``SPEC`` is one measure:

* ``perplexity[:SOURCE]``: perplexity on held-out text, in windows of ``WINDOW_TOKENS`` tokens, ``PERPLEXITY_TOKENS``
  in all. ``SOURCE`` as ``--stats-corpus`` takes it (a text file, ``hf:...``); by default the last paragraphs of
  gensim's Wikipedia excerpt, which the second-moment statistics read from its start (their default 100,000 tokens
  stop about a fifth of the way in), so the text is not what ROME and MEMIT were fitted on.
* ``kg``: a multiple-choice quiz the project generates from its geography knowledge graph (``KG_QUESTIONS`` facts
  drawn with seed 0, none naming an entity the run's cases name, each with three other objects of its relation as
  distractors); accuracy is the share whose
  true object the model scores highest (teacher-forced, as the metrics). Offline, so CI measures something real.
* ``lm-eval:TASK``: a task of EleutherAI's lm-evaluation-harness (``pip install -e ".[ability]"``), a registered
  name or a local task YAML file, run on the in-memory edited model through its ``HFLM`` with the request cache
  off (its key does not see the weights). Every numeric metric it reports is kept.

The unedited model's values are computed once per model fingerprint and measures, cached on disk, and written to
``run.json``; each case's record holds the values on the case's edited model (before its first restart: both
edits in force), or, on a chain, every ``--general-every`` edits.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pitfalls_editkit.facts import fill

if TYPE_CHECKING:  # the options are checked when pytest starts: this module must not import torch
    from pitfalls_editkit.models import LoadedModel
    from pitfalls_editkit.scoring import Scorer

KINDS = ("perplexity", "kg", "lm-eval")
PERPLEXITY_TOKENS = 2048  # 16 windows: on Gemma 3 270M the head over 262k words dominates the cost
WINDOW_TOKENS = 128
WINDOWS_PER_PASS = 2  # a window's logits over a 262k vocabulary are 134 MB in float32
KG_QUESTIONS = 60
KG_CHOICES = 4


class AbilityError(ValueError):
    """A --general-ability spec that cannot be measured; the message names it and what to do."""


@dataclass(frozen=True)
class AbilitySpec:
    kind: str
    argument: str = ""

    @property
    def text(self) -> str:
        return f"{self.kind}:{self.argument}" if self.argument else self.kind


def parse_specs(text: str) -> list[AbilitySpec]:
    """``perplexity,kg,lm-eval:TASK`` -> specs; the cheap checks (names, files that must exist)."""
    specs = []
    for part in (p.strip() for p in text.split(",")):
        kind, _, argument = part.partition(":")
        if kind not in KINDS:
            raise AbilityError(f"--general-ability {part!r}: unknown measure; give perplexity[:SOURCE], kg or lm-eval:TASK")
        if kind == "kg" and argument:
            raise AbilityError(f"--general-ability {part!r}: kg takes no argument")
        if kind == "lm-eval" and not argument:
            raise AbilityError(f"--general-ability {part!r}: name the task, e.g. lm-eval:hellaswag or lm-eval:path/to/task.yaml")
        if kind == "lm-eval" and argument.endswith((".yaml", ".yml")) and not Path(argument).expanduser().is_file():
            raise AbilityError(f"--general-ability {part!r}: no such task file")
        specs.append(AbilitySpec(kind, argument))
    if len({s.text for s in specs}) != len(specs):
        raise AbilityError(f"--general-ability {text!r}: a measure is named twice")
    return specs


@dataclass
class Perplexity:
    """exp(mean next-token loss) over fixed windows of held-out text."""

    windows: list[list[int]]
    name: str = "perplexity"

    @classmethod
    def build(cls, spec: AbilitySpec, loaded: LoadedModel, avoid: frozenset[str] = frozenset()) -> Perplexity:
        from editors.corpus import GENSIM_WIKI, CorpusError, load_corpus

        source = spec.argument or GENSIM_WIKI
        try:
            corpus = load_corpus(source)
        except CorpusError as exc:
            raise AbilityError(f"--general-ability {spec.text}: {exc}") from None
        texts = list(reversed(corpus.paragraphs)) if not spec.argument else list(corpus.paragraphs)
        if corpus.whole_texts:
            texts = list(corpus.articles(64))
        tokens: list[int] = []
        for text in texts:
            tokens += loaded.tokenizer(text, add_special_tokens=False)["input_ids"]
            if len(tokens) >= PERPLEXITY_TOKENS:
                break
        if len(tokens) < WINDOW_TOKENS:
            raise AbilityError(f"--general-ability {spec.text}: the text has {len(tokens)} tokens, fewer than one window "
                               f"({WINDOW_TOKENS}); give a longer source")
        tokens = tokens[:PERPLEXITY_TOKENS]
        bos = loaded.tokenizer.bos_token_id
        windows = [([bos] if bos is not None else []) + tokens[i:i + WINDOW_TOKENS]
                   for i in range(0, len(tokens) - WINDOW_TOKENS + 1, WINDOW_TOKENS)]
        return cls(windows, spec.text)

    def measure(self, loaded: LoadedModel, scorer: Scorer) -> dict[str, float]:
        import torch

        from pitfalls_editkit.scoring import pad_batch, vocabulary_logits

        model, device = loaded.model, loaded.device
        total, count = 0.0, 0
        for start in range(0, len(self.windows), WINDOWS_PER_PASS):
            chunk = self.windows[start:start + WINDOWS_PER_PASS]
            ids, mask, _, _ = pad_batch(chunk, 0, "right", device)
            rows = torch.tensor([r for r, w in enumerate(chunk) for _ in range(len(w) - 1)], device=device)
            cols = torch.tensor([c for w in chunk for c in range(len(w) - 1)], device=device)
            targets = torch.tensor([t for w in chunk for t in w[1:]], device=device)
            with torch.no_grad():
                logits = vocabulary_logits(model, ids, mask, rows, cols)
            total += float(torch.nn.functional.cross_entropy(logits, targets, reduction="sum"))
            count += len(targets)
        return {self.name: math.exp(total / count)}


@dataclass
class KnowledgeQuiz:
    """Multiple-choice facts of the geography graph: the share the model answers with the true object."""

    questions: list[tuple[str, list[str]]]  # (prompt, choices with the true object first)
    name: str = "kg"

    @classmethod
    def build(cls, spec: AbilitySpec, loaded: LoadedModel, avoid: frozenset[str] = frozenset()) -> KnowledgeQuiz:
        """``avoid``: entity labels the run's cases name; no question asks about them or offers them as a choice, so
        the quiz measures facts unrelated to the edits."""
        from pitfalls_generator.geography import build_geography_graph, geography_files
        from pitfalls_generator.schema import load_relations

        graph = build_geography_graph()
        relations = load_relations(geography_files()[0])
        rng = random.Random(0)
        triples = sorted(graph.triples, key=lambda t: (t.relation, t.subject, t.object))
        questions = []
        avoided = {entity_id for entity_id, entity in graph.entities.items() if entity.label.casefold() in avoid}
        for triple in rng.sample(triples, len(triples)):
            others = [o for o in graph.range(triple.relation)
                      if o not in graph.objects(triple.subject, triple.relation) and o not in avoided]
            if triple.relation not in relations or len(others) < KG_CHOICES - 1 or {triple.subject, triple.object} & avoided:
                continue
            prompt = fill(relations[triple.relation].relation.prompt, graph.entities[triple.subject].label)
            choices = [graph.entities[o].label for o in [triple.object, *rng.sample(others, KG_CHOICES - 1)]]
            questions.append((prompt, choices))
            if len(questions) == KG_QUESTIONS:
                break
        return cls(questions)

    def measure(self, loaded: LoadedModel, scorer: Scorer) -> dict[str, float]:
        labels = [(prompt, choice) for prompt, choices in self.questions for choice in choices]
        probs = scorer.pair_probabilities(labels).reshape(len(self.questions), KG_CHOICES)
        return {self.name: float((probs.argmax(axis=1) == 0).mean())}


@dataclass
class LmEvalTask:
    """One lm-evaluation-harness task on the in-memory model."""

    task: str
    include_path: str | None
    name: str
    _lm: Any = field(default=None, repr=False)  # lm-eval's HFLM around the loaded model, built on first use
    _tasks: Any = field(default=None, repr=False)  # the task, loaded once (its data read once)

    @classmethod
    def build(cls, spec: AbilitySpec, loaded: LoadedModel, avoid: frozenset[str] = frozenset()) -> LmEvalTask:
        try:
            import lm_eval  # noqa: F401
        except ImportError:
            raise AbilityError(f"--general-ability {spec.text}: needs lm-eval: pip install 'pitfalls-harness[ability]' "
                               "(or pip install lm-eval)") from None
        path = Path(spec.argument).expanduser()
        if path.suffix in (".yaml", ".yml"):
            try:
                import yaml

                task = yaml.safe_load(path.read_text(encoding="utf-8")).get("task")
            except Exception as exc:
                raise AbilityError(f"--general-ability {spec.text}: cannot read the task file: {' '.join(str(exc).split())[:200]}") from None
            if not isinstance(task, str):
                raise AbilityError(f"--general-ability {spec.text}: the task file has no 'task: NAME'")
            measure = cls(task, str(path.parent), spec.text)
        else:
            measure = cls(spec.argument, None, spec.text)
        from lm_eval.tasks import TaskManager

        if measure.task not in TaskManager(include_path=measure.include_path).all_tasks:
            raise AbilityError(f"--general-ability {spec.text}: lm-eval knows no task {measure.task!r}")
        return measure

    def measure(self, loaded: LoadedModel, scorer: Scorer) -> dict[str, float]:
        from lm_eval.evaluator import evaluate
        from lm_eval.models.huggingface import HFLM
        from lm_eval.tasks import TaskManager, get_task_dict

        try:
            if self._lm is None:
                self._lm = HFLM(pretrained=loaded.model, tokenizer=loaded.tokenizer, batch_size=8)
                self._tasks = get_task_dict([self.task], TaskManager(include_path=self.include_path))
            results = evaluate(lm=self._lm, task_dict=self._tasks, cache_requests=False, log_samples=False, verbosity="ERROR")
        except Exception as exc:
            raise AbilityError(f"--general-ability {self.name}: lm-eval failed: {type(exc).__name__}: "
                               f"{' '.join(str(exc).split())[:300]}") from None
        found = results["results"].get(self.task, {})
        return {f"{self.name}:{key.split(',')[0]}": float(value) for key, value in found.items()
                if isinstance(value, (int, float)) and not isinstance(value, bool) and "stderr" not in key and key != "sample_len"}


BUILDERS = {"perplexity": Perplexity.build, "kg": KnowledgeQuiz.build, "lm-eval": LmEvalTask.build}


@dataclass
class GeneralAbility:
    """The run's measures, and the unedited model's values (cached on disk per model fingerprint and measures)."""

    measures: list[Any]
    unedited: dict[str, float] = field(default_factory=dict)

    @classmethod
    def build(cls, text: str, loaded: LoadedModel, scorer: Scorer, cache_dir: Path, dtype: str,
              avoid: frozenset[str] = frozenset()) -> GeneralAbility:
        """``avoid``: the labels of every entity the run's cases name (``Dataset.entity_labels``), casefolded."""
        from pitfalls_editkit.cache import cached_json

        specs = parse_specs(text)
        ability = cls([BUILDERS[spec.kind](spec, loaded, avoid) for spec in specs])
        key = hashlib.sha256(json.dumps([[s.text for s in specs], sorted(avoid)]).encode()).hexdigest()[:16]
        path = cache_dir / "general-ability" / f"{loaded.fingerprint}-{dtype}-{key}.json"
        ability.unedited = cached_json(path, lambda: ability.measure(loaded, scorer))
        return ability

    def measure(self, loaded: LoadedModel, scorer: Scorer) -> dict[str, float]:
        values: dict[str, float] = {}
        for measure in self.measures:
            values.update(measure.measure(loaded, scorer))
        return values


def general_ability_lines(records: list, config: dict) -> list[str]:
    """--general-ability: per measure, the unedited model's value and the mean over the cases' edited models (the
    terminal's and the report's lines)."""
    from harness.records import mean_with_interval

    unedited = (config.get("general_ability") or {}).get("unedited", {})
    measured = [r.general_ability for r in records if r.general_ability]
    lines = []
    for name in sorted({n for values in measured for n in values}):
        m = mean_with_interval([v[name] for v in measured if name in v], name)
        lines.append(f"general ability, {name}: {unedited.get(name, float('nan')):.4g} unedited; {m['mean']:.4g} "
                     f"[{m['low']:.4g}, {m['high']:.4g}] after the edits (mean of {m['n']} measurements)")
    return lines
