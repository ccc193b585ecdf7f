"""The harness's side of the editor contract: it owns the undo and checks every edit.

``ModelGuard`` takes the loaded model's baseline once (a fingerprint of every
parameter and buffer, hooks, modes, ``requires_grad`` flags, the config).
Around each case (``with guard.case(editor) as case: case.apply(edits, seed)``)
it clones what the editor declares before each edit, and checks

* after each edit, over every parameter and buffer, the tensors' version
  counters and identities (microseconds: any in-place write through the
  tensor, an optimiser step, ``copy_``, ``+=`` under ``no_grad``, bumps the
  counter), and hooks, modes, ``requires_grad`` and the config;
* after each case, once the clones are copied back, the content fingerprint
  of every tensor against the baseline (every bit; this also catches writes
  through ``.data``, which no version counter sees).

A module editor's patches (``pitfalls_editkit.patches``) are installed by the
case as forward hooks the guard owns (they are not "hooks left behind" while
the case runs), and removed before the case's checks: after the case no hook is
left and the module tree is the baseline's, as for every editor. A context
editor's context (``pitfalls_editkit.contexts``) is held in ``guard.context``,
which the scorer reads; it is cleared before the case's checks, and a context
left in force after a case is a violation.

A violation or an exception in the editor becomes one :class:`EditFailure`
naming the editor (and the parameter); the model is restored before it
propagates, from the clones, or, when an undeclared tensor changed, by
reloading the weights from their source. Measured cost on Gemma 3 270M (2 CPU
cores): one fingerprint pass is about 35 ms (``python -m benchmarks.guard_overhead``).
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch

from pitfalls_editkit.contexts import ContextError, InstalledContext
from pitfalls_editkit.contract import CONTEXT, MODULES, Editor, declared_names
from pitfalls_editkit.facts import Edit
from pitfalls_editkit.fingerprints import named_tensors, parameter_fingerprints
from pitfalls_editkit.low_rank import LowRankUpdate
from pitfalls_editkit.patches import InstalledPatches, PatchError
from pitfalls_editkit.undo import WeightJournal

T = TypeVar("T")

_HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks", "_state_dict_hooks",
               "_load_state_dict_pre_hooks")


def check_updates(editor: Editor, updates: Any, count: int) -> None:
    """What ``Editor.compute_updates`` returned: one ``LowRankUpdate`` per group, of declared modules only."""
    if not isinstance(updates, list) or len(updates) != count or not all(isinstance(u, LowRankUpdate) for u in updates):
        raise TypeError(f"editor {editor.name!r}: compute_updates() must return a list of {count} LowRankUpdate objects, "
                        f"got {type(updates).__name__}")
    declared = declared_names(editor, editor.loaded.model)
    for update in updates:
        for name in update.factors:
            if f"{name}.weight" not in declared:
                raise ValueError(f"editor {editor.name!r}: compute_updates() changes {name}.weight, which it does not declare")


class EditFailure(Exception):
    """An edit that failed or broke the contract; the message is one line for the case's record."""


class ModelDamaged(EditFailure):
    """The model could not be brought back to its original weights: no later case can be trusted."""


@dataclass
class ModelState:
    """Everything the contract says an edit must leave alone, besides undeclared tensor values."""

    hooks: set[tuple[str, str, int]]
    training: set[str]  # modules in train mode
    requires_grad: set[str]  # parameters that require grad
    config: str  # hash of the config's JSON
    tensor_ids: dict[str, int]  # id() of each parameter/buffer object (replaced tensors are a violation)
    modules: frozenset[str] = frozenset()  # the module tree's names (a module added or removed is a violation)

    @classmethod
    def read(cls, model: torch.nn.Module) -> ModelState:
        hooks = {(name, kind, hook_id) for name, module in model.named_modules() for kind in _HOOK_DICTS
                 for hook_id in getattr(module, kind, {})}
        config = getattr(model, "config", None)
        config_text = config.to_json_string(use_diff=False) if config is not None and hasattr(config, "to_json_string") else ""
        return cls(
            hooks=hooks,
            training={name for name, module in model.named_modules() if module.training},
            requires_grad={name for name, p in model.named_parameters() if p.requires_grad},
            config=hashlib.sha256(config_text.encode()).hexdigest(),
            tensor_ids={name: id(t) for name, t in named_tensors(model).items()},
            modules=frozenset(name for name, _ in model.named_modules()),
        )


@dataclass
class GuardStats:
    """Seconds spent checking and snapshotting, for the overhead benchmark."""

    check_seconds: float = 0.0  # full fingerprints
    checks: int = 0
    snapshot_seconds: float = 0.0  # clones of the declared tensors and version counters
    state_seconds: float = 0.0  # hooks, modes, requires_grad, config, identities, and their repair


