"""What the paper ran: its two models, its editors, and the published data folder of each model, known by content.

A run is in the paper's setting only on this model, this data and these
editors (harness/paper_setting.py adds the hyper-parameters and the
statistics); only then does the report show the published value beside ours.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from pitfalls_benchmark.splits import SPLITS

# Checkpoint names (the last path part, lower case) of the paper's models -> the name of their published data folder.
PAPER_MODELS = {"gpt2-xl": "GPT2-XL", "gpt-j-6b": "GPT-J"}
PAPER_EDITORS = ("ft", "mend", "rome", "memit", "memit+MLE")  # the paper's Tables 1 and 2

# sha256 (first 16 hex digits) of each split's case file in the published folders (zjunlp/PitfallsKnowledgeEditing, data/).
PUBLISHED_FILES = {
    "GPT2-XL": {"coverage": "2122e65f4d5f9fa6", "reverse": "1b2b967db5a13594", "composite": "cede1cca203ae223",
                "easy": "9e334997a8ee9a1f", "hard": "0919ac18cca9ab5c"},
    "GPT-J": {"coverage": "2122e65f4d5f9fa6", "reverse": "1b2b967db5a13594", "composite": "1f108f707668c973",
              "easy": "ba6e7335c3c3f5b0", "hard": "50ef6e5547898f9e"},
}


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def published_folder_of(dataset_dir: str | Path | None) -> str | None:
    """``GPT2-XL`` / ``GPT-J`` when every case file in ``dataset_dir`` is that published folder's file, else None."""
    if not dataset_dir or not Path(dataset_dir).is_dir():
        return None
    present = {name: Path(dataset_dir) / split.file for name, split in SPLITS.items() if (Path(dataset_dir) / split.file).is_file()}
    if not present:
        return None
    digests = {name: file_digest(path) for name, path in present.items()}
    return next((folder for folder, files in PUBLISHED_FILES.items()
                 if all(files.get(name) == digest for name, digest in digests.items())), None)
