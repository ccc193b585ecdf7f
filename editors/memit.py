"""MEMIT: Mass-Editing Memory in a Transformer (Meng et al., 2023), as in the original code.

For a batch of edits:

1. ``z_i``: for each edit, the residual stream (output of layer ``L = layers[-1]``)
   at the subject's last token, optimised like ROME's value so the model says
   the new object (editors/value_optimization.py);
2. for each layer ``l`` in ``layers``, in order: keys ``K`` (the MLP output
   projection's inputs at the subjects, averaged over context templates), the
   residual ``R = (Z - current z) / (layers left)``, and the least-squares update
   ``dW = R K^T (lambda C + K K^T)^-1`` with ``C`` the keys' second moment and
   ``lambda = mom2_update_weight``. Later layers see the earlier layers' updates.

Gemma-3 normalises the MLP output (``post_feedforward_layernorm``) before it
joins the residual stream, so a residual-stream change is not an MLP-output
change. With ``post_mlp_norm_tmp`` set, the wanted residual change is mapped
back through that RMS norm (scale-invariant: the MLP output keeps its RMS and
takes the direction that the norm turns into the wanted output).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from editors.context_templates import context_templates
from editors.representations import module_io_at, subject_io, subject_last_index
from editors.second_moment import MOM2_DTYPES, describe_stats, editor_second_moment
from editors.value_optimization import PreparedTargets, ValueObjective
from pitfalls_editkit.contract import Editor, EditorSettings
from pitfalls_editkit.facts import Edit, fill
from pitfalls_editkit.hparams import HyperParamsError, as_dict, bounded, check_value_hparams, module_name
from pitfalls_editkit.low_rank import LowRankUpdate, combined, uniform_update, weight_update
from pitfalls_editkit.models import LoadedModel
from pitfalls_editkit.nethook import get_module


@dataclass(frozen=True)
class ResidualEditHyperParams:
    """What MEMIT and its descendants (EMMET, AlphaEdit) share: targets in the residual stream, keys at MLP projections."""

    layers: list[int] = bounded(0, nonempty=True)
    layer_selection: str
    fact_token: str
    v_num_grad_steps: int = bounded(1)
    v_lr: float = bounded(above=0)
    v_loss_layer: int
    v_weight_decay: float = bounded(0)
    clamp_norm_factor: float = bounded(above=0)
    kl_factor: float = bounded(0)
    rewrite_module_tmp: str
    layer_module_tmp: str
    mom2_n_samples: int = bounded(1)
    mom2_dtype: str
    context_template_length_params: list[list[int]] = bounded(1)
    context_template_starts: list[str]
    post_mlp_norm_tmp: str = ""  # Gemma-3: the norm between the MLP output and the residual stream
    post_mlp_norm_ridge: float = dataclasses.field(default=0.01, metadata={"low": 0})  # regularises the mapping through that norm


@dataclass(frozen=True, kw_only=True)
class MEMITHyperParams(ResidualEditHyperParams):
    mom2_update_weight: float = bounded(above=0)


def check_memit_hparams(path: Any, hp: ResidualEditHyperParams, loaded: LoadedModel) -> None:
    check_value_hparams(path, hp, loaded.num_layers, MOM2_DTYPES)
    if hp.layer_selection != "all":
        raise HyperParamsError(f"{path}: layer_selection {hp.layer_selection!r}: only 'all' is supported")
    # Module templates (rewrite_module_tmp, layer_module_tmp, post_mlp_norm_tmp when set): Editor.load_hparams checked them.


def through_rms_norm(norm: torch.nn.Module, mlp_out: torch.Tensor, wanted_change: torch.Tensor, ridge: float) -> torch.Tensor:
    """The MLP-output change whose normalised output moves by about ``wanted_change``.

    An RMS norm is ``y = g * x / r`` with ``r = rms(x)`` (``g`` is read off as
    ``norm(ones)``). Linearised, a change ``dx`` moves ``y`` by ``g / r * dx``
    (less its radial part, which the norm removes). Dimensions with a tiny gain
    would need huge changes that the next normalisation undoes, so the
    least-squares solution is ridge-regularised:
    ``dx = r * g * dy / (g^2 + ridge * mean(g^2))``, then made orthogonal to ``x``.
    """
    with torch.no_grad():
        x = mlp_out.float()
        gain = norm(torch.ones_like(x[:1])).float()[0]
        r = x.pow(2).mean(-1, keepdim=True).sqrt()
        dx = r * gain * wanted_change / (gain.pow(2) + ridge * gain.pow(2).mean())
        unit = x / x.norm(dim=-1, keepdim=True)
        return dx - (dx * unit).sum(-1, keepdim=True) * unit


class MEMIT(Editor):
    """The shared procedure (targets, keys, residuals layer by layer); :meth:`layer_update` is MEMIT's least squares."""

    name = "memit"
    can_prepare = True
    can_compute_updates = True
    supports_batch = True
    hparams_class: type[ResidualEditHyperParams] = MEMITHyperParams

    def __init__(self, loaded: LoadedModel, settings: EditorSettings) -> None:
        super().__init__(loaded, settings)
        self.hparams_path, self.hparams = self.load_hparams(self.hparams_class)
        check_memit_hparams(self.hparams_path, self.hparams, loaded)
        self._templates: list[str] | None = None
        self._cov: dict[str, torch.Tensor] = {}
        self._prepared = PreparedTargets()  # --case-batch: targets optimised ahead on the unedited model

    def describe(self) -> dict[str, Any]:
        return {"hparams_file": str(self.hparams_path), "hparams": as_dict(self.hparams), **describe_stats(self.settings)}

    def context_templates(self) -> list[str]:
        if self._templates is None:
            hp = self.hparams
            self._templates = context_templates(self.loaded, hp.context_template_length_params, self.settings.seed,
                                                self.settings.cache_dir, hp.context_template_starts)
        return self._templates

    def covariance(self, module_name: str) -> torch.Tensor:
        if module_name not in self._cov:
            self._cov[module_name] = editor_second_moment(
                self.loaded, self.settings, module_name, self.hparams.mom2_n_samples, self.hparams.mom2_dtype
            )
        return self._cov[module_name]

    def _subject_outputs(self, edits: Sequence[Edit], module_name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Input and output of ``module_name`` at each edit's subject in its plain prompt (rows = edits)."""
        prompts = [e.relation.prompt for e in edits]
        return module_io_at(self.loaded, [e.prompt for e in edits], module_name,
                            [subject_last_index(self.loaded.tokenizer, p, e.subject.label) for p, e in zip(prompts, edits)])

    def declared_parameters(self) -> list[str]:
        return [f"{module_name(self.hparams.rewrite_module_tmp, layer)}.weight" for layer in self.hparams.layers]

    def prepare(self, edits: Sequence[Edit]) -> None:
        """The residual targets of ``edits`` (each to be applied alone), in one batched optimisation."""
        z_module = module_name(self.hparams.layer_module_tmp, self.hparams.layers[-1])
        self._prepared.prepare(self.loaded, edits, self.context_templates(), z_module, ValueObjective.from_hparams(self.hparams))

    def model_restored(self) -> None:
        self._prepared.model_restored()

    def apply(self, edits: Sequence[Edit]) -> None:
        zs = self._targets(edits, [None] * len(edits))
        self._prepared.model_changed()
        update = self._update(edits, None, zs)
        with torch.no_grad():
            for name, (left, right) in update.factors.items():
                module = get_module(self.loaded.model, name)
                module.weight += weight_update(module, left @ right.T).to(module.weight.dtype)
        self.after_update(edits)

    def compute_updates(self, edit_groups: Sequence[Sequence[Edit]], bases: Sequence[LowRankUpdate | None]) -> list[LowRankUpdate]:
        """Each group's update on the model plus its base, without writing it (``--case-batch``).

        The targets of every group's edits are optimised in one batch (each row
        on its own group's base); the layers then follow group by group, as in :meth:`apply`.
        """
        flat = [edit for group in edit_groups for edit in group]
        zs = self._targets(flat, [base for group, base in zip(edit_groups, bases) for _ in group])
        updates, start = [], 0
        for group, base in zip(edit_groups, bases):
            updates.append(self._update(group, base, zs[start : start + len(group)]))
            start += len(group)
        return updates

    def _targets(self, edits: Sequence[Edit], bases: Sequence[LowRankUpdate | None]) -> torch.Tensor:
        """``(n, hidden)``: the residual-stream targets at the last edited layer (prepared ahead where valid)."""
        z_module = module_name(self.hparams.layer_module_tmp, self.hparams.layers[-1])
        return self._prepared.targets(self.loaded, edits, self.context_templates(), z_module, ValueObjective.from_hparams(self.hparams),
                                      bases)

    def _update(self, edits: Sequence[Edit], base: LowRankUpdate | None, targets: torch.Tensor) -> LowRankUpdate:
        """The spread of ``targets`` over the layers, each layer's keys and residuals read on the model plus ``base``
        plus the layers below it (float64 factors)."""
        hp, model = self.hparams, self.loaded.model
        z_module = module_name(hp.layer_module_tmp, hp.layers[-1])
        zs = targets.T  # (hidden, n)
        self.context_templates()  # what depends on the unedited model only is computed outside the hooks
        own: LowRankUpdate | None = None
        for i, layer in enumerate(hp.layers):
            rewrite = module_name(hp.rewrite_module_tmp, layer)
            with uniform_update(model, combined(base, own)):
                keys = self.edit_keys(edits, rewrite)  # (in, n)
                _, current_z = self._subject_outputs(edits, z_module)
                residual = (zs - current_z.T).double() / (len(hp.layers) - i)  # (hidden, n)
                if hp.post_mlp_norm_tmp:
                    _, mlp_out = self._subject_outputs(edits, rewrite)
                    norm = get_module(model, module_name(hp.post_mlp_norm_tmp, layer))
                    residual = through_rms_norm(norm, mlp_out, residual.T.float(), hp.post_mlp_norm_ridge).T.double()
            left, right = self.layer_factors(rewrite, keys, residual)  # (out, n), (in, n)
            if not (torch.isfinite(left).all() and torch.isfinite(right).all()):
                raise FloatingPointError(f"{self.name}: non-finite update at {rewrite} for {edits[0].describe()}")
            own = combined(own, LowRankUpdate({rewrite: (left, right)}))
        return own

    def edit_keys(self, edits: Sequence[Edit], rewrite: str) -> torch.Tensor:
        """The keys of ``edits`` at ``rewrite``: its input at each subject, averaged over context templates (in, n), float64."""
        templates = self.context_templates()
        return torch.stack([
            subject_io(self.loaded, [fill(t, e.relation.prompt) for t in templates], e.subject.label, rewrite)[0].mean(0)
            for e in edits
        ], dim=1).double()

    def layer_update(self, rewrite: str, keys: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        """The layer's update as one ``(out, in)`` matrix (float64)."""
        left, right = self.layer_factors(rewrite, keys, residual)
        return left @ right.T

    def layer_factors(self, rewrite: str, keys: torch.Tensor, residual: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """MEMIT: ``dW = R K^T (lambda C + K K^T)^-1`` for keys ``K`` (in, n) and residuals ``R`` (out, n), as
        ``(R, (lambda C + K K^T)^-1 K)``: rank at most n (float64)."""
        cov = self.covariance(rewrite).double()
        adjusted_keys = torch.linalg.solve(self.hparams.mom2_update_weight * cov + keys @ keys.T, keys)  # (in, n)
        return residual, adjusted_keys

    def after_update(self, edits: Sequence[Edit]) -> None:
        """Called once the batch is written (AlphaEdit remembers its keys here)."""
