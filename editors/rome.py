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
from transformers.pytorch_utils import Conv1D

from editors.base import Editor, EditorSettings, keep_originals
from editors.context_templates import context_templates
from editors.corpus import load_corpus
from editors.hparams import HyperParamsError, as_dict, check_modules, find_hparams_file, load_hparams
from editors.second_moment import inverse_second_moment
from harness.datasets import Edit
from harness.models import LoadedModel
from harness.nethook import Trace, get_module
from harness.scoring import encode_completion, pad_batch, vocabulary_logits

MOM2_DTYPES = {"float32": torch.float32, "float64": torch.float64}


@dataclass(frozen=True)
class ROMEHyperParams:
    layers: list[int]
    fact_token: str
    v_num_grad_steps: int
    v_lr: float
    v_loss_layer: int
    v_weight_decay: float
    clamp_norm_factor: float
    kl_factor: float
    mom2_adjustment: bool
    context_template_length_params: list[list[int]]
    rewrite_module_tmp: str
    mom2_dataset: str
    mom2_n_samples: int
    mom2_dtype: str


def hparams_keys(loaded: LoadedModel) -> list[str]:
    """Hyper-parameter files to try, most specific first."""
    return [loaded.hparams_key, loaded.family]


def check_rome_hparams(path: Any, hp: ROMEHyperParams, loaded: LoadedModel) -> None:
    last = loaded.num_layers - 1
    if hp.fact_token != "subject_last":
        raise HyperParamsError(f"{path}: fact_token {hp.fact_token!r}: only 'subject_last' is supported")
    if hp.v_loss_layer not in (last, -1):
        raise HyperParamsError(f"{path}: v_loss_layer {hp.v_loss_layer}: must be the last layer ({last}) or -1")
    if any(not 0 <= layer <= last for layer in hp.layers):
        raise HyperParamsError(f"{path}: layers {hp.layers} outside 0..{last}")
    if hp.mom2_dtype not in MOM2_DTYPES:
        raise HyperParamsError(f"{path}: mom2_dtype {hp.mom2_dtype!r}: expected one of {', '.join(MOM2_DTYPES)}")
    check_modules(path, loaded.model, {"rewrite_module_tmp": hp.rewrite_module_tmp}, hp.layers)


# --------------------------------------------------------------------------- token positions


def subject_last_index(tokenizer: Any, template: str, subject: str) -> int:
    """Index of the subject's last token in ``template.format(subject)``.

    As in the reference: a space before ``{}`` moves onto the subject, and the
    index is the length of the tokenized text up to the subject's end, minus one.
    """
    prefix = template[: template.index("{}")]
    if prefix.endswith(" "):
        prefix, subject = prefix[:-1], " " + subject
    return len(tokenizer(prefix + subject)["input_ids"]) - 1


