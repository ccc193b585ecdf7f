"""``python -m harness.check_editor SPEC [--model tiny-llama]``: does an editor keep the editor contract?

``SPEC`` is what ``--editor`` takes (a shipped name, a registered name, or
``module.path:ClassName``). The editor runs on a small model through a few
edits (single, and a batch when it claims ``supports_batch``); a table says,
per check, what was found:

* declared vs actually changed parameters (every parameter compared bit for bit);
* the undo (the harness's guard) restores every tensor exactly;
* the same edit under the same seed gives the same weights (determinism);
* no hook left on a module, no ``requires_grad``, train/eval mode or config change;
* an exception inside ``apply`` (reported, not a crash);
* for an editor with ``prepare`` (``--case-batch``): it leaves the model untouched, and a prepared edit gives the
  unprepared edit's update (to 1e-3 of the update's norm);
* for an editor with ``compute_updates`` (``--case-batch`` runs whole cases together): it leaves the model untouched,
  returns one update per group, of declared modules only (as the harness requires), and its factors equal what ``apply`` writes, for an edit on the model and for an edit on top of an earlier one
  (to 1e-3 of the update's norm);
* for a module editor (``kind = "modules"``): it declares no parameter, installs patches, the same edit gives the
  same patch tensors, and after the case no hook is left and the module tree is as it was;
* for a context editor (``kind = "context"``): it declares no parameter, installs a context that changes the prompt,
  the same edit gives the same text, every weight stays bit-identical, and no context is left after the case;
* edit efficacy on the small model (the new object beats the old one; informational only).

Exit status 0 when every check passed, 1 on a violation, 2 on a usage error.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from harness.guard import EditFailure, ModelGuard, ModelState, check_updates
from pitfalls_editkit.contract import ALL_PARAMETERS, CONTEXT, MODULES, Editor, EditorSettings, capabilities, declared_names
from pitfalls_editkit.facts import Edit, Entity, ExampleEdit, Relation
from pitfalls_editkit.fingerprints import named_tensors, parameter_digest
from pitfalls_editkit.low_rank import weight_update
from pitfalls_editkit.messages import first_line
from pitfalls_editkit.models import LoadedModel
from pitfalls_editkit.nethook import get_module
from pitfalls_editkit.scoring import Scorer

CAPITAL = Relation("P36", "The capital of {} is", "What is the capital of {}?", "capital")
LANGUAGE = Relation("P37", "The official language of {} is", "What language is spoken in {}?", "official language")
# Edits the checker makes: real facts, so a working editor has something to move.
CHECK_EDITS = (
    Edit(Entity("Q142", "France"), CAPITAL, Entity("Q90", "Paris"), Entity("Q220", "Rome")),
    Edit(Entity("Q183", "Germany"), CAPITAL, Entity("Q64", "Berlin"), Entity("Q1085", "Prague")),
    Edit(Entity("Q29", "Spain"), LANGUAGE, Entity("Q1321", "Spanish"), Entity("Q150", "French")),
)
# The dataset edits the checker gives editors that learn from examples (IKE's demonstrations): other real facts.
CHECK_EXAMPLES = tuple(ExampleEdit(edit, paraphrases) for edit, paraphrases in (
    (Edit(Entity("Q38", "Italy"), CAPITAL, Entity("Q220", "Rome"), Entity("Q1492", "Barcelona")), ("{}'s capital city is",)),
    (Edit(Entity("Q17", "Japan"), CAPITAL, Entity("Q1490", "Tokyo"), Entity("Q35765", "Osaka")), ("{}'s capital city is",)),
    (Edit(Entity("Q159", "Russia"), CAPITAL, Entity("Q649", "Moscow"), Entity("Q656", "Saint Petersburg")), ("{}'s capital city is",)),
    (Edit(Entity("Q148", "China"), CAPITAL, Entity("Q956", "Beijing"), Entity("Q8686", "Shanghai")), ("{}'s capital city is",)),
    (Edit(Entity("Q79", "Egypt"), CAPITAL, Entity("Q85", "Cairo"), Entity("Q87", "Alexandria")), ("{}'s capital city is",)),
    (Edit(Entity("Q16", "Canada"), CAPITAL, Entity("Q1930", "Ottawa"), Entity("Q172", "Toronto")), ("{}'s capital city is",)),
    (Edit(Entity("Q45", "Portugal"), LANGUAGE, Entity("Q5146", "Portuguese"), Entity("Q652", "Italian")),
     ("In {}, people speak",)),
    (Edit(Entity("Q55", "Netherlands"), LANGUAGE, Entity("Q7411", "Dutch"), Entity("Q9027", "Swedish")), ("In {}, people speak",)),
))


@dataclass
class Check:
    name: str
    passed: bool | None  # None: informational
    detail: str


def _changed(model: torch.nn.Module, before: dict[str, torch.Tensor]) -> list[str]:
    now = named_tensors(model)
    return [name for name, value in before.items() if not torch.equal(now[name], value)]


def run_checks(editor: Editor, loaded: LoadedModel, edits: Sequence[Edit] = CHECK_EDITS, seed: int = 0,
               reload: Callable[[], None] | None = None) -> list[Check]:
    """Every check of the module docstring, in order; ``reload`` brings back weights an editor changed without declaring."""
    model = loaded.model
    checks: list[Check] = []
    declared_raw = editor.declared_parameters()
    declared = declared_names(editor, model)
    unknown = [n for n in declared if n not in dict(model.named_parameters())]
    if editor.kind in (MODULES, CONTEXT):  # it adds patches or a context; it may change no parameter
        checks.append(Check(f"a {editor.kind} editor declares no parameter", not declared,
                            "none" if not declared else f"declares {declared[0]!r}"))
    else:
        checks.append(Check("declares its parameters", not unknown and bool(declared),
                            f"unknown: {unknown[0]!r}" if unknown else
                            ("all parameters" if declared_raw == ALL_PARAMETERS else f"{len(declared)}: {', '.join(declared[:4])}"
                             + (" ..." if len(declared) > 4 else ""))))
    original = parameter_digest(model)
    state = ModelState.read(model)
    guard = ModelGuard(model, reload=reload)
    scorer = Scorer(model, loaded.tokenizer, context=guard.context)

    def one_run(batch: Sequence[Edit], label: str) -> dict[str, torch.Tensor] | None:
        """Apply ``batch`` through the guard; the changed tensors' values, or None when the edit failed."""
        before = {name: t.detach().clone() for name, t in named_tensors(model).items()}
        after: dict[str, torch.Tensor] | None = None
        try:
            with guard.case(editor) as case:
                try:
                    case.apply(batch, seed)
                except EditFailure as exc:
                    checks.append(Check(f"{label}: edit", False, str(exc)))
                    raise
                changed = _changed(model, before)
                outside = [n for n in changed if n not in declared]
                checks.append(Check(f"{label}: changes only declared parameters", not outside,
                                    f"changed {len(changed)} of {len(declared)} declared" if not outside
                                    else f"changed undeclared {outside[0]!r}"))
                moved = [scorer.fact_scores([e.prompt], [e.new_object.label, e.object.label]) for e in batch]
                wins = sum(new > old for new, old in moved)
                checks.append(Check(f"{label}: edit efficacy (informational)", None, f"new object beats old in {wins}/{len(batch)}"))
                after = {name: named_tensors(model)[name].detach().clone() for name in changed}
                if editor.kind == MODULES:  # what the edit is: the patches' tensors
                    installed = case.patches.patches
                    checks.append(Check(f"{label}: installs patches", bool(installed), ", ".join(installed) or "none"))
                    after.update({f"{module}:{key}": value.detach().clone() for module, patch in installed.items()
                                  for key, value in patch.state_dict().items()})
                if editor.kind == CONTEXT:  # what the edit is: the text the model is given
                    given = guard.context.prompt(batch[0].prompt)
                    checks.append(Check(f"{label}: installs a context that changes the prompt", given != batch[0].prompt,
                                        f"{len(given)} characters given for the {len(batch[0].prompt)}-character prompt" if given != batch[0].prompt
                                        else "the prompt is given unchanged"))
                    after["context"] = torch.tensor(list(given.encode()), dtype=torch.uint8)
        except EditFailure as exc:
            if not any(c.name == f"{label}: edit" for c in checks):
                checks.append(Check(f"{label}: contract after the edit", False, str(exc)))
        exact = parameter_digest(model) == original
        checks.append(Check(f"{label}: undo restores every tensor bit for bit", exact, "exact" if exact else "differs"))
        return after

    first = one_run([edits[0]], "single edit")
    again = one_run([edits[0]], "same edit again")
    if first is not None and again is not None:
        same = first.keys() == again.keys() and all(torch.equal(first[n], again[n]) for n in first)
        checks.append(Check("deterministic under the same seed", same, "identical weights" if same else "weights differ"))
    if editor.supports_batch:
        one_run(list(edits[:3]), f"batch of {len(edits[:3])}")
    checks.append(Check("declared capabilities", None, ", ".join(capabilities(editor)) or "none beyond apply()"))
    checks += _declared_capabilities(editor)
    if editor.can_prepare:  # --case-batch: work ahead must leave the model and change no update
        try:
            guard.prepare(editor, list(edits[:3]), seed)
            checks.append(Check("prepare() leaves the model untouched", True, "untouched"))
        except EditFailure as exc:
            checks.append(Check("prepare() leaves the model untouched", False, str(exc)))
        prepared = one_run([edits[0]], "prepared edit")
        if first is not None and prepared is not None:
            restored = named_tensors(model)  # the original values again (the undo checks above say so)
            gaps = [float((prepared[n] - first[n]).norm() / max(float((first[n] - restored[n]).norm()), 1e-12))
                    for n in first if n in prepared]
            close = first.keys() == prepared.keys() and max(gaps, default=0.0) <= 1e-3
            checks.append(Check("prepared edit equals the unprepared one", close,
                                f"largest difference {max(gaps, default=0.0):.1e} of the update" if gaps else "different tensors"))
    if editor.can_compute_updates:
        checks += _update_checks(editor, guard, edits, seed)
    now = ModelState.read(model)
    hooks_left = now.hooks - state.hooks
    checks.append(Check("no hooks left behind", not hooks_left, f"{len(hooks_left)} left" if hooks_left else "none"))
    checks.append(Check("no context left in force", guard.context.current is None,
                        "none" if guard.context.current is None else type(guard.context.current).__name__))
    checks.append(Check("the module tree as it was", now.modules == state.modules,
                        "unchanged" if now.modules == state.modules else f"added {sorted(now.modules - state.modules)[:2]}"))
    checks.append(Check("no requires_grad / train-mode / config change",
                        now.requires_grad == state.requires_grad and now.training == state.training and now.config == state.config,
                        "unchanged" if now.requires_grad == state.requires_grad and now.training == state.training
                        and now.config == state.config else "changed"))
    return checks