class ModelGuard:
    """Owns the undo of every case and proves the contract held (see the module docstring)."""

    def __init__(self, model: torch.nn.Module, reload: Callable[[], None] | None = None) -> None:
        self.model = model
        self.reload = reload  # copies the original weights back from their source (for undeclared changes)
        self.baseline = parameter_fingerprints(model)
        self.state = ModelState.read(model)
        self.damaged: str | None = None
        self.stats = GuardStats()
        self.context = InstalledContext()  # a context editor's prompt transform while its edit is in force; the scorer reads it

    # Checks ---------------------------------------------------------------------------

    def _changed(self) -> list[str]:
        """Tensors whose content fingerprint differs from the baseline."""
        start = time.perf_counter()
        now = parameter_fingerprints(self.model)
        self.stats.check_seconds += time.perf_counter() - start
        self.stats.checks += 1
        return [n for n in self.baseline if now[n] != self.baseline[n]]

    def _versions(self) -> dict[str, int]:
        return {name: t._version for name, t in named_tensors(self.model).items()}

    def _state_problems(self, owned_hooks: set[tuple[str, str, int]] = frozenset(), context_allowed: bool = False) -> list[str]:
        """What differs from the baseline besides tensor values; ``owned_hooks``: the patches the harness installed;
        ``context_allowed``: a context editor's edit is in force."""
        start = time.perf_counter()
        try:
            return self._read_state_problems(owned_hooks, context_allowed)
        finally:
            self.stats.state_seconds += time.perf_counter() - start

    def _read_state_problems(self, owned_hooks: set[tuple[str, str, int]], context_allowed: bool) -> list[str]:
        now = ModelState.read(self.model)
        problems = []
        if self.context.current is not None and not context_allowed:
            problems.append(f"left a context in force ({type(self.context.current).__name__})")
        if now.tensor_ids.keys() != self.state.tensor_ids.keys():
            added = sorted(now.tensor_ids.keys() - self.state.tensor_ids.keys())
            removed = sorted(self.state.tensor_ids.keys() - now.tensor_ids.keys())
            problems.append(f"changed the model's tensors (added {added[:3]}, removed {removed[:3]})")
        replaced = sorted(n for n in now.tensor_ids.keys() & self.state.tensor_ids.keys() if now.tensor_ids[n] != self.state.tensor_ids[n])
        if replaced:
            problems.append(f"replaced tensor {replaced[0]!r} instead of changing it in place")
        if now.modules != self.state.modules:
            added, removed = sorted(now.modules - self.state.modules), sorted(self.state.modules - now.modules)
            problems.append(f"changed the module tree (added {added[:3]}, removed {removed[:3]})")
        if now.hooks - self.state.hooks - owned_hooks:
            name, kind, _ = sorted(now.hooks - self.state.hooks - owned_hooks)[0]
            problems.append(f"left a hook behind ({kind} on {name or 'the model'!r})")
        if now.training != self.state.training:
            problems.append("changed the train/eval mode of the model")
        if now.requires_grad != self.state.requires_grad:
            flipped = sorted(now.requires_grad ^ self.state.requires_grad)
            problems.append(f"changed requires_grad of {flipped[0]!r}")
        if now.config != self.state.config:
            problems.append("changed the model's config")
        return problems

    def _repair_state(self) -> None:
        """Remove hooks the editor left, reset modes and requires_grad (tensor values are restored elsewhere)."""
        start = time.perf_counter()
        self.context.remove()
        for name, module in self.model.named_modules():
            for kind in _HOOK_DICTS:
                hooks = getattr(module, kind, None)
                if hooks:
                    for hook_id in [h for h in hooks if (name, kind, h) not in self.state.hooks]:
                        del hooks[hook_id]
            module.training = name in self.state.training
        for name, param in self.model.named_parameters():
            param.requires_grad_(name in self.state.requires_grad)
        self.stats.state_seconds += time.perf_counter() - start

    def _restore(self) -> tuple[list[str], list[str], bool]:
        """Repair hooks and modes, compare every tensor with the baseline, reload after a change.

        Returns the tensors that differed, the state problems found, and whether the model is now original.
        """
        problems = self._state_problems()
        self._repair_state()
        changed = self._changed()
        if not changed:
            return changed, problems, True
        if self.reload is not None:
            self.reload()
        return changed, problems, not self._changed()

    def check_untouched(self, what: str) -> str | None:
        """None when the model is as at the baseline; else the model is restored (if it can be) and a message says ``what``."""
        changed, problems, restored = self._restore()
        if not changed and not problems:
            return None
        if not restored:
            self.damaged = f"{what} ({changed[0]!r}) and could not be restored"
        return f"{what}: {changed[0] if changed else problems[0]}"

    def prepare(self, editor: Editor, edits: Sequence[Edit], seed: int) -> float:
        """``editor.prepare(edits)`` on the original model, which it must leave as it is; returns its seconds."""
        return self.without_changes(editor, "prepare()", f"{len(edits)} edits", lambda: editor.prepare(edits), seed)[1]

    def without_changes(self, editor: Editor, method: str, what: str, work: Callable[[], T], seed: int) -> tuple[T, float]:
        """``work()``, which calls ``editor``'s ``method`` for ``what`` and must leave the model as it is; its result and seconds.

        An exception, or any change found afterwards (the model is restored), is an :class:`EditFailure` naming both.
        """
        if self.damaged:
            raise ModelDamaged(self.damaged)
        torch.manual_seed(seed)
        start = time.perf_counter()
        try:
            result = work()
        except Exception as exc:
            message = " ".join(str(exc).split())[:400] or type(exc).__name__
            raise EditFailure(f"editor {editor.name!r} raised {type(exc).__name__} in {method} for {what} "
                              f"(--case-batch): {message}") from exc
        seconds = time.perf_counter() - start
        problem = self.check_untouched(f"editor {editor.name!r} changed the model in {method}, which must not")  # restores it
        if problem is not None:
            raise EditFailure(problem)
        return result, seconds

    # The case -------------------------------------------------------------------------

    @contextlib.contextmanager
    def case(self, editor: Editor) -> Iterator[CaseEdits]:
        """Edits made through the yielded object are undone on leaving and the model proven original."""
        if self.damaged:
            raise ModelDamaged(self.damaged)
        journal = WeightJournal(self.model)
        edits = CaseEdits(self, editor, journal, patches=InstalledPatches(self.model))
        failure: EditFailure | None = None
        try:
            yield edits
        finally:
            edits.patches.remove_all()
            self.context.remove()
            journal.restore()
            editor.model_restored()
            failure = self._after_case(editor, edits)
        if failure is not None:
            raise failure

    def _after_case(self, editor: Editor, edits: CaseEdits) -> EditFailure | None:
        """Repair what can be repaired, prove every tensor original, and say what went wrong (None: nothing)."""
        changed, problems, restored = self._restore()
        if not restored:
            self.damaged = (f"the model could not be restored after editor {editor.name!r} changed {changed[0]!r}: "
                            "every later case of this worker is an error")
            return ModelDamaged(self.damaged)
        if changed:
            return EditFailure(f"editor {editor.name!r} changed {changed[0]!r}, which it did not declare "
                               f"(declared: {edits.declared_text()})")
        if problems:
            return EditFailure(f"editor {editor.name!r} broke the contract: {problems[0]}")
        return None


