"""Hyper-parameters per editing method and model, read from JSON data files.

Flat dataclasses with module-name templates, as in the original ROME code:
one algorithm, many architectures. An editor's folder (shipped editors:
``editors/hparams/<method>/``; a plugin's: ``hparams/`` beside its module)
holds one ``<key>.json`` per checkpoint (``gpt2-xl``, ``gpt-j-6b``: the published
values) or per model family (``gpt2``, ``llama``, ``gemma3_text``: chosen
values); a user can pass their own file. Files are checked on load: unknown
or missing keys and module names absent from the model are clear errors.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from pitfalls_editkit.facts import TemplateError, fill
from pitfalls_editkit.safe_json import JsonInputError, loads

if TYPE_CHECKING:
    import torch

T = TypeVar("T")


class HyperParamsError(ValueError):
    """A hyper-parameter file that does not fit the method or the model."""


def bounded(low: float | None = None, *, above: float | None = None, high: float | None = None, nonempty: bool = False) -> Any:
    """A dataclass field whose value (each element, for a list) must be >= ``low``, > ``above`` and <= ``high``.

    ``load_hparams`` checks it, so a file with ``v_num_grad_steps: 0`` is one clear error, not a crash mid-edit.
    """
    return dataclasses.field(metadata={"low": low, "above": above, "high": high, "nonempty": nonempty})


def _check_range(path: Path, name: str, value: Any, meta: Any) -> None:
    if meta.get("nonempty") and isinstance(value, list) and not value:
        raise HyperParamsError(f"{path}: {name} is empty; give at least one value")
    for item in (value if isinstance(value, list) else [value]):
        if isinstance(item, list):
            for inner in item:
                _check_range(path, name, inner, {**meta, "nonempty": False})
            continue
        if not isinstance(item, (int, float)) or isinstance(item, bool):
            continue
        if item != item or item in (float("inf"), float("-inf")):
            raise HyperParamsError(f"{path}: {name} = {item}: must be a finite number")
        low, above, high = meta.get("low"), meta.get("above"), meta.get("high")
        if (low is not None and item < low) or (above is not None and item <= above) or (high is not None and item > high):
            wanted = " and ".join(text for text in (f">= {low}" if low is not None else "", f"> {above}" if above is not None else "",
                                                    f"<= {high}" if high is not None else "") if text)
            raise HyperParamsError(f"{path}: {name} = {item}: must be {wanted}")


def find_hparams_file(method: str, folders: list[Path], keys: list[str]) -> Path:
    """The first ``<folder>/<key>.json`` that exists, for keys from most to least specific."""
    for key in keys:
        for folder in folders:
            path = folder / f"{key}.json"
            if path.is_file():
                return path
    known = sorted({p.stem for folder in folders if folder.is_dir() for p in folder.glob("*.json")})
    raise HyperParamsError(
        f"no {method} hyper-parameters for {' / '.join(keys)} in {', '.join(map(str, folders))} "
        f"(have: {', '.join(known) or 'none'}); pass --hparams FILE"
    )


def editor_hparams(method: str, folders: list[Path], cls: type[T], loaded: Any, override: Path | str | None,
                   values: dict[str, Any] | None = None) -> tuple[Path, T]:
    """The file an editor uses (``override``, else by checkpoint name, then by family) and what it holds, with
    ``values`` (``--hparams-set``) replacing single keys."""
    path = Path(override) if override else find_hparams_file(method, folders, [loaded.hparams_key, loaded.family])
    return path, load_hparams(cls, path, values)


def parse_hparams_set(items: list[str]) -> dict[str, Any]:
    """``["rank=64", "checkpoint=~/net.pt"]`` -> values (JSON where it parses, else the text); one clear error otherwise."""
    values: dict[str, Any] = {}
    for item in items:
        key, equals, text = item.partition("=")
        if not equals or not key.strip():
            raise HyperParamsError(f"--hparams-set {item!r}: expected KEY=VALUE, e.g. --hparams-set v_num_grad_steps=10")
        try:
            values[key.strip()] = loads(text, f"--hparams-set {key.strip()}")
        except JsonInputError as exc:
            if "not valid JSON" not in str(exc):  # too deep, too long: not a value any editor takes
                raise HyperParamsError(f"{exc}; give a plain value") from None
            values[key.strip()] = text
    return values


def blame_hparams_set(message: str, values: dict[str, Any]) -> str:
    """A check's message about a key that ``--hparams-set`` replaced names that option, not the file whose value it
    replaced ("<file>: <key> ..." becomes "--hparams-set <key>=<value> (over <file>): <key> ...")."""
    source, sep, rest = message.partition(": ")
    key = re.match(r"[A-Za-z_]\w*", rest) if sep else None
    if key is None or key.group() not in values or source.startswith("--hparams-set"):
        return message
    return f"--hparams-set {key.group()}={json.dumps(values[key.group()], ensure_ascii=False)} (over {source}): {rest}"


def load_hparams(cls: type[T], path: Path, values: dict[str, Any] | None = None) -> T:
    """Read ``path`` into the dataclass ``cls`` (``values`` replace keys); unknown, missing or mistyped keys are errors."""
    try:
        raw = loads(Path(path).read_bytes(), str(path))
    except OSError as exc:
        raise HyperParamsError(f"{path}: cannot read hyper-parameters ({exc}); give a JSON object of the editor's keys") from None
    except JsonInputError as exc:
        raise HyperParamsError(f"{path}: cannot read hyper-parameters ({str(exc).removeprefix(f'{path}: ')}); give a JSON "
                               "object of the editor's keys") from None
    if not isinstance(raw, dict):
        raise HyperParamsError(f"{path}: expected a JSON object")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown_set = sorted(set(values or {}) - set(fields))
    if unknown_set:
        raise HyperParamsError(f"--hparams-set {unknown_set[0]}: {cls.__name__} has no such key (keys: {', '.join(fields)})")
    raw = {**raw, **(values or {})}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise HyperParamsError(f"{path}: unknown key(s) {', '.join(unknown)} for {cls.__name__}")
    missing = sorted(name for name, f in fields.items() if name not in raw and f.default is dataclasses.MISSING)
    if missing:
        raise HyperParamsError(f"{path}: missing key(s) {', '.join(missing)} for {cls.__name__}")
    for name, value in raw.items():
        if not _has_type(value, str(fields[name].type)):
            raise HyperParamsError(f"{path}: {name} should be {fields[name].type}, got {value!r}")
        if fields[name].metadata:
            _check_range(Path(path), name, value, fields[name].metadata)
    return cls(**raw)  # type: ignore[call-arg]


_SCALARS = {"int": int, "float": (int, float), "bool": bool, "str": str}


def _has_type(value: Any, annotation: str) -> bool:
    """Check JSON values against the simple annotations these dataclasses use."""
    if annotation in _SCALARS:
        return isinstance(value, _SCALARS[annotation]) and (annotation == "bool" or not isinstance(value, bool))
    if annotation.startswith("list[") and annotation.endswith("]"):
        return isinstance(value, list) and all(_has_type(v, annotation[5:-1]) for v in value)
    return True


def check_modules(path: Path | str, model: torch.nn.Module, templates: dict[str, str], layers: list[int]) -> None:
    """Every ``module_name(template, layer)`` must name a module of ``model``."""
    names = dict(model.named_modules())
    for key, template in templates.items():
        for layer in layers:
            try:
                name = module_name(template, layer)
            except TemplateError as exc:
                raise HyperParamsError(f"{path}: {key}: {exc}") from None
            if name not in names:
                raise HyperParamsError(f"{path}: {key} {template!r} gives {name!r}, which is not a module of the model")


def check_templates(path: Path | str, model: torch.nn.Module, hparams: Any, num_layers: int) -> None:
    """Every module-name template of ``hparams`` must name modules of ``model``: each field named ``*_tmp`` (a string)
    or ``*_tmps`` (a list of strings), filled with each of ``hparams.layers`` (negative layers count from the end);
    a template without ``{}`` is one module name. Empty strings (an optional module) are skipped."""
    names = dict(model.named_modules())
    layers = getattr(hparams, "layers", None)
    if isinstance(layers, list) and all(isinstance(layer, int) for layer in layers):  # out of range: the editor says so
        layers = [layer % num_layers for layer in layers if -num_layers <= layer < num_layers]
    else:
        layers = None
    for field in dataclasses.fields(hparams):
        value = getattr(hparams, field.name)
        if field.name.endswith("_tmp"):
            templates = {field.name: value}
        elif field.name.endswith("_tmps") and isinstance(value, list):
            templates = {f"{field.name}[{i}]": item for i, item in enumerate(value)}
        else:
            continue
        for key, template in templates.items():
            if not isinstance(template, str) or not template:
                continue
            if "{" not in template and "}" not in template:
                if template not in names:
                    raise HyperParamsError(f"{path}: {key} {template!r} is not a module of the model")
            elif layers is not None:
                check_modules(path, model, {key: template}, layers)


def module_name(template: str, layer: int) -> str:
    """A module-name template (one ``{}`` for the layer, every other character literal) filled in."""
    return fill(template, str(layer))


def as_dict(hparams: Any) -> dict[str, Any]:
    """For results files: the hyper-parameters that were used."""
    return dataclasses.asdict(hparams)


def check_value_hparams(path: Path | str, hp: Any, num_layers: int, dtypes: dict[str, Any]) -> None:
    """Checks shared by ROME and MEMIT: the loss layer, the layer range, the statistics dtype."""
    last = num_layers - 1
    if hp.fact_token != "subject_last":
        raise HyperParamsError(f"{path}: fact_token {hp.fact_token!r}: only 'subject_last' is supported")
    if hp.v_loss_layer not in (last, -1):
        raise HyperParamsError(f"{path}: v_loss_layer {hp.v_loss_layer}: must be the last layer ({last}) or -1")
    if not hp.layers or any(not 0 <= layer <= last for layer in hp.layers) or hp.layers != sorted(hp.layers):
        raise HyperParamsError(f"{path}: layers {hp.layers} must be increasing and inside 0..{last}")
    if hp.mom2_dtype not in dtypes:
        raise HyperParamsError(f"{path}: mom2_dtype {hp.mom2_dtype!r}: expected one of {', '.join(dtypes)}")
