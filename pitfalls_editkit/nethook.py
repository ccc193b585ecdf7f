"""Declarative, reversible forward hooks on named submodules.

Modelled on the original ROME code's ``nethook.Trace``: a ``with`` block
that records a module's input and/or output, optionally rewrites the output,
and removes its hook on exit whatever happens inside, so a model is never
left with a stray hook after an exception.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch


def get_module(model: torch.nn.Module, name: str) -> torch.nn.Module:
    """The submodule called ``name``; a clear error naming it if absent."""
    try:
        return model.get_submodule(name)
    except AttributeError as exc:
        raise LookupError(f"module {name!r} is not in the model ({type(model).__name__})") from exc


def _first_tensor(value: Any) -> torch.Tensor:
    """Decoder layers return tuples in some architectures and tensors in others."""
    return value[0] if isinstance(value, (tuple, list)) else value


class StopForward(Exception):
    """Raised by a ``Trace(stop=True)`` hook to skip the rest of the forward pass."""


class Trace(contextlib.AbstractContextManager):
    """Hook one module for the duration of a ``with`` block.

    ``retain_input`` keeps the first positional input, ``retain_output`` the
    (first tensor of the) output; ``edit_output(output, name)`` may return a
    replacement tensor for that first output tensor, and
    ``edit_output_from_input(output, inputs, name)`` likewise, given the
    module's positional inputs too (an edit that depends on what the module
    received, such as a key-dependent update). ``stop=True`` ends the
    forward pass right after this module (catch :class:`StopForward`), which
    saves the later layers when only this one is needed.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        name: str,
        *,
        retain_input: bool = False,
        retain_output: bool = True,
        detach: bool = False,
        edit_output: Callable[[torch.Tensor, str], torch.Tensor] | None = None,
        edit_output_from_input: Callable[[torch.Tensor, tuple, str], torch.Tensor] | None = None,
        stop: bool = False,
    ) -> None:
        if edit_output is not None and edit_output_from_input is not None:
            raise ValueError("Trace: give edit_output or edit_output_from_input, not both")
        self.name = name
        self.input: torch.Tensor | None = None
        self.output: torch.Tensor | None = None
        module = get_module(model, name)

        def hook(_module: torch.nn.Module, inputs: tuple, output: Any) -> Any:
            if retain_input:
                value = _first_tensor(inputs)
                self.input = value.detach() if detach else value
            first = _first_tensor(output)
            if edit_output is not None or edit_output_from_input is not None:
                first = edit_output(first, name) if edit_output is not None else edit_output_from_input(first, inputs, name)
                if isinstance(output, tuple):
                    output = (first, *output[1:])
                elif isinstance(output, list):
                    output = [first, *output[1:]]
                else:
                    output = first
            if retain_output:
                self.output = first.detach() if detach else first
            if stop:
                raise StopForward
            return output

        self._handle = module.register_forward_hook(hook)

    def close(self) -> None:
        self._handle.remove()

    def __exit__(self, exc_type: type | None, *exc_info: object) -> bool:
        self.close()
        return exc_type is StopForward  # a stopped forward pass is not an error
