"""WISE: a side memory beside one FFN output matrix, and a router that decides which memory answers (Wang et al., 2024).

Written from the paper (arXiv 2405.14768) and EasyEdit's ``wise`` (our own code). The edited module (an FFN's
value matrix, e.g. ``down_proj``) keeps its weight ``W0`` (the main memory); the patch holds a side copy ``W``
trained on the edits. At each position the router compares ``||act(x W0) - act(x W)||`` (``act``: the model's
hidden activation, as in the reference) with ``act_ratio`` times the smallest such distance seen on an edited
prompt: above it the side memory answers, below it the main memory's output passes through unchanged.

Training one edit: SGD (``edit_lr``, ``n_iter`` steps, weight decay 1e-5) on the side weight alone, with the side
memory answering everywhere; the loss is the new object's tokens after the prompt, prefixed by the context
templates (the reference's ten short generated texts), plus the activation margins ``act_margin = [alpha, beta,
gamma]``: an unrelated prompt's mean distance below alpha, each edited prompt's above beta, and apart by gamma.
Only a random ``mask_ratio`` share of the weight's entries is trained per shard (knowledge sharding); after each
step the side weight is kept within ``norm_constraint`` of ``W0`` entrywise. Every ``save_freq`` edits the side
memory is saved as a shard and a fresh one starts from ``W0``; every ``merge_freq`` edits the saved shards are
merged with TIES (top ``densities`` share of each shard's change by magnitude, signs elected by sum, the agreeing
changes averaged). With ``retrieve`` (the published files' choice) each merged memory keeps its own threshold and
the position takes the memory farthest above its threshold; without, one merged memory and the current one compete.

The router decides per sequence, as the reference's: the mean distance over the sequence's real tokens (the
harness gives the patch the forward pass's attention mask, so padding in a batch changes nothing; past 100
tokens, the largest distance). A generation step with a key/value cache sees only its new tokens and routes on
them, as the reference's generation does.

Where we differ, and why. The
reference's unrelated prompt is a locality question of its dataset (NQ); here it is another edit's prompt and true
object from the run's dataset, drawn seeded and sharing no entity with the edit. ``replay`` is not offered.
Training stops early as the reference's does: once the loss is at most 0.02 and moved by at most 1e-4 since the
step before.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers.activations import ACT2FN

from editors.context_templates import context_templates
from pitfalls_editkit.contract import EditorSettings, ModuleEditor, unrelated_examples
from pitfalls_editkit.facts import Edit, fill
from pitfalls_editkit.hparams import HyperParamsError, as_dict, bounded, module_name
from pitfalls_editkit.low_rank import weight_update
from pitfalls_editkit.models import LoadedModel
from pitfalls_editkit.nethook import Trace, get_module
from pitfalls_editkit.patches import Patch
from pitfalls_editkit.scoring import encode_completion, pad_batch, vocabulary_logits

TEMPLATE_LENGTHS = [[5, 5], [10, 5]]  # the reference's context templates: 5 start words x 2 lengths
TEMPLATE_STARTS = ["I", "You", "Because", "Yes", "Q: "]
LONG_SEQUENCE = 100  # past this many tokens a sequence routes by its largest distance, as the reference's
NO_EDIT_YET = float("inf")  # a memory's threshold before an edit was saved into it (the reference's 1e9)
EARLY_STOP_LOSS, EARLY_STOP_CHANGE = 0.02, 1e-4  # training stops once the loss is this low and no longer moving (reference)


@dataclass(frozen=True)
class WISEHyperParams:
    layers: list[int] = bounded(0, nonempty=True)  # the one layer whose value matrix gets a side memory
    module_tmp: str  # e.g. model.layers.{}.mlp.down_proj (the reference's inner_params, without .weight)
    edit_lr: float = bounded(above=0)
    n_iter: int = bounded(1)
    mask_ratio: float = bounded(above=0, high=1)
    norm_constraint: float = bounded(above=0)
    act_margin: list[float] = bounded(0)  # alpha, beta, gamma
    act_ratio: float = bounded(above=0)
    save_freq: int = bounded(1)
    merge_freq: int = bounded(1)
    densities: float = bounded(above=0, high=1)
    weights: float = bounded(above=0)
    retrieve: bool


class SideMemory(Patch):
    """The side memories of one module, laid out ``(out, in)``, and what the router needs."""

    def __init__(self, original: torch.Tensor, bias: torch.Tensor | None, activation: str, retrieve: bool,
                 act_ratio: float) -> None:
        super().__init__()
        self.retrieve, self.act_ratio = retrieve, act_ratio
        self.register_buffer("original", original.detach().clone())
        self.register_buffer("bias", None if bias is None else bias.detach().clone())
        self.register_buffer("current", original.detach().clone())  # the side memory being written
        self.register_buffer("merged", original.detach().clone())  # without retrieve: the merged memory
        self.activation = activation
        self.current_threshold = NO_EDIT_YET  # smallest edited-prompt distance of the current memory
        self.saved: list[torch.Tensor] = []  # shards saved, not yet merged (retrieve: merged memories too)
        self.saved_thresholds: list[float] = []
        self.edits = 0

    def side(self, hidden: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.linear(hidden, weight, self.bias)

    def distance(self, main: torch.Tensor, side: torch.Tensor) -> torch.Tensor:
        act = ACT2FN[self.activation]
        return torch.linalg.vector_norm(act(main.float()) - act(side.float()), dim=-1)

    takes_attention_mask = True  # the router decides per sequence, over its real tokens

    def sequence_distance(self, distance: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        """Per sequence: the mean distance over its real tokens (the largest, past 100 tokens), as the reference's."""
        real = torch.ones_like(distance) if attention_mask is None else attention_mask[:, -distance.shape[1]:].to(distance.dtype)
        mean = (distance * real).sum(-1) / real.sum(-1).clamp(min=1)
        longest = torch.where(real > 0, distance, torch.zeros_like(distance)).amax(-1)
        return torch.where(real.sum(-1) > LONG_SEQUENCE, longest, mean)

    def forward(self, inputs: tuple[Any, ...], output: Any, attention_mask: torch.Tensor | None = None) -> Any:
        if self.edits == 0:
            return output
        hidden = inputs[0].to(self.current.dtype)
        answer, best = output, torch.zeros(output.shape[0], device=output.device)
        memories = ([(self.current, self.current_threshold)] + list(zip(self.saved, self.saved_thresholds)) if self.retrieve
                    else [(self.current, self.current_threshold), (self.merged, self.current_threshold)])
        for weight, threshold in memories:  # the position takes the memory farthest above its threshold, if any
            if threshold == NO_EDIT_YET:
                continue
            side = self.side(hidden, weight).to(output.dtype)
            distance = self.sequence_distance(self.distance(output, side), attention_mask)
            wins = (distance > threshold * self.act_ratio) & (distance > best)
            answer = torch.where(wins.view(-1, *[1] * (output.dim() - 1)), side, answer)
            best = torch.where(wins, distance, best)
        return answer


