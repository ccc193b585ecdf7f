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

from editors.representations import subject_io
from editors.rome import ROME
from pitfalls_editkit.facts import Edit, fill


class RROME(ROME):
    name = "r-rome"
    supports_batch = False

    def compute_right_vector(self, edit: Edit, module_name: str, left: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        templates = [fill(t, edit.relation.prompt) for t in self.context_templates()]
        inputs, outputs = subject_io(self.loaded, templates, edit.subject.label, module_name)
        return (target - outputs.mean(0)) / torch.dot(inputs.mean(0), left)
