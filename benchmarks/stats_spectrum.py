"""The eigenvalues of the statistics ``C`` at an editor's layers, and how many fall below null-space thresholds.

    python -m benchmarks.stats_spectrum --model gemma3-270m --editor alphaedit

How AlphaEdit's ``nullspace_threshold`` was chosen for the presets: the
share of directions it treats as free (below the threshold) per layer.
Computes the statistics first if they are not cached (minutes per layer on a CPU).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from editors import make_editor
from editors.second_moment import editor_second_moment
from pitfalls_editkit.cache import default_cache_dir
from pitfalls_editkit.contract import EditorSettings
from pitfalls_editkit.hparams import module_name
from pitfalls_editkit.models import load_model


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.stats_spectrum", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="gemma3-270m")
    parser.add_argument("--editor", default="alphaedit", help="whose layers and statistics settings (default: alphaedit)")
    parser.add_argument("--stats-tokens", type=int, default=100_000)
    parser.add_argument("--thresholds", type=float, nargs="+", default=[1e-3, 1e-2, 2e-2, 1e-1])
    parser.add_argument("--cache-dir", default=None)
    args = parser.parse_args(argv)
    cache = Path(args.cache_dir) if args.cache_dir else default_cache_dir()
    loaded = load_model(args.model, torch.device("cpu"), cache_dir=cache)
    settings = EditorSettings(cache_dir=cache, stats_tokens=args.stats_tokens)
    hp = make_editor(args.editor, loaded, settings).hparams
    print("| module | dim | s to get C | median eigenvalue | " + " | ".join(f"< {t:g}" for t in args.thresholds) + " |")
    print("|---|---|---|---|" + "---|" * len(args.thresholds))
    for layer in hp.layers:
        name = module_name(hp.rewrite_module_tmp, layer)
        start = time.perf_counter()
        moment = editor_second_moment(loaded, settings, name, hp.mom2_n_samples, hp.mom2_dtype)
        seconds = time.perf_counter() - start
        values = torch.linalg.eigvalsh(moment.double().cpu())
        shares = [f"{int((values < t).sum())} ({100 * float((values < t).float().mean()):.0f}%)" for t in args.thresholds]
        print(f"| {name} | {len(values)} | {seconds:.1f} | {float(values.median()):.3g} | " + " | ".join(shares) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
