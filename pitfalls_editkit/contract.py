"""The editor contract: what the harness asks of every editing method, shipped or a plugin's.

Three kinds of editor (``Editor.kind``), each undone by the harness and proven undone after every case:

* ``weights`` (:class:`Editor`; FT, ROME, MEMIT, MEND, AlphaEdit): ``apply`` overwrites declared parameters in
  place; the harness clones them first and copies them back.
* ``modules`` (:class:`ModuleEditor`; GRACE, WISE, LoRA): ``apply`` returns patches (computation at named
  modules); the harness installs them as forward hooks, journals them, removes them.
* ``context`` (:class:`ContextEditor`; IKE): ``apply`` returns a context (a prompt transform); the harness
  applies it to every scored prompt, journals it, clears it.

The rest of this docstring is the weight editors' contract; the other two kinds' classes say what differs.

An editor is a subclass of :class:`Editor`. The harness builds it once per
worker from the loaded model and the run's settings, then for every edit of a
case it

1. asks :meth:`Editor.declared_parameters` which parameters the edit may
   change (names as in ``model.named_parameters()``, or ``ALL_PARAMETERS``),
2. clones exactly those tensors (the harness owns the undo),
3. seeds torch (``torch.manual_seed``) with the case's seed,
4. calls :meth:`Editor.apply` with the edits, which changes the model in place,
5. checks, with a fingerprint of every parameter and buffer computed on the
   device, that nothing outside the declared set changed, that no hook was
   left on a module, and that no ``requires_grad`` flag, train/eval mode or
   config value changed.

After the case it copies the clones back, calls :meth:`Editor.model_restored`
and checks that every tensor is bit for bit what it was. A violation, or an exception raised by ``apply``, is
recorded as that case's error (naming the editor and the parameter); the
model is restored and the next case runs on the original weights.

Optional work ahead, each declared by a class attribute. With ``--case-batch K``
an editor that sets ``can_prepare`` gets :meth:`Editor.prepare` with the edits the next K cases will make on the
original model; an editor may compute them together there (one batched pass
instead of K) and use the result in ``apply`` while the model is unchanged.
It must not change the model (the guard checks, as after an edit), and the
updates must equal those made without it (the contract checker compares).
An editor whose updates are low-rank may also offer
:meth:`Editor.compute_updates` (``can_compute_updates``): then the K cases run
together, each case's edited model a per-row hook on the original weights,
and ``prepare`` is not called (it is called only when running together fails).

Inputs. ``edits`` is a list of :class:`pitfalls_editkit.facts.Edit`: ``subject``,
``object`` (the fact's current object), ``new_object`` (``Entity(id, label)``)
and ``relation`` (``Relation(id, prompt, query, label)``, where ``prompt`` is
the rewrite prompt with one ``{}`` for the subject; ``Edit.prompt`` is it
filled in; use :func:`pitfalls_editkit.facts.fill`, never ``str.format``). One edit
unless the editor sets ``supports_batch = True``; then the harness may pass
several that must be applied as one joint update (``--mle`` needs it).

May and may not. ``apply`` may change the values of its declared parameters,
in place. It must not change buffers, the config, module structure,
``requires_grad`` flags (set them back in a ``finally`` if you train), the
train/eval mode, or leave hooks behind (use ``pitfalls_editkit.nethook.Trace`` or
remove your handles in a ``finally``). It must not undo its own edit: the
harness does. It may cache what depends only on the model (statistics,
templates) on ``self`` or under ``settings.cache_dir``, keyed by
``loaded.fingerprint``.

Determinism: the harness seeds torch per case; draw randomness from torch's
global generator (or seed your own from ``settings.seed``) and the same case
gives the same edit.

Devices and dtypes: the model is on ``loaded.device`` (CPU, or one CUDA
device per worker) in the run's ``--dtype``; create tensors with
``device=loaded.device`` (never a hard-coded ``"cuda"``) and write updates
in the parameter's own dtype.

Cost of ``ALL_PARAMETERS``: the harness then clones every parameter before
the first edit of each case (one more copy of the model in its device's
memory and a full copy per case); declare the few tensors you change instead.
"""

from __future__ import annotations

