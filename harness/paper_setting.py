"""Is a run in the paper's setting? Model, its published data, the paper's editors, their published
hyper-parameters, the reference's statistics (ROME, MEMIT) and the original network (MEND).

The answer goes into ``run.json`` (``paper_setting`` and ``paper_setting_differs``); the report shows a
published value beside ours only for a run in the paper's setting, and says what differs otherwise.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from editors.corpus import REFERENCE_CORPUS
from pitfalls_benchmark.paper_runs import PAPER_EDITORS, PAPER_MODELS, published_folder_of
from pitfalls_editkit.contract import Editor
from pitfalls_editkit.hparams import HyperParamsError, load_hparams

NOT_COMPARED = {"checkpoint"}  # where a file lies is not a setting (MEND's network is checked by what it is)


def _hparams_difference(editor: Editor, model_key: str) -> str | None:
    hparams = getattr(editor, "hparams", None)
    if hparams is None or not dataclasses.is_dataclass(hparams):
        return "the editor shows no hyper-parameters to compare with the published ones"
    published = next((folder / f"{model_key}.json" for folder in editor.hparams_folders()
                      if (folder / f"{model_key}.json").is_file()), None)
    if published is None:
        return f"no published hyper-parameters of {editor.name} for {model_key}"
    try:
        wanted = load_hparams(type(hparams), published)
    except HyperParamsError as exc:
        return str(exc)
    for field in dataclasses.fields(hparams):
        if field.name not in NOT_COMPARED and getattr(hparams, field.name) != getattr(wanted, field.name):
            return (f"hyper-parameter {field.name} = {getattr(hparams, field.name)!r}, published "
                    f"{getattr(wanted, field.name)!r} ({published.name})")
    return None


def paper_setting_differences(model_key: str, dataset_dir: str | Path | None, editor: Editor, mle: bool) -> list[str]:
    """What keeps this run from being the paper's setting (empty: it is the paper's setting)."""
    differs = []
    paper_model = PAPER_MODELS.get(model_key)
    if paper_model is None:
        differs.append(f"model {model_key} (the paper's: {', '.join(PAPER_MODELS)})")
    label = f"{editor.name}+MLE" if mle else editor.name
    if label not in PAPER_EDITORS:
        differs.append(f"editor {label} (the paper's: {', '.join(PAPER_EDITORS)})")
    folder = published_folder_of(dataset_dir)
    if paper_model is not None and folder != paper_model:
        differs.append(f"data {dataset_dir or 'generated'} (the paper's: the published {paper_model} folder)")
    if paper_model is None or label not in PAPER_EDITORS:
        return differs
    problem = _hparams_difference(editor, model_key)
    if problem:
        differs.append(problem)
    described: dict[str, Any] = editor.describe()
    if "stats_corpus" in described and described["stats_corpus"] != REFERENCE_CORPUS:
        differs.append(f"statistics from {described['stats_corpus']} (the paper's: 100,000 Wikipedia articles, "
                       f"--stats-dir with the reference's files or --stats-corpus {REFERENCE_CORPUS})")
    if "original_network" in described and not described["original_network"]:
        differs.append(f"MEND network {described.get('checkpoint')} is ours (the paper's: the original "
                       f"mend-10tok-{model_key}.pt, --hparams-set checkpoint=FILE)")
    return differs
