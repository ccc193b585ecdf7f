"""Editors that break the contract on purpose, for the checker's and the guard's tests (tiny-llama names)."""

from __future__ import annotations

import torch

from pitfalls_editkit import Editor

DECLARED = "model.layers.0.mlp.down_proj.weight"


class _Nudges(Editor):
    """Adds a small constant to its declared weight: a real (if useless) edit."""

    supports_batch = True

    def declared_parameters(self):
        return [DECLARED]

    def apply(self, edits):
        with torch.no_grad():
            self.loaded.model.get_parameter(DECLARED).add_(0.01)


class UndeclaredChange(_Nudges):
    """Also changes the embedding, which it does not declare (through ``.data``, which no version counter sees)."""

    name = "undeclared-change"

    def apply(self, edits):
        super().apply(edits)
        self.loaded.model.get_parameter("model.embed_tokens.weight").data[0, 0] += 1.0


class RaisesMidEdit(_Nudges):
    """Writes its declared weight, then fails, as FT or MEMIT do on a non-finite loss."""

    name = "raises-mid-edit"

    def apply(self, edits):
        super().apply(edits)
        raise FloatingPointError("injected failure after writing weights")


class LeavesHook(_Nudges):
    """Leaves a forward hook on a module."""

    name = "leaves-hook"

    def apply(self, edits):
        super().apply(edits)
        self.loaded.model.get_submodule("model.layers.0").register_forward_hook(lambda *args: None)


class Fine(_Nudges):
    name = "fine"


class UndeclaredInPlace(_Nudges):
    """Changes an undeclared weight through the parameter itself (an in-place op the version counter sees)."""

    name = "undeclared-in-place"

    def apply(self, edits):
        super().apply(edits)
        with torch.no_grad():
            self.loaded.model.get_parameter("model.layers.1.mlp.down_proj.weight").mul_(1.5)


class Sleeper(_Nudges):
    """The first edit in the first process to get here writes its pid to $PITFALLS_TEST_PIDFILE and sleeps: a case to kill."""

    name = "sleeper"

    def apply(self, edits):
        import os
        import time

        pidfile = os.environ.get("PITFALLS_TEST_PIDFILE")
        if pidfile and not os.path.exists(pidfile):
            with open(pidfile, "w") as handle:
                handle.write(str(os.getpid()))
            time.sleep(120)
        super().apply(edits)


class Slow(_Nudges):
    """A fine editor that takes 0.3 s per edit: a run that lasts long enough to start a second one beside it."""

    name = "slow"

    def apply(self, edits):
        import time

        time.sleep(0.3)
        super().apply(edits)


class ChangesWhileBuilt(_Nudges):
    """Changes a weight in its constructor, before any edit (the harness checks the model after building an editor)."""

    name = "changes-while-built"

    def __init__(self, loaded, settings):
        super().__init__(loaded, settings)
        with torch.no_grad():
            loaded.model.get_parameter("model.norm.weight").add_(1.0)


class FailsThirdEdit(_Nudges):
    """A real edit every time, except the third call: it writes its weight, then raises (a chain must roll it back)."""

    name = "fails-third-edit"

    def __init__(self, loaded, settings):
        super().__init__(loaded, settings)
        self.calls = 0

    def apply(self, edits):
        self.calls += 1
        super().apply(edits)
        if self.calls == 3:
            raise FloatingPointError("injected failure on the third edit")


class ChangesInPrepare(_Nudges):
    """Writes a weight in ``prepare`` (through ``.data``, which no version counter sees); prepare must leave the model."""

    name = "changes-in-prepare"
    can_prepare = True

    def prepare(self, edits):
        self.loaded.model.get_parameter("model.norm.weight").data += 1.0


class RaisesInPrepare(_Nudges):
    name = "raises-in-prepare"
    can_prepare = True

    def prepare(self, edits):
        raise RuntimeError("injected failure while preparing")


class NudgesInFactors(_Nudges):
    """The nudge, also offered as factors (``compute_updates``): ``+0.01`` everywhere is ``0.01·1 1ᵀ``, rank one."""

    name = "nudges-in-factors"
    can_compute_updates = True

    def compute_updates(self, edit_groups, bases):
        from pitfalls_editkit.low_rank import LowRankUpdate

        weight = self.loaded.model.get_parameter(DECLARED)
        module = DECLARED.removesuffix(".weight")
        ones_out, ones_in = torch.ones(weight.shape[0], 1), torch.ones(weight.shape[1], 1)
        return [LowRankUpdate({module: (0.01 * ones_out * len(group), ones_in)}) for group in edit_groups]


class ChangesInComputeUpdates(NudgesInFactors):
    """Writes its weight inside ``compute_updates``, which must leave the model as it is."""

    name = "changes-in-compute-updates"

    def compute_updates(self, edit_groups, bases):
        self.loaded.model.get_parameter(DECLARED).data += 1.0
        return super().compute_updates(edit_groups, bases)


class RaisesInComputeUpdates(NudgesInFactors):
    name = "raises-in-compute-updates"

    def compute_updates(self, edit_groups, bases):
        raise RuntimeError("injected failure while computing updates")


class UndeclaredFactors(NudgesInFactors):
    """Offers factors for a module whose weight it does not declare."""

    name = "undeclared-factors"

    def compute_updates(self, edit_groups, bases):
        updates = super().compute_updates(edit_groups, bases)
        return [update + type(update)({"model.layers.0.mlp.up_proj": (torch.ones(128, 1), torch.ones(64, 1))}) for update in updates]


class ConstructorRaises(_Nudges):
    """Fails while it is built (a plugin's constructor reading a missing resource)."""

    name = "constructor-raises"

    def __init__(self, loaded, settings):
        raise RuntimeError("injected failure in the constructor")