class WISE(ModuleEditor):
    name = "wise"
    supports_batch = True  # several edits trained into the side memory together (--mle)

    def __init__(self, loaded: LoadedModel, settings: EditorSettings) -> None:
        super().__init__(loaded, settings)
        self.hparams_path, self.hparams = self.load_hparams(WISEHyperParams)
        hp = self.hparams
        if len(hp.layers) != 1:
            raise HyperParamsError(f"{self.hparams_path}: layers {hp.layers}: WISE edits one layer; give one")
        if len(hp.act_margin) != 3:
            raise HyperParamsError(f"{self.hparams_path}: act_margin {hp.act_margin}: give [alpha, beta, gamma]")
        config = loaded.model.config.get_text_config()
        self.activation = getattr(config, "hidden_activation", None) or getattr(config, "hidden_act", None) \
            or getattr(config, "activation_function", None)
        if self.activation not in ACT2FN:
            raise HyperParamsError(f"WISE: the model's hidden activation {self.activation!r} is not one transformers knows")
        self.module = module_name(hp.module_tmp, hp.layers[0] % loaded.num_layers)
        self.memory: SideMemory | None = None

    def describe(self) -> dict[str, Any]:
        return {"hparams_file": str(self.hparams_path), "hparams": as_dict(self.hparams), "module": self.module}

    def model_restored(self) -> None:
        self.memory = None

    def apply(self, edits: Sequence[Edit]) -> dict[str, Patch]:
        hp = self.hparams
        if self.memory is None:
            target = get_module(self.loaded.model, self.module)
            weight = weight_update(target, target.weight.detach())  # (out, in) whatever the layout
            self.memory = SideMemory(weight, getattr(target, "bias", None), self.activation, hp.retrieve, hp.act_ratio)
        memory = self.memory
        if memory.edits % hp.save_freq == 0:
            self.mask = torch.rand(memory.current.shape, device=memory.current.device) < hp.mask_ratio
        memory.current_threshold = min(memory.current_threshold, self._train(edits))
        memory.edits += 1
        if memory.edits % hp.save_freq == 0:  # a shard is full: save it, start the next from W0
            memory.saved.append(memory.current.clone())
            memory.saved_thresholds.append(memory.current_threshold)
            memory.current = memory.original.clone()
            if hp.retrieve:  # each saved memory keeps its threshold; without retrieve one threshold serves all
                memory.current_threshold = NO_EDIT_YET
        if memory.edits % hp.merge_freq == 0 and memory.saved:
            self._merge()
        return {self.module: memory}

    def _rows(self, edits: Sequence[Edit]) -> tuple[list[tuple[list[int], int]], list[int]]:
        """Token ids and prompt lengths: each edit under each context template, then one unrelated prompt."""
        tok = self.loaded.tokenizer
        templates = context_templates(self.loaded, TEMPLATE_LENGTHS, 0, self.settings.cache_dir, TEMPLATE_STARTS)
        rows = []
        for edit in edits:
            for template in templates:
                encoded = encode_completion(tok, fill(template, edit.prompt), edit.new_object.label)
                rows.append((encoded.ids, encoded.prompt_len))
        pool = unrelated_examples(self.settings, edits)
        if not pool:
            raise ValueError("WISE needs an unrelated prompt from the run's dataset (EditorSettings.dataset_edits): none given")
        other = pool[int(torch.randint(len(pool), ()))].edit
        encoded = encode_completion(tok, other.prompt, other.object.label)
        return rows + [(encoded.ids, encoded.prompt_len)], [len(rows)]

    def _train(self, edits: Sequence[Edit]) -> float:
        """Train the current side memory on ``edits``; the smallest edited-prompt mean distance at the end."""
        hp, model, memory, device = self.hparams, self.loaded.model, self.memory, self.loaded.device
        alpha, beta, gamma = hp.act_margin
        rows, (unrelated,) = self._rows(edits)
        pad = self.loaded.tokenizer.pad_token_id or 0
        ids, mask, _, _ = pad_batch([r[0] for r in rows], pad, "right", device)
        at = [(row, pos) for row, (row_ids, prompt_len) in enumerate(rows[:unrelated]) for pos in range(prompt_len, len(row_ids))]
        owner = torch.tensor([row for row, _ in at], device=device)
        where = (owner, torch.tensor([pos - 1 for _, pos in at], device=device))  # the logits that predict each object token
        targets = torch.tensor([rows[row][0][pos] for row, pos in at], device=device)
        weight = memory.current.clone().requires_grad_(True)
        optimizer = torch.optim.SGD([weight], lr=hp.edit_lr, weight_decay=1e-5)
        seen: dict[str, torch.Tensor] = {}

        def side_everywhere(output: torch.Tensor, inputs: tuple, name: str) -> torch.Tensor:
            side = memory.side(inputs[0].to(weight.dtype), weight).to(output.dtype)
            seen["distance"] = memory.distance(output, side)
            return side

        def mean_distances() -> torch.Tensor:
            return (seen["distance"] * mask).sum(-1) / mask.sum(-1)

        previous = latest = float("inf")
        for _step in range(hp.n_iter):
            optimizer.zero_grad()
            with Trace(model, self.module, retain_output=False, edit_output_from_input=side_everywhere):
                logits = vocabulary_logits(model, ids, mask, *where)  # the head on the object tokens' positions only
            token_loss = torch.nn.functional.cross_entropy(logits, targets, reduction="none")
            per_row = torch.zeros(unrelated, device=device).index_add(0, owner, token_loss)
            answer_loss = (per_row / torch.bincount(owner, minlength=unrelated)).mean()
            distances = mean_distances()
            inside, outside = distances[:unrelated], distances[unrelated:]
            loss = answer_loss + _positive_mean(outside.view(-1, 1) - inside + gamma) + _positive_mean(outside - alpha) \
                + _positive_mean(beta - inside)
            if abs(latest - previous) <= EARLY_STOP_CHANGE and latest <= EARLY_STOP_LOSS:  # the reference's EarlyStopMeter
                break
            previous, latest = latest, float(loss.detach())
            loss.backward()
            weight.grad *= self.mask
            optimizer.step()
            with torch.no_grad():
                weight.copy_(torch.clamp(weight, memory.original - hp.norm_constraint, memory.original + hp.norm_constraint))
        with torch.no_grad(), Trace(model, self.module, retain_output=False, edit_output_from_input=side_everywhere):
            vocabulary_logits(model, ids, mask, *where)
        memory.current = weight.detach().clone()
        return float(mean_distances()[:unrelated].min())

    def _merge(self) -> None:
        """TIES-merge the saved shards (retrieve: into one more memory; else into the merged memory)."""
        hp, memory = self.hparams, self.memory
        shards = memory.saved[-(hp.merge_freq // hp.save_freq):] if hp.retrieve else memory.saved
        if hp.retrieve:
            thresholds = memory.saved_thresholds[-len(shards):]
            del memory.saved[-len(shards):], memory.saved_thresholds[-len(shards):]
            memory.saved.append(ties(memory.original, shards, [hp.weights / len(shards)] * len(shards), hp.densities))
            memory.saved_thresholds.append(min(thresholds))
            return
        if torch.equal(memory.merged, memory.original):
            memory.merged = ties(memory.original, shards, [hp.weights / len(shards)] * len(shards), hp.densities)
        else:
            memory.merged = ties(memory.original, [*shards, memory.merged], [0.4 / len(shards)] * len(shards) + [0.6],
                                 hp.densities)
        memory.saved, memory.saved_thresholds = [], []


def _positive_mean(values: torch.Tensor) -> torch.Tensor:
    """The mean of the positive entries (0 when none), as the reference's margin losses."""
    positive = values[values > 0]
    return positive.mean() if positive.numel() else values.new_zeros(())


def ties(base: torch.Tensor, tensors: Sequence[torch.Tensor], weights: Sequence[float], density: float) -> torch.Tensor:
    """TIES merging: each change from ``base`` trimmed to its top ``density`` share by magnitude, weighted, the sign
    elected by the weighted sum, the agreeing changes averaged by their weights."""
    deltas = []
    for tensor in tensors:
        delta = (tensor - base).float()
        keep = max(1, int(density * delta.numel()))
        threshold = delta.abs().flatten().kthvalue(delta.numel() - keep + 1).values
        deltas.append(torch.where(delta.abs() >= threshold, delta, torch.zeros_like(delta)))
    stacked = torch.stack(deltas)
    scale = torch.tensor(list(weights), dtype=stacked.dtype, device=stacked.device).view(-1, *[1] * base.dim())
    weighted = stacked * scale
    sign = (weighted.sum(0) >= 0).to(stacked.dtype) * 2 - 1
    agree = (weighted.sign() == sign).to(stacked.dtype)
    divisor = (scale * agree).sum(0)
    divisor[divisor == 0] = 1
    return (base + (weighted * agree).sum(0) / divisor).to(base.dtype)

