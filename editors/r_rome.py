"""r-ROME: ROME with the key computation made consistent (Gupta et al., 2024, "Rebuilding ROME").

ROME's update ``W += u (v* - W k)^T / (k . u)`` takes ``u`` from the subject's
key averaged over context templates, but ``k`` and ``W k`` from the plain
prompt alone. That asymmetry makes sequential ROME collapse. r-ROME uses the
template-averaged key and output in both places (the reference code's
``enable_random_prefix_keys``); everything else, hyper-parameters included,
is ROME's.
"""

from __future__ import annotations

import torch

from editkit.facts import Edit, fill
from editors.representations import subject_io
from editors.rome import ROME
from editors.value_optimization import ValueObjective, optimize_target


class RROME(ROME):
    name = "r-rome"
    supports_batch = False

    def compute_right_vector(self, edit: Edit, module_name: str, left: torch.Tensor) -> torch.Tensor:
        hp = self.hparams
        objective = ValueObjective(hp.v_num_grad_steps, hp.v_lr, hp.v_weight_decay, hp.kl_factor, hp.clamp_norm_factor)
        target = optimize_target(self.loaded, edit, self.context_templates(), module_name, objective)
        templates = [fill(t, edit.relation.prompt) for t in self.context_templates()]
        inputs, outputs = subject_io(self.loaded, templates, edit.subject.label, module_name)
        return (target - outputs.mean(0)) / torch.dot(inputs.mean(0), left)