# Module editors (Editor.kind = "modules"): patches the harness installs, on tiny-llama.

from pitfalls_editkit import ModuleEditor, Patch  # noqa: E402

STEERED = "model.layers.1"  # tiny-llama's last decoder layer


class AddVector(Patch):
    """Adds its vectors, one per edit, to the layer's hidden states: a real (if crude) side memory that grows."""

    def __init__(self, width: int, device) -> None:
        super().__init__()
        self.register_buffer("vectors", torch.zeros(0, width, device=device))

    def forward(self, inputs, output):
        hidden = output[0] if isinstance(output, tuple) else output
        hidden = hidden + self.vectors.sum(0)
        return (hidden, *output[1:]) if isinstance(output, tuple) else hidden


class Steer(ModuleEditor):
    """Moves the last layer's output toward the new object's unembedding: one vector per edit, in one growing patch."""

    name = "steer"
    supports_batch = True

    def __init__(self, loaded, settings):
        super().__init__(loaded, settings)
        self.patch: AddVector | None = None

    def direction(self, edit) -> torch.Tensor:
        tok, unembed = self.loaded.tokenizer, self.loaded.model.get_output_embeddings().weight
        new, old = (tok(" " + label, add_special_tokens=False).input_ids[0] for label in (edit.new_object.label, edit.object.label))
        return (unembed[new] - unembed[old]).detach() * 20.0

    def apply(self, edits):
        if self.patch is None:
            self.patch = AddVector(self.loaded.model.config.hidden_size, self.loaded.device)
        self.patch.vectors = torch.cat([self.patch.vectors, torch.stack([self.direction(e) for e in edits])])
        return {STEERED: self.patch}

    def model_restored(self):
        self.patch = None


class SteerFailsThird(Steer):
    """Grows its patch, then fails, on the third edit it is given: the chain must roll the patch back."""

    name = "steer-fails-third"

    def __init__(self, loaded, settings):
        super().__init__(loaded, settings)
        self.calls = 0

    def apply(self, edits):
        self.calls += 1
        patches = super().apply(edits)
        if self.calls == 3:
            raise RuntimeError("injected failure on the third edit")
        return patches


class SteerLeavesAHook(Steer):
    """Registers a hook of its own besides its patch."""

    name = "steer-leaves-a-hook"

    def apply(self, edits):
        self.loaded.model.get_submodule(STEERED).register_forward_hook(lambda module, inputs, output: None)
        return super().apply(edits)


class SteerChangesAWeight(Steer):
    """Also writes a weight, which a module editor may not."""

    name = "steer-changes-a-weight"

    def apply(self, edits):
        with torch.no_grad():
            self.loaded.model.get_parameter(DECLARED).add_(0.01)
        return super().apply(edits)


class SteerAddsAModule(Steer):
    """Puts a module of its own into the model instead of returning a patch for the harness to install."""

    name = "steer-adds-a-module"

    def apply(self, edits):
        self.loaded.model.get_submodule(STEERED).extra = torch.nn.Identity()
        return super().apply(edits)


class SteerReturnsNothing(Steer):
    """Forgets to return its patches."""

    name = "steer-returns-nothing"

    def apply(self, edits):
        super().apply(edits)


class Exploding(AddVector):
    def forward(self, inputs, output):
        raise RuntimeError("injected failure inside the patch")


class SteerPatchRaisesInScoring(Steer):
    """In the first case it edits, its patch raises when the model runs (while the case scores); later cases are
    plain Steer: the first case is an error, and the next begins with no patch left."""

    name = "steer-patch-raises"
    exploded = False

    def apply(self, edits):
        super().apply(edits)
        if not SteerPatchRaisesInScoring.exploded:
            SteerPatchRaisesInScoring.exploded = True
            self.patch.__class__ = Exploding
        return {STEERED: self.patch}


# Context editors (Editor.kind = "context"): a prompt transform the harness applies to every scored prompt.

from pitfalls_editkit.contexts import Context  # noqa: E402
from pitfalls_editkit.contract import ContextEditor  # noqa: E402


class StatedFacts(Context):
    """Every edit in force stated before the prompt."""

    def __init__(self) -> None:
        self.facts: list[str] = []

    def apply(self, prompt):
        return "".join(f"{fact}. " for fact in self.facts) + prompt


class Preface(ContextEditor):
    """States each edit as a sentence before the prompt: a crude in-context editor that grows along a chain."""

    name = "preface"
    supports_batch = True

    def __init__(self, loaded, settings):
        super().__init__(loaded, settings)
        self.context: StatedFacts | None = None

    def apply(self, edits):
        if self.context is None:
            self.context = StatedFacts()
        self.context.facts += [f"{e.prompt} {e.new_object.label}" for e in edits]
        return self.context

    def model_restored(self):
        self.context = None


class PrefaceChangesAWeight(Preface):
    """States its edits and also writes into a weight it may not touch."""

    name = "preface-changes-a-weight"

    def apply(self, edits):
        with torch.no_grad():
            self.loaded.model.get_submodule("model.layers.0.mlp.down_proj").weight[0, 0] += 1.0
        return super().apply(edits)


class PrefaceReturnsNothing(Preface):
    name = "preface-returns-nothing"

    def apply(self, edits):
        super().apply(edits)


class PrefaceFailsThird(Preface):
    """Grows its context, then fails, on the third edit: the chain must roll the context back."""

    name = "preface-fails-third"

    def __init__(self, loaded, settings):
        super().__init__(loaded, settings)
        self.calls = 0

    def apply(self, edits):
        self.calls += 1
        context = super().apply(edits)
        if self.calls == 3:
            raise RuntimeError("injected failure on the third edit")
        return context