import abc
import inspect
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from pitfalls_editkit.facts import Edit, ExampleEdit
from pitfalls_editkit.hparams import HyperParamsError, check_templates, editor_hparams, find_hparams_file

if TYPE_CHECKING:
    from pitfalls_editkit.contexts import Context
    from pitfalls_editkit.low_rank import LowRankUpdate
    from pitfalls_editkit.models import LoadedModel
    from pitfalls_editkit.patches import Patch

ALL_PARAMETERS = "all"  # what an editor that cannot say which parameters it changes declares
WEIGHTS, MODULES, CONTEXT = "weights", "modules", "context"  # the kinds of editor (Editor.kind)
KINDS = (WEIGHTS, MODULES, CONTEXT)

T = TypeVar("T")


@dataclass(frozen=True)
class EditorSettings:
    """Harness-level settings an editor may need, beyond its hyper-parameters."""

    cache_dir: Path
    stats_corpus: str = "gensim-wiki"  # text behind second-moment statistics (ROME, MEMIT and descendants)
    stats_tokens: int = 100_000  # corpus tokens behind the second-moment statistics (paragraph corpora)
    stats_dir: Path | None = None  # --stats-dir: statistics in the reference's .npz layout, read and written there
    hparams_values: tuple[tuple[str, Any], ...] = ()  # --hparams-set KEY=VALUE: single keys replaced in the file's values
    seed: int = 0  # the run's base seed (each case's own seed is set by the harness)
    hparams_file: Path | None = None  # --hparams: overrides the per-model file
    dataset_edits: Callable[[], Sequence[ExampleEdit]] = tuple  # the run's dataset's edits, read on first call (IKE's demonstrations)


def _no_entity_of(edits: Sequence[Edit]) -> Callable[[Edit], bool]:
    """Whether an example edit shares no entity (by id, else by label) with ``edits``."""
    taken = {key for e in edits for entity in (e.subject, e.object, e.new_object) for key in (entity.id, entity.label) if key}

    def keep(example: Edit) -> bool:  # "" is never in ``taken``, so an empty id or label matches nothing
        subject, old, new = example.subject, example.object, example.new_object
        return taken.isdisjoint((subject.id, subject.label, old.id, old.label, new.id, new.label))

    return keep


def unrelated_examples(settings: EditorSettings, edits: Sequence[Edit]) -> list[ExampleEdit]:
    """The dataset's example edits that share no subject or object with ``edits`` (never the case's own facts)."""
    keep = _no_entity_of(edits)
    return [example for example in settings.dataset_edits() if keep(example.edit)]


def declared_names(editor: Editor, model: Any) -> list[str]:
    """The parameter names ``editor`` declares, with ``ALL_PARAMETERS`` spelled out as every parameter of ``model``."""
    declared = editor.declared_parameters()
    return list(dict(model.named_parameters())) if declared == ALL_PARAMETERS else list(declared)


def capabilities(editor: type[Editor] | Editor) -> list[str]:
    """What an editor declares it offers beyond ``apply``: ``batch`` (several edits as one update; ``--mle``),
    ``prepare`` and ``compute_updates`` (``--case-batch``)."""
    flags = (("supports_batch", "batch"), ("can_prepare", "prepare"), ("can_compute_updates", "compute_updates"))
    return [name for flag, name in flags if getattr(editor, flag, False)]


