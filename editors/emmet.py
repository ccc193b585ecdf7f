"""EMMET: Equality-constrained Mass Model Editing in a Transformer (Gupta et al., 2024), as in the original code.

MEMIT's procedure (targets in the residual stream of the last edited layer,
keys at the MLP output projections, the residual spread over the layers) with
ROME's equality-constrained objective solved for a whole batch: the update
preserves the keys' statistics ``C`` (least squares) subject to every edited
key mapping exactly to its target,

    dW = R (K^T C'^-1 K + emmet_lambda I)^-1 K^T C'^-1,
    C' = mom2_update_weight * C + update_norm_lambda * I,

where ``emmet_lambda`` (only for batches of two or more) keeps the batch's
Gram matrix invertible, as in the reference code (unified-model-editing).
With one edit and one layer this is ROME's update with MEMIT's targets.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from editors.memit import MEMIT, MEMITHyperParams
from pitfalls_editkit.hparams import bounded


@dataclass(frozen=True, kw_only=True)
class EMMETHyperParams(MEMITHyperParams):
    emmet_lambda: float = bounded(0)
    update_norm_lambda: float = bounded(0)


class EMMET(MEMIT):
    name = "emmet"
    supports_batch = True
    hparams_class = EMMETHyperParams

    def layer_factors(self, rewrite: str, keys: torch.Tensor, residual: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hp = self.hparams
        cov = hp.mom2_update_weight * self.covariance(rewrite).double()
        if hp.update_norm_lambda:
            cov = cov + hp.update_norm_lambda * torch.eye(cov.shape[0], dtype=cov.dtype, device=cov.device)
        whitened = torch.linalg.solve(cov, keys)  # C'^-1 K, (in, n)
        gram = keys.T @ whitened  # K^T C'^-1 K, (n, n)
        if gram.shape[0] > 1:
            gram = gram + hp.emmet_lambda * torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device)
        return residual, torch.linalg.solve(gram, whitened.T).T  # dW = R (K^T C'^-1 K)^-1 K^T C'^-1: (out, n), (in, n)