def _declared_capabilities(editor: Editor) -> list[Check]:
    """An optional method is used only when declared: one defined but not declared (or the reverse) is a mistake."""
    checks = []
    for flag, method in (("can_prepare", "prepare"), ("can_compute_updates", "compute_updates")):
        defined = getattr(type(editor), method) is not getattr(Editor, method)
        declared = bool(getattr(editor, flag))
        if defined or declared:
            detail = ("declared and defined" if defined and declared else
                      f"{method}() is defined but {flag} is not True: the harness never calls it" if defined else
                      f"{flag} is True but {method}() is not defined")
            checks.append(Check(f"{method}() declared by {flag}", defined == declared, detail))
    return checks


def _apply_change(editor: Editor, guard: ModelGuard, sequence: Sequence[Edit], seed: int) -> dict[str, torch.Tensor]:
    """What ``apply`` writes for the last edit of ``sequence`` (the edits applied in turn, then undone): per declared tensor."""
    model = editor.loaded.model
    names = declared_names(editor, model)
    with guard.case(editor) as case:
        for number, edit in enumerate(sequence):
            before = {n: named_tensors(model)[n].detach().clone() for n in names}
            case.apply([edit], seed + number)
        return {n: named_tensors(model)[n].detach() - before[n] for n in names}


def _update_checks(editor: Editor, guard: ModelGuard, edits: Sequence[Edit], seed: int) -> list[Check]:
    """``compute_updates`` leaves the model as it is, and its factors are what ``apply`` writes, alone and on a base."""
    model = editor.loaded.model
    try:
        first, _ = guard.without_changes(editor, "compute_updates()", "an edit",
                                         lambda: editor.compute_updates([[edits[0]]], [None]), seed)
        check_updates(editor, first, 1)
        second, _ = guard.without_changes(editor, "compute_updates()", "an edit on a base",
                                          lambda: editor.compute_updates([[edits[1]]], first), seed + 1)
        check_updates(editor, second, 1)
    except (EditFailure, TypeError, ValueError) as exc:
        return [Check("compute_updates() leaves the model and returns declared updates", False, str(exc))]
    checks = [Check("compute_updates() leaves the model and returns declared updates", True, "untouched, one update per group")]
    for label, (update,), sequence in (("alone", first, edits[:1]), ("on an earlier edit", second, edits[:2])):
        gaps, missing = [], []
        for name, change in _apply_change(editor, guard, sequence, seed).items():
            module_name = name.removesuffix(".weight")
            if float(change.norm()) == 0.0:
                continue
            if module_name not in update.factors:
                missing.append(name)
                continue
            predicted = weight_update(get_module(model, module_name), update.dense(module_name))
            gaps.append(float((predicted - change).norm() / change.norm()))
        detail = (f"no factors for {missing[0]!r}" if missing else
                  f"largest difference {max(gaps):.1e} of the update" if gaps else "apply changed nothing")
        checks.append(Check(f"compute_updates() equals apply ({label})", not missing and bool(gaps) and max(gaps) <= 1e-3, detail))
    return checks


