"""The unedited model's scores and greedy answers, computed once per model and kept on disk for every editor's run.

A five-editor comparison scores the same facts on the same original model
five times otherwise. Entries are keyed by the prompts and objects scored
(answers: by the prompts and the number of new tokens), in a JSON-lines file
per model fingerprint; workers append under a lock and each process reads the
file once.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path

from filelock import FileLock

from pitfalls_editkit.safe_json import JsonInputError, loads


class OriginalScores:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.hits = self.misses = 0
        self._scores: dict[str, list[float]] = {}
        self._answers: dict[str, list[str]] = {}
        if path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    entry = loads(line, str(path))
                    if "answers" in entry:
                        answers = entry["answers"]
                        if not isinstance(answers, list) or not all(isinstance(a, str) for a in answers):
                            continue  # a hand-edited or foreign line: those answers are generated again
                        self._answers[str(entry["key"])] = list(answers)
                    else:
                        self._scores[str(entry["key"])] = [float(v) for v in entry["scores"]]
                except (JsonInputError, KeyError, TypeError, ValueError, AttributeError):
                    continue  # a line cut by a crash: that entry is scored again

    @staticmethod
    def key(prompts: Sequence[str], objects: Sequence[str]) -> str:
        return hashlib.sha256(json.dumps([list(prompts), list(objects)], ensure_ascii=False).encode()).hexdigest()[:24]

    def scores(self, prompts: Sequence[str], objects: Sequence[str], compute: Callable[[], list[float]]) -> list[float]:
        """The cached scores of ``objects`` after ``prompts`` on the original model, else ``compute()`` (then stored)."""
        key = self.key(prompts, objects)
        if key in self._scores:
            self.hits += 1
            return list(self._scores[key])
        self.misses += 1
        return self.store(prompts, objects, compute())

    def answers(self, prompts: Sequence[str], max_new_tokens: int, compute: Callable[[], list[str]],
                settle: Sequence[str] = ()) -> list[str]:
        """The cached greedy answers to ``prompts`` on the original model (``--generation``), else ``compute()``;
        ``settle``: the labels they were cut for (``Generator.answers``), part of the key."""
        # "rule 2": answers kept before settle's last-word rule ran on further; their verdicts are the same, their text longer
        key = self.key(prompts, [f"greedy answers, at most {max_new_tokens} new tokens",
                                 *(f"settled (rule 2) for {label}" for label in settle)])
        if len(self._answers.get(key, ())) == len(prompts):
            self.hits += 1
            return list(self._answers[key])
        self.misses += 1
        answers = [str(a) for a in compute()]
        self._answers[key] = answers
        self._append({"key": key, "answers": answers})
        return list(answers)

    def has(self, prompts: Sequence[str], objects: Sequence[str]) -> bool:
        return self.key(prompts, objects) in self._scores

    def store(self, prompts: Sequence[str], objects: Sequence[str], scores: Sequence[float]) -> list[float]:
        """Keep scores computed elsewhere (several facts scored in one batched call)."""
        key, value = self.key(prompts, objects), [float(v) for v in scores]
        self._scores[key] = value
        self._append({"key": key, "scores": value})
        return list(value)

    def _append(self, entry: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.path) + ".lock"), open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(entry, ensure_ascii=False) + "\n")