class Editor(abc.ABC):
    """An editing method bound to one loaded model. See the module docstring for the whole contract.

    Subclasses set ``name`` and ``supports_batch`` and implement
    :meth:`declared_parameters` and :meth:`apply`; :meth:`describe` adds
    what to echo in the results (the hyper-parameters and their file). An
    editor that offers an optional method declares it: ``can_prepare = True``
    for :meth:`prepare`, ``can_compute_updates = True`` for
    :meth:`compute_updates` (the contract checker reports a method defined but
    not declared, or declared but not defined).
    """

    name: ClassVar[str]
    kind: ClassVar[str] = WEIGHTS  # weights: apply() overwrites declared parameters; see ModuleEditor, ContextEditor
    supports_batch: ClassVar[bool] = False  # can apply several edits as one joint update (needed by --mle)
    can_prepare: ClassVar[bool] = False  # offers prepare(): the harness calls it only when this is True
    can_compute_updates: ClassVar[bool] = False  # offers compute_updates(): likewise
    hparams_dir: ClassVar[Path | None] = None  # where <model>.json files live; default: hparams/<name>/ or hparams/ beside the module

    def __init__(self, loaded: LoadedModel, settings: EditorSettings) -> None:
        self.loaded = loaded
        self.settings = settings

    @abc.abstractmethod
    def declared_parameters(self) -> Collection[str] | str:
        """Names of the parameters :meth:`apply` may change, or ``ALL_PARAMETERS``."""

    @abc.abstractmethod
    def apply(self, edits: Sequence[Edit]) -> None:
        """Edit the model in place (the harness has cloned the declared parameters and will undo)."""

    def describe(self) -> dict[str, Any]:
        """The configuration to echo in results."""
        return {}

    def prepare(self, edits: Sequence[Edit]) -> None:
        """Optional: work ahead for ``edits`` that will each be applied, one case at a time, to the model as it is now.

        With ``--case-batch K`` the harness calls it on the original model with
        the first edit of each of the next K cases, before the first of them
        runs; each case then applies its edit and the model is restored in
        between. An editor may compute here, batched, what depends only on the
        model as it is now (ROME's and MEMIT's value optimisation) and use it in
        :meth:`apply` while the model is still in that state (it is again after
        :meth:`model_restored`). It must not change the model. The default does
        nothing: every edit is computed in ``apply``, as without case batching.
        """
        return None

    def compute_updates(self, edit_groups: Sequence[Sequence[Edit]],
                        bases: Sequence[LowRankUpdate | None]) -> list[LowRankUpdate] | None:
        """Optional: the update each group of edits would make, as low-rank factors, without changing the model.

        Group ``i`` is what one :meth:`apply` call would get, on the model as it
        is now plus ``bases[i]`` (the earlier edits of that group's case, as
        factors; None: none). Return one :class:`pitfalls_editkit.low_rank.LowRankUpdate`
        per group: for each changed module ``M``, ``(left, right)`` such that
        ``apply`` would add ``left @ right.T`` (laid out ``(out, in)``) to
        ``M.weight``; every other parameter unchanged. Compute the groups
        together where you can (one batched optimisation for all of them);
        with :meth:`pitfalls_editkit.low_rank.RowUpdates` a batch row sees its own base.

        An editor that offers this lets ``--case-batch K`` run K cases
        together, the edits that depend on each case's own edited model and the
        scoring of those models included, while the weights stay original (the
        guard checks they do). The updates must equal what :meth:`apply` does
        (the contract checker compares), and depend on nothing but the model
        and the edits (the K cases share one seed). The default returns None:
        the cases then run one at a time.
        """
        return None

    def model_restored(self) -> None:
        """The harness has put the model back to its original weights (after every case, at the end of a chain).

        Forget what depends on the edits made since (AlphaEdit keeps the keys of
        earlier edits to protect them). Most editors keep nothing of the kind.
        """
        return None

    # Hyper-parameters ------------------------------------------------------------

    @classmethod
    def hparams_folder_groups(cls) -> list[list[Path]]:
        """Where this editor's ``<checkpoint or family>.json`` files are looked for: one group of folders per editor
        class, the class itself first, then each editor class it derives from.

        A class's group is its ``hparams_dir`` when it sets one, else ``hparams/<name>/`` and ``hparams/`` beside its
        module. Every group is searched (checkpoint name, then family) before the next, so a subclass in another
        package uses its own files and falls back to its parent's. The files must be package data of the package
        they sit in (``[tool.setuptools.package-data]``), or an installed editor finds none.
        """
        groups: list[list[Path]] = []
        seen: set[Path] = set()
        for klass in cls.__mro__:
            if not (isinstance(klass, type) and issubclass(klass, Editor)) or klass is Editor:
                continue
            own = klass.__dict__.get("hparams_dir")
            if own is not None:
                found = [Path(own)]
            else:
                beside = Path(inspect.getfile(klass)).parent / "hparams"
                found = [beside / cls.name, beside / klass.__dict__.get("name", cls.name), beside]
            group = [folder for folder in dict.fromkeys(found) if folder not in seen]
            seen.update(group)
            if group:
                groups.append(group)
        return groups

    @classmethod
    def hparams_folders(cls) -> list[Path]:
        """Every folder :meth:`hparams_folder_groups` searches, in order."""
        return [folder for group in cls.hparams_folder_groups() for folder in group]

    def _hparams_file(self) -> Path:
        """The first ``<checkpoint>.json``, then ``<family>.json``, of the first group of folders that has one."""
        keys = [self.loaded.hparams_key, self.loaded.family]
        for folders in self.hparams_folder_groups():
            try:
                return find_hparams_file(self.name, folders, keys)
            except HyperParamsError:
                continue
        return find_hparams_file(self.name, self.hparams_folders(), keys)  # raises, naming every folder searched

    def load_hparams(self, hparams_class: type[T]) -> tuple[Path, T]:
        """``--hparams FILE`` if given, else the file for this model's checkpoint name, then its family.

        Checked on load: unknown, missing and mistyped keys, ``bounded`` ranges, and every module-name template
        (fields named ``*_tmp`` or ``*_tmps``, filled with each of ``layers``) against the model.
        """
        path = self.settings.hparams_file or self._hparams_file()
        path, hparams = editor_hparams(self.name, [], hparams_class, self.loaded, path, dict(self.settings.hparams_values))
        check_templates(path, self.loaded.model, hparams, self.loaded.num_layers)
        return path, hparams