@dataclass
class CaseEdits:
    """The edits of one case, applied through the guard."""

    guard: ModelGuard
    editor: Editor
    journal: WeightJournal
    patches: InstalledPatches  # a module editor's patches (none for a weight editor)
    failure: EditFailure | None = None
    seconds: float = 0.0
    applied: list[str] = field(default_factory=list)
    declared: list[str] = field(default_factory=list)

    def declared_text(self) -> str:
        return ", ".join(self.declared[:4]) + (" ..." if len(self.declared) > 4 else "") if self.declared else "nothing"

    def apply(self, edits: Sequence[Edit], seed: int) -> None:
        guard, editor = self.guard, self.editor
        names = declared_names(editor, guard.model)
        unknown = [n for n in names if n not in guard.baseline]
        if unknown:
            self.failure = EditFailure(f"editor {editor.name!r} declared {unknown[0]!r}, which is not a parameter of the model")
            raise self.failure
        self.declared = list(dict.fromkeys([*self.declared, *names]))
        start = time.perf_counter()
        self.journal.save(names)
        versions = guard._versions()
        guard.stats.snapshot_seconds += time.perf_counter() - start
        torch.manual_seed(seed)
        start = time.perf_counter()
        try:
            returned = editor.apply(edits)
            if editor.kind == MODULES:
                self.patches.install(editor.name, returned)
            elif editor.kind == CONTEXT:
                guard.context.install(editor.name, returned)
        except (PatchError, ContextError) as exc:
            self.failure = EditFailure(str(exc))
            raise self.failure from exc
        except Exception as exc:  # the editor's own error: recorded on the case, the model restored on leaving
            message = " ".join(str(exc).split())[:400] or type(exc).__name__
            self.failure = EditFailure(f"editor {editor.name!r} raised {type(exc).__name__} during {edits[0].describe()}: {message}")
            raise self.failure from exc
        finally:
            self.seconds += time.perf_counter() - start
        self.applied.extend(e.describe() for e in edits)
        declared = set(names)
        written = [n for n, v in guard._versions().items() if n not in declared and versions.get(n) != v]
        if written:
            self.failure = EditFailure(f"editor {editor.name!r} changed {written[0]!r}, which it did not declare "
                                       f"(declared: {self.declared_text()})")
            raise self.failure
        problems = guard._state_problems(self.patches.hook_keys(), context_allowed=editor.kind == CONTEXT)
        if problems:
            self.failure = EditFailure(f"editor {editor.name!r} broke the contract: {problems[0]}")
            raise self.failure