def module_weight_delta(module: torch.nn.Module, left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    """``u v^T`` laid out like the module's weight: Conv1D stores (in, out), Linear (out, in)."""
    outer = torch.outer(left, right)
    return outer if isinstance(module, Conv1D) else outer.T


# --------------------------------------------------------------------------- the method


class ROME(Editor):
    name = "rome"
    supports_batch = False

    def __init__(self, loaded: LoadedModel, settings: EditorSettings) -> None:
        super().__init__(loaded, settings)
        self.hparams_path = settings.hparams_file or find_hparams_file("rome", hparams_keys(loaded))
        self.hparams = load_hparams(ROMEHyperParams, self.hparams_path)
        check_rome_hparams(self.hparams_path, self.hparams, loaded)
        self._templates: list[str] | None = None
        self._inv_cov: dict[str, torch.Tensor] = {}  # per module, for this model only

    def describe(self) -> dict[str, Any]:
        return {"hparams_file": str(self.hparams_path), "hparams": as_dict(self.hparams),
                "stats_corpus": self.settings.stats_corpus, "stats_tokens": self.settings.stats_tokens}

    # The two cached ingredients -------------------------------------------------

    def context_templates(self) -> list[str]:
        if self._templates is None:
            self._templates = context_templates(
                self.loaded, self.hparams.context_template_length_params, self.settings.seed, self.settings.cache_dir
            )
        return self._templates

    def inverse_covariance(self, module_name: str) -> torch.Tensor:
        if module_name not in self._inv_cov:
            self._inv_cov[module_name] = inverse_second_moment(
                self.loaded, module_name, load_corpus(self.settings.stats_corpus), self.settings.stats_tokens,
                self.hparams.mom2_n_samples, MOM2_DTYPES[self.hparams.mom2_dtype], self.settings.cache_dir,
            )
        return self._inv_cov[module_name]

    # Editing ---------------------------------------------------------------------

    def apply(self, edits: Sequence[Edit]) -> dict[str, torch.Tensor]:
        originals: dict[str, torch.Tensor] = {}
        for edit in edits:  # ROME edits one fact at a time
            for layer in sorted(self.hparams.layers):
                module_name = self.hparams.rewrite_module_tmp.format(layer)
                left = self.compute_left_vector(edit, module_name)
                right = self.compute_right_vector(edit, module_name, left)
                module = get_module(self.loaded.model, module_name)
                keep_originals(self.loaded.model, [f"{module_name}.weight"], originals)
                with torch.no_grad():
                    module.weight += module_weight_delta(module, left, right).to(module.weight.dtype)
        return originals

    def _forward_at(self, texts: list[str], module_name: str, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """The module's input and output at ``indices[i]`` of each text (right padded)."""
        tok = self.loaded.tokenizer
        ids, mask, _, _ = pad_batch([tok(t)["input_ids"] for t in texts], tok.pad_token_id, "right", self.loaded.device)
        with torch.no_grad(), Trace(self.loaded.model, module_name, retain_input=True, stop=True) as trace:
            self.loaded.model.base_model(input_ids=ids, attention_mask=mask)
        rows = torch.arange(len(texts))
        cols = torch.tensor(indices)
        return trace.input[rows, cols].float(), trace.output[rows, cols].float()

    def compute_left_vector(self, edit: Edit, module_name: str) -> torch.Tensor:
        """``u``: the whitened, normalised key of the subject."""
        templates = [t.format(edit.relation.prompt) for t in self.context_templates()]
        subject = edit.subject.label
        keys, _ = self._forward_at(
            [t.format(subject) for t in templates], module_name,
            [subject_last_index(self.loaded.tokenizer, t, subject) for t in templates],
        )
        u = keys.mean(0)
        if self.hparams.mom2_adjustment:
            u = self.inverse_covariance(module_name) @ u
        return u / u.norm()

    def compute_right_vector(self, edit: Edit, module_name: str, left: torch.Tensor) -> torch.Tensor:
        """``v``: optimise the module's output at the subject, then solve for the rank-one value."""
        hp, tok, model, device = self.hparams, self.loaded.tokenizer, self.loaded.model, self.loaded.device
        subject, prompt = edit.subject.label, edit.relation.prompt
        rewrite_text = prompt.format(subject)
        encoded = encode_completion(tok, rewrite_text, edit.new_object.label)
        target_ids = list(encoded.ids[encoded.prompt_len :])

        rewriting = [t.format(prompt) for t in self.context_templates()]
        kl_templates = ["{} is a"]
        sequences = [tok(t.format(subject))["input_ids"] + target_ids[:-1] for t in rewriting]
        sequences += [tok(t.format(subject))["input_ids"] for t in kl_templates]
        lookup = [subject_last_index(tok, t, subject) for t in rewriting + kl_templates]
        ids, mask, _, _ = pad_batch(sequences, tok.pad_token_id, "right", device)

        # Positions whose logits we need: the target tokens of each rewriting row, the subject of KL rows.
        rows, cols, targets = [], [], []
        for row, seq in enumerate(sequences[: len(rewriting)]):
            first = len(seq) - len(target_ids) + 1  # where target token 0 is predicted from (minus one)
            for j, token in enumerate(target_ids):
                rows.append(row)
                cols.append(first - 1 + j)
                targets.append(token)
        kl_rows = list(range(len(rewriting), len(sequences)))
        all_rows = torch.tensor(rows + kl_rows, device=device)
        all_cols = torch.tensor(cols + lookup[len(rewriting) :], device=device)
        target_tensor = torch.tensor(targets, device=device)
        row_of_target = torch.tensor(rows, device=device)

        hidden = model.config.get_text_config().hidden_size
        delta = torch.zeros(hidden, device=device, dtype=torch.float32, requires_grad=True)
        lookup_tensor = torch.tensor(lookup, device=device)
        batch_rows = torch.arange(len(sequences), device=device)
        state: dict[str, torch.Tensor] = {}

        def add_delta(output: torch.Tensor, _name: str) -> torch.Tensor:
            if "init" not in state:
                state["init"] = output[0, lookup[0]].detach().float().clone()
            output = output.clone()
            output[batch_rows, lookup_tensor] += delta.to(output.dtype)
            return output

        optimizer = torch.optim.Adam([delta], lr=hp.v_lr)
        kl_init = None
        for step in range(hp.v_num_grad_steps):
            optimizer.zero_grad()
            with Trace(model, module_name, retain_output=False, edit_output=add_delta):
                logits = vocabulary_logits(model, ids, mask, all_rows, all_cols)
            log_probs = torch.log_softmax(logits, dim=-1)
            token_lp = log_probs[: len(targets)][torch.arange(len(targets), device=device), target_tensor]
            nll_each = -torch.zeros(len(rewriting), device=device).index_add(0, row_of_target, token_lp) / len(target_ids)
            nll = nll_each.mean()
            kl_lp = log_probs[len(targets) :]
            if kl_init is None:
                kl_init = kl_lp.detach().clone()
            kl = hp.kl_factor * torch.nn.functional.kl_div(kl_init, kl_lp, log_target=True, reduction="batchmean")
            decay = hp.v_weight_decay * (delta.norm() / state["init"].norm() ** 2)
            loss = nll + kl + decay
            if not torch.isfinite(loss):
                raise FloatingPointError(f"ROME: non-finite loss while optimising the value for {edit.describe()}")
            if loss.item() < 5e-2 or step == hp.v_num_grad_steps - 1:
                break
            loss.backward()
            optimizer.step()
            max_norm = hp.clamp_norm_factor * state["init"].norm()
            if delta.norm() > max_norm:
                with torch.no_grad():
                    delta[...] = delta * max_norm / delta.norm()

        target = state["init"] + delta.detach()
        index = subject_last_index(tok, prompt, subject)
        cur_input, cur_output = self._forward_at([rewrite_text], module_name, [index])
        return (target - cur_output[0]) / torch.dot(cur_input[0], left)
