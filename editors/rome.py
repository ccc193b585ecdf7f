"""ROME: Rank-One Model Editing (Meng et al., 2022), as in the original code.

For an edit ``(s, r, o -> o*)`` at one MLP output projection ``W``:

* key ``k*``: the projection's input at the subject's last token, averaged
  over context templates; ``u = C^-1 k* / |C^-1 k*|`` with ``C`` the keys'
  second moment over a text corpus;
* value ``v*``: the projection's output at that token plus a vector ``delta``
  optimised (Adam) so the model says ``o*`` after every context template
  (NLL), keeps its distribution on "{s} is a" (KL) and stays small (weight
  decay, and the L2 clamp at ``clamp_norm_factor * |v_init|``);
* update ``W += u (v* - W k) ^T / (k . u)`` (one rank-one matrix).

The loss is taken on the model's own output logits, i.e. at the last layer,
which is what the published ``v_loss_layer`` values select.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from editors.context_templates import context_templates
from editors.representations import subject_io
from editors.second_moment import MOM2_DTYPES, describe_stats, editor_second_moment
from editors.value_optimization import PreparedTargets, ValueObjective
from pitfalls_editkit.contract import Editor, EditorSettings
from pitfalls_editkit.facts import Edit, fill
from pitfalls_editkit.hparams import as_dict, bounded, check_value_hparams, module_name
from pitfalls_editkit.low_rank import LowRankUpdate, combined, uniform_update, weight_update
from pitfalls_editkit.models import LoadedModel
from pitfalls_editkit.nethook import get_module


@dataclass(frozen=True)
class ROMEHyperParams:
    layers: list[int] = bounded(0, nonempty=True)
    fact_token: str
    v_num_grad_steps: int = bounded(1)
    v_lr: float = bounded(above=0)
    v_loss_layer: int
    v_weight_decay: float = bounded(0)
    clamp_norm_factor: float = bounded(above=0)
    kl_factor: float = bounded(0)
    mom2_adjustment: bool
    context_template_length_params: list[list[int]] = bounded(1)
    rewrite_module_tmp: str
    mom2_n_samples: int = bounded(1)
    mom2_dtype: str


def check_rome_hparams(path: Any, hp: ROMEHyperParams, loaded: LoadedModel) -> None:
    check_value_hparams(path, hp, loaded.num_layers, MOM2_DTYPES)  # module templates: Editor.load_hparams checked them


# --------------------------------------------------------------------------- the method


class ROME(Editor):
    name = "rome"
    can_prepare = True
    can_compute_updates = True
    supports_batch = False

    def __init__(self, loaded: LoadedModel, settings: EditorSettings) -> None:
        super().__init__(loaded, settings)
        self.hparams_path, self.hparams = self.load_hparams(ROMEHyperParams)
        check_rome_hparams(self.hparams_path, self.hparams, loaded)
        self._templates: list[str] | None = None
        self._inv_cov: dict[str, torch.Tensor] = {}  # per module, for this model only
        self._prepared = PreparedTargets()  # --case-batch: targets optimised ahead on the unedited model

    def describe(self) -> dict[str, Any]:
        return {"hparams_file": str(self.hparams_path), "hparams": as_dict(self.hparams), **describe_stats(self.settings)}

    # The two cached ingredients -------------------------------------------------

    def context_templates(self) -> list[str]:
        if self._templates is None:
            self._templates = context_templates(
                self.loaded, self.hparams.context_template_length_params, self.settings.seed, self.settings.cache_dir
            )
        return self._templates

    def inverse_covariance(self, module_name: str) -> torch.Tensor:
        if module_name not in self._inv_cov:
            moment = editor_second_moment(self.loaded, self.settings, module_name, self.hparams.mom2_n_samples, self.hparams.mom2_dtype,
                                          invertible=True)
            self._inv_cov[module_name] = torch.linalg.inv(moment.double()).to(torch.float32)
        return self._inv_cov[module_name]

    # Editing ---------------------------------------------------------------------

    def declared_parameters(self) -> list[str]:
        return [f"{module_name(self.hparams.rewrite_module_tmp, layer)}.weight" for layer in self.hparams.layers]

    def prepare(self, edits: Sequence[Edit]) -> None:
        """The first layer's targets of ``edits``, in one batched optimisation."""
        name = module_name(self.hparams.rewrite_module_tmp, sorted(self.hparams.layers)[0])
        self._prepared.prepare(self.loaded, edits, self.context_templates(), name, ValueObjective.from_hparams(self.hparams))

    def model_restored(self) -> None:
        self._prepared.model_restored()

    def apply(self, edits: Sequence[Edit]) -> None:
        for edit in edits:  # ROME edits one fact at a time
            for layer in sorted(self.hparams.layers):
                name = module_name(self.hparams.rewrite_module_tmp, layer)
                update = self._update(edit, name, None)
                module = get_module(self.loaded.model, name)
                with torch.no_grad():
                    module.weight += weight_update(module, update.dense(name)).to(module.weight.dtype)
                self._prepared.model_changed()

    def compute_updates(self, edit_groups: Sequence[Sequence[Edit]], bases: Sequence[LowRankUpdate | None]) -> list[LowRankUpdate]:
        """Each group's rank-one updates on the model plus its base, without writing them (``--case-batch``).

        The first edit of every group is optimised in one batch; further edits
        of a group (and further layers) follow one at a time, each on the
        group's base plus what the group has changed so far, as :meth:`apply` does.
        """
        layers = [module_name(self.hparams.rewrite_module_tmp, layer) for layer in sorted(self.hparams.layers)]
        leading = self._prepared.targets(self.loaded, [group[0] for group in edit_groups], self.context_templates(), layers[0],
                                         ValueObjective.from_hparams(self.hparams), bases)
        updates = []
        for group, base, target in zip(edit_groups, bases, leading):
            own: LowRankUpdate | None = None
            for number, edit in enumerate(group):
                for name in layers:
                    ready = target if number == 0 and name == layers[0] else None
                    own = combined(own, self._update(edit, name, combined(base, own), ready))
            updates.append(own or LowRankUpdate())
        return updates

    def _update(self, edit: Edit, name: str, base: LowRankUpdate | None, target: torch.Tensor | None = None) -> LowRankUpdate:
        """The rank-one update of module ``name`` for ``edit`` on the model plus ``base`` (None: the model as it is)."""
        self.context_templates()  # what depends on the unedited model only is computed outside the base's hooks
        if self.hparams.mom2_adjustment:
            self.inverse_covariance(name)
        if target is None:  # prepared ahead when valid
            target = self._prepared.targets(self.loaded, [edit], self.context_templates(), name,
                                            ValueObjective.from_hparams(self.hparams), [base])[0]
        with uniform_update(self.loaded.model, base):
            left = self.compute_left_vector(edit, name)
            right = self.compute_right_vector(edit, name, left, target)
        return LowRankUpdate({name: (right[:, None], left[:, None])})

    def compute_left_vector(self, edit: Edit, module_name: str) -> torch.Tensor:
        """``u``: the whitened, normalised key of the subject, averaged over context templates."""
        templates = [fill(t, edit.relation.prompt) for t in self.context_templates()]
        keys, _ = subject_io(self.loaded, templates, edit.subject.label, module_name)
        u = keys.mean(0)
        if self.hparams.mom2_adjustment:
            u = self.inverse_covariance(module_name) @ u
        return u / u.norm()

    def compute_right_vector(self, edit: Edit, module_name: str, left: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``v``: from the optimised output ``target`` at the subject, solve ``W k + u·k v = target``."""
        cur_input, cur_output = subject_io(self.loaded, [edit.relation.prompt], edit.subject.label, module_name)
        return (target - cur_output[0]) / torch.dot(cur_input[0], left)
