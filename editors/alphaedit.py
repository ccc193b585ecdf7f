"""AlphaEdit: null-space constrained knowledge editing (Fang et al., ICLR 2025), as in the original code.

MEMIT's procedure with each layer's update projected onto the null space of
the preserved knowledge, so that keys the model already stores are (nearly)
left alone:

    P = U0 U0^T, U0 = the eigenvectors of C whose eigenvalues are < nullspace_threshold
    dW^T = (P (K K^T + K_p K_p^T) + L2 I)^-1 P K R^T

with ``C`` the same second moment as MEMIT's (so ``P`` is cached beside the
statistics) and ``K_p`` the keys of the edits made earlier on this model
(the chain of a case, or of a sequential run); they are forgotten when the
harness restores the model. ``mom2_update_weight`` is kept in the published
files but AlphaEdit does not read it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from editors.memit import MEMIT, MEMITHyperParams
from editors.second_moment import editor_second_moment, stats_source
from pitfalls_editkit.cache import cached_tensors
from pitfalls_editkit.contract import Editor, EditorSettings
from pitfalls_editkit.facts import Edit
from pitfalls_editkit.hparams import bounded, module_name
from pitfalls_editkit.models import LoadedModel


@dataclass(frozen=True, kw_only=True)
class AlphaEditHyperParams(MEMITHyperParams):
    nullspace_threshold: float = bounded(above=0)
    L2: float = bounded(0)


def null_space_projection(moment: torch.Tensor, threshold: float) -> torch.Tensor:
    """``U0 U0^T`` over the eigenvectors of ``moment`` whose eigenvalues are below ``threshold`` (float32, as the reference)."""
    u, s, _ = torch.linalg.svd(moment.float().cpu(), full_matrices=False)
    small = u[:, s < threshold]
    return small @ small.T


class AlphaEdit(MEMIT):
    name = "alphaedit"
    supports_batch = True
    hparams_class = AlphaEditHyperParams
    # Not offered: an edit's update depends on the keys of its case's earlier edits, which a base's factors do not
    # carry; with --case-batch its cases run one at a time (first edits prepared together).
    can_compute_updates = False
    compute_updates = Editor.compute_updates

    def __init__(self, loaded: LoadedModel, settings: EditorSettings) -> None:
        super().__init__(loaded, settings)
        self._projections: dict[str, torch.Tensor] = {}
        self._earlier_keys: dict[str, torch.Tensor] = {}  # per module: K_p K_p^T of the edits since the model was restored

    def projection(self, rewrite: str) -> torch.Tensor:
        """``P`` for one module (float64 on the model's device), cached on disk beside the statistics it comes from."""
        if rewrite not in self._projections:
            hp = self.hparams
            source = stats_source(self.loaded, self.settings, rewrite, hp.mom2_n_samples, hp.mom2_dtype)
            path = source.beside(f"nullspace_{hp.nullspace_threshold:g}")
            moment = lambda: editor_second_moment(self.loaded, self.settings, rewrite, hp.mom2_n_samples, hp.mom2_dtype)
            stored = cached_tensors(path, lambda: {"projection": null_space_projection(moment(), hp.nullspace_threshold)})
            self._projections[rewrite] = stored["projection"].double().to(self.loaded.device)
        return self._projections[rewrite]

    def layer_factors(self, rewrite: str, keys: torch.Tensor, residual: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        projection = self.projection(rewrite)
        gram = keys @ keys.T
        if rewrite in self._earlier_keys:
            gram = gram + self._earlier_keys[rewrite]
        eye = torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device)
        # dW^T = (P G + L2 I)^-1 P K R^T: (out, n) and (in, n) factors
        return residual, torch.linalg.solve(projection @ gram + self.hparams.L2 * eye, projection @ keys)

    def after_update(self, edits: Sequence[Edit]) -> None:
        """Remember the batch's keys on the edited model, as the reference's ``cache_c``."""
        for layer in self.hparams.layers:
            rewrite = module_name(self.hparams.rewrite_module_tmp, layer)
            keys = self.edit_keys(edits, rewrite)
            self._earlier_keys[rewrite] = self._earlier_keys.get(rewrite, 0) + keys @ keys.T

    def model_restored(self) -> None:
        super().model_restored()
        self._earlier_keys.clear()