class ModuleEditor(Editor):
    """An editor that adds computation beside the model instead of overwriting it (GRACE, WISE, adapters).

    :meth:`apply` returns the patches that must be in place after the edit: a mapping of module name (as in
    ``model.named_modules()``) to :class:`pitfalls_editkit.patches.Patch`. The harness installs each as a forward
    hook on that module (every forward pass, scoring and generation included, runs through it). A patch returned
    again, changed in place (a codebook that grew), stays installed; another object at the same module replaces it.
    Keep the editor's edit state inside its patches: the harness copies them before each edit and, in a chain
    (``--sequential``), puts a failed edit's patches back as they were, in place.

    The harness removes every patch when the case ends (in a chain: when the chain or its segment ends), then calls
    :meth:`model_restored`: start the next case with no patch. It proves the removal: no hook left, the module tree
    unchanged, every parameter and buffer bit-identical. A module editor changes no parameter
    (:meth:`declared_parameters` is empty and the guard checks it), registers no hook of its own and adds no module
    to the model. ``--case-batch`` runs its cases one at a time (it offers neither ``prepare`` nor
    ``compute_updates``); ``--mle`` needs ``supports_batch``.
    """

    kind: ClassVar[str] = MODULES

    def declared_parameters(self) -> Collection[str] | str:
        return []

    @abc.abstractmethod
    def apply(self, edits: Sequence[Edit]) -> Mapping[str, Patch]:  # type: ignore[override]
        """The patches to have installed after ``edits`` (module name -> Patch)."""


class ContextEditor(Editor):
    """An editor that changes what the model is given, not the model (IKE: the edit and demonstrations in the prompt).

    :meth:`apply` returns the :class:`pitfalls_editkit.contexts.Context` to have in force after the edits: every
    prompt the harness scores (and generates from) is passed through ``context.apply(prompt)`` while it is. Return
    the same object, changed, to add to it (a chain's facts accumulate), or a new one to replace it. Keep the edit
    state on the context: the harness copies it before each edit and, in a chain (``--sequential``), puts a failed
    edit's context back as it was, in place.

    The harness clears the context when the case ends (in a chain: when the chain or its segment ends), then calls
    :meth:`model_restored`. A context editor changes no parameter (:meth:`declared_parameters` is empty; the guard
    proves every weight bit-identical), registers no hook and adds no module. ``--case-batch`` runs its cases one at
    a time; ``--mle`` needs ``supports_batch``. ``settings.dataset_edits()`` gives the run's dataset's edits
    (demonstrations); :func:`unrelated_examples` leaves out those that share an entity with the edits.
    """

    kind: ClassVar[str] = CONTEXT

    def declared_parameters(self) -> Collection[str] | str:
        return []

    @abc.abstractmethod
    def apply(self, edits: Sequence[Edit]) -> Context:  # type: ignore[override]
        """The context to have in force after ``edits``."""