def format_table(spec: str, model_name: str, checks: list[Check]) -> str:
    mark = {True: "ok", False: "FAIL", None: "info"}
    width = max(len(c.name) for c in checks)
    lines = [f"editor contract check: {spec} on {model_name}", ""]
    lines += [f"{mark[c.passed]:>4}  {c.name.ljust(width)}  {c.detail}" for c in checks]
    failed = sum(c.passed is False for c in checks)
    lines += ["", f"{failed} violation(s)" if failed else "every check passed"]
    return "\n".join(lines)


def _refused_option(args: argparse.Namespace) -> str | None:
    """The option values the suites refuse (harness.plugin.options.check_options), refused here alike (a --device
    the suites refuse is refused by resolve_device, with the same line)."""
    if args.stats_tokens < 1:
        return f"--stats-tokens {args.stats_tokens}: must be at least 1"
    if args.hparams is not None and not Path(args.hparams).expanduser().is_file():
        return f"--hparams {args.hparams}: no such file (a JSON file of the editor's hyper-parameters)"
    if args.cache_dir is not None and Path(args.cache_dir).exists() and not Path(args.cache_dir).is_dir():
        return f"--cache-dir {args.cache_dir}: is a file; give a folder"
    return None


def main(argv: list[str] | None = None) -> int:
    from editors.registry import UnknownEditorError, editor_class
    from pitfalls_editkit.cache import default_cache_dir
    from pitfalls_editkit.models import ModelLoadError, load_model, resolve_device

    parser = argparse.ArgumentParser(prog="python -m harness.check_editor", description=__doc__.split("\n\n")[0])
    parser.add_argument("editor", help="shipped name, registered name, or module.path:ClassName")
    parser.add_argument("--model", default="tiny-llama", help="model to check on (default: tiny-llama)")
    parser.add_argument("--hparams", default=None, help="hyper-parameter file for the editor")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--stats-tokens", type=int, default=5000, help="statistics corpus tokens (small: it is a check)")
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    refused = _refused_option(args)
    if refused:
        print(f"error: {refused}", file=sys.stderr)
        return 2
    try:
        cls = editor_class(args.editor)
        cache = Path(args.cache_dir) if args.cache_dir else default_cache_dir()
        loaded = load_model(args.model, resolve_device(args.device), cache_dir=cache)
        settings = EditorSettings(cache_dir=cache, stats_tokens=args.stats_tokens, seed=args.seed,
                                  hparams_file=Path(args.hparams) if args.hparams else None,
                                  dataset_edits=lambda: CHECK_EXAMPLES)
    except (UnknownEditorError, ModelLoadError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        editor = cls(loaded, settings)
    except ValueError as exc:  # hyper-parameters, statistics corpus: the editor's own clear line
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # a plugin's constructor failed: name it, as the suites do
        print(f"error: editor {args.editor!r} could not be built: {type(exc).__name__}: {first_line(exc, 400)}", file=sys.stderr)
        return 2
    from pitfalls_editkit.models import reload_weights

    checks = run_checks(editor, loaded, seed=args.seed, reload=lambda: reload_weights(loaded, cache))
    print(format_table(args.editor, args.model, checks))
    return 1 if any(c.passed is False for c in checks) else 0


if __name__ == "__main__":
    sys.exit(main())

