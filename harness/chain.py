"""Sequential (lifelong) editing: one model whose edits accumulate from case to case.

A :class:`Chain` replaces the per-case undo of the guard. It journals the
original value of every tensor any edit of the chain declared (restored at
the end of the chain, or every ``restart_every`` cases), keeps a rollback
point before each edit so that a failed edit leaves the chain as it was
before that edit, and remembers which edits should still hold (the latest
target of each subject and relation) to measure their retention.

The contract checks are the guard's: each edit goes through
:class:`harness.guard.CaseEdits`. An editor that changed what it did not
declare cannot be rolled back; the chain is then restored to the original
model and starts again (the records say so through their position).
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import torch

from harness.guard import CaseEdits, EditFailure, ModelDamaged, ModelGuard
from pitfalls_editkit.contract import Editor, declared_names
from pitfalls_editkit.facts import Edit
from pitfalls_editkit.fingerprints import named_tensors
from pitfalls_editkit.patches import InstalledPatches
from pitfalls_editkit.undo import WeightJournal


@dataclass
class Retention:
    """Of a fixed sample of the chain's earlier edits, how many still hold (the new object beats the one it replaced)."""

    after_edits: int
    sample: int
    held: int

    @property
    def rate(self) -> float:
        return self.held / self.sample if self.sample else float("nan")

    def to_dict(self) -> dict[str, float]:
        return {"after_edits": self.after_edits, "sample": self.sample, "held": self.held, "rate": self.rate}


@dataclass
class Chain:
    """One chain of accumulating edits on the guard's model."""

    guard: ModelGuard
    editor: Editor
    chain_id: str
    restart_every: int | None = None  # cases per segment (None: the whole chain is one segment)
    journal: WeightJournal = field(init=False)
    patches: InstalledPatches = field(init=False)  # a module editor's patches: they accumulate along the chain too
    # (a context editor's context, in guard.context, likewise)
    edits_applied: int = 0  # in the current segment
    case_start: int = 0  # edits_applied when the current case began (after a segment restart, if one was due)
    cases_run: int = 0  # in the current segment
    segment: int = 0
    seconds: float = 0.0
    standing: dict[tuple[str, str], list[Edit]] = field(default_factory=dict)  # (subject, relation) -> the edits that should hold

    def __post_init__(self) -> None:
        self.journal = WeightJournal(self.guard.model)
        self.patches = InstalledPatches(self.guard.model)

    # The chain's edits ----------------------------------------------------------------

    def start_case(self) -> None:
        """Before a case scores anything: end the segment first when it is due, so the case's M0 is what it edits."""
        if self.guard.damaged:
            raise ModelDamaged(self.guard.damaged)
        if self.restart_every and self.cases_run >= self.restart_every:
            self.restore()
        self.case_start = self.edits_applied

    @contextlib.contextmanager
    def case(self) -> Iterator[Chain]:
        """A case's edits made on the chain: they stay when the case ends (the case is one more link)."""
        try:
            yield self
        finally:
            self.cases_run += 1

    def apply(self, edits: Sequence[Edit], seed: int) -> None:
        """Apply ``edits`` through the guard's checks; on failure the chain is rolled back to before them."""
        model = self.guard.model
        tensors = named_tensors(model)
        names = [n for n in declared_names(self.editor, model) if n in tensors]
        with torch.no_grad():
            before = {name: tensors[name].detach().clone() for name in names}
        patches_before, context_before = self.patches.snapshot(), self.guard.context.snapshot()
        checked = CaseEdits(self.guard, self.editor, self.journal, patches=self.patches)
        start = time.perf_counter()
        try:
            checked.apply(edits, seed)
        except EditFailure:
            with torch.no_grad():
                for name, value in before.items():
                    tensors[name].copy_(value)
            self.patches.roll_back(self.editor.name, patches_before)
            self.guard.context.roll_back(context_before)
            if self._undeclared_changes():
                self.restore()  # what cannot be rolled back: start the chain again from the original model
            raise
        finally:
            self.seconds += time.perf_counter() - start
        self.edits_applied += len(edits)
        for key in {(e.subject.id or e.subject.label, e.relation.id) for e in edits}:
            self.standing[key] = [e for e in edits if (e.subject.id or e.subject.label, e.relation.id) == key]

    def _undeclared_changes(self) -> list[str]:
        """Tensors that differ from the original model though no edit of the chain declared them."""
        return [name for name in self.guard._changed() if name not in self.journal.originals]

    # Restoring -----------------------------------------------------------------------

    def restore(self) -> str | None:
        """Put the original model back (a new segment starts); a message when it could not be proven original."""
        self.patches.remove_all()
        self.guard.context.remove()
        self.journal.restore()
        self.journal = WeightJournal(self.guard.model)
        self.editor.model_restored()
        self.edits_applied = self.cases_run = 0
        self.standing.clear()
        self.segment += 1
        return self.guard.check_untouched(f"the model after chain {self.chain_id} was restored differs from the original")

    # Retention -----------------------------------------------------------------------

    def retention(self, prefers: Callable[[Edit], bool], sample: int, exclude: Sequence[Edit] = ()) -> Retention:
        """Check a fixed sample (seeded by the chain and its length) of the edits that should still hold."""
        skip = {id(e) for e in exclude}
        candidates = [e for edits in self.standing.values() for e in edits if id(e) not in skip]
        chosen = random.Random(f"{self.chain_id}:{self.segment}:{self.edits_applied}").sample(candidates, min(sample, len(candidates)))
        return Retention(self.edits_applied, len(chosen), sum(1 for e in chosen if prefers(e)))
