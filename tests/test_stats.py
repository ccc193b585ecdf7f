"""Second-moment statistics: the reference's .npz layout (--stats-dir) and Hugging Face corpora (--stats-corpus hf:...)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from editors import make_editor
from editors.corpus import CorpusError, load_corpus
from editors.second_moment import (
    StatsFileError,
    collect_second_moment,
    editor_second_moment,
    read_reference_stats,
    reference_stats_path,
    token_samples,
)
from pitfalls_editkit.contract import EditorSettings
from tests.helpers import records, run_pytest

MODULE = "model.layers.0.mlp.down_proj"  # tiny-llama's ROME layer


def write_reference_file(path: Path, sum_kkt: np.ndarray, count: int) -> None:
    """A file as the reference's layer_stats writes it: CombinedStat(mom2=SecondMoment()).state_dict() in an .npz."""
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **{"mom2.constructor": np.array("util.runningstats.SecondMoment()"),
                      "mom2.count": np.array(count), "mom2.mom2": sum_kkt.astype(np.float32)})


def spd(size: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    basis = rng.standard_normal((size, size))
    return basis @ basis.T + size * np.eye(size)


def test_a_reference_file_is_read_as_the_second_moment(tiny_loader, cache_dir, tmp_path):
    loaded = tiny_loader("tiny-llama")
    size = loaded.model.get_submodule(MODULE).weight.shape[1]
    total = spd(size, 0) * 1000
    write_reference_file(reference_stats_path(tmp_path, "tiny-llama", "wikipedia", MODULE, "float32", 100000), total, 1000)
    settings = EditorSettings(cache_dir=cache_dir, stats_dir=tmp_path, stats_corpus="hf:wikipedia:20200501.en")
    moment = editor_second_moment(loaded, settings, MODULE, 100000, "float32")
    torch.testing.assert_close(moment.double(), torch.from_numpy(total.astype(np.float32).astype(np.float64) / 1000))
    rome = make_editor("rome", loaded, settings)
    torch.testing.assert_close(rome.inverse_covariance(MODULE).double(), torch.linalg.inv(moment.double()), rtol=1e-4, atol=1e-6)


def test_statistics_we_compute_are_written_in_the_reference_layout(tiny_loader, cache_dir, tmp_path):
    loaded = tiny_loader("tiny-llama")
    text = tmp_path / "notes.txt"
    text.write_text("\n\n".join(f"Paragraph {i} says that the river flows past the old mill and on to the sea." for i in range(40)))
    settings = EditorSettings(cache_dir=cache_dir, stats_dir=tmp_path / "stats", stats_corpus=str(text), stats_tokens=2000)
    moment = editor_second_moment(loaded, settings, MODULE, 100000, "float32")
    written = list((tmp_path / "stats" / "tiny-llama").glob(f"*_stats/{MODULE}_float32_mom2_100000.npz"))
    assert len(written) == 1
    with np.load(written[0], allow_pickle=False) as data:
        assert {"mom2.mom2", "mom2.count"} <= set(data.files) and data["mom2.mom2"].dtype == np.float32
    again = read_reference_stats(written[0])
    torch.testing.assert_close((again["sum_kkT"] / again["count"]).float(), moment.float())


def test_a_rank_deficient_moment_stored_in_float32_is_accepted(tmp_path):
    """Fewer keys than dimensions (a singular C, as from a short corpus), rounded to float32 as the reference stores
    it: inside the tolerances (symmetric within 1e-5, semidefinite within 1e-4), so it is read."""
    keys = np.random.default_rng(3).standard_normal((40, 128)) * 7
    path = tmp_path / "singular.npz"
    write_reference_file(path, keys.T @ keys, 40)
    assert int(read_reference_stats(path, 128)["count"]) == 40


@pytest.mark.parametrize(("content", "expected"), [
    ({"other": np.zeros(2)}, "has no 'mom2.mom2' and 'mom2.count'"),
    ({"mom2.mom2": np.zeros((3, 3)), "mom2.count": np.array(5)}, "shape (3, 3)"),
    ({"mom2.mom2": np.eye(128), "mom2.count": np.array(0)}, "the count of keys is 0.0, expected a whole number >= 1"),
    ({"mom2.mom2": np.eye(128), "mom2.count": np.array(2.5)}, "the count of keys is 2.5"),
    ({"mom2.mom2": -np.eye(128), "mom2.count": np.array(5)}, "is not positive semidefinite"),
    ({"mom2.mom2": np.triu(np.ones((128, 128))), "mom2.count": np.array(5)}, "is not symmetric"),
    ({"mom2.mom2": np.full((128, 128), np.inf), "mom2.count": np.array(5)}, "NaN or infinite"),
    ({"mom2.mom2": np.zeros((128, 128)), "mom2.count": np.array(5)}, "all zeros"),
    ({"mom2.mom2": np.eye(128).astype(np.complex64), "mom2.count": np.array(5)}, "not real numbers"),
])
def test_a_bad_reference_file_is_one_line_naming_it(tmp_path, content, expected):
    path = tmp_path / "stats.npz"
    np.savez(path, **content)
    with pytest.raises(StatsFileError, match="stats.npz") as info:
        read_reference_stats(path, 128)
    assert expected in str(info.value)
    (tmp_path / "broken.npz").write_bytes(b"not a zip")
    with pytest.raises(StatsFileError, match="broken.npz: cannot read it"):
        read_reference_stats(tmp_path / "broken.npz", 128)


def make_hf_folder(folder: Path, texts: list[str]) -> Path:
    import datasets

    datasets.Dataset.from_dict({"text": texts, "title": [f"t{i}" for i in range(len(texts))]}).save_to_disk(str(folder))
    return folder


ARTICLES = [f"Article {i}. " + " ".join(f"The town number {i} lies on a river and has {j} bridges." for j in range(30))
            for i in range(12)]


def test_a_local_hf_dataset_is_sampled_as_whole_truncated_articles(tiny_loader, cache_dir, tmp_path):
    loaded = tiny_loader("tiny-llama")
    corpus = load_corpus(f"hf:{make_hf_folder(tmp_path / 'wiki', ARTICLES)}")
    assert corpus.whole_texts
    samples = list(token_samples(loaded, corpus, max_tokens=1, max_samples=5))
    assert len(samples) == 5  # mom2_n_samples counts articles; the token budget does not apply
    assert max(len(s) for s in samples) <= loaded.model.config.max_position_embeddings
    assert samples == list(token_samples(loaded, corpus, max_tokens=1, max_samples=5))  # the same seeded draw
    stats = collect_second_moment(loaded, MODULE, corpus, max_tokens=1, max_samples=5)
    assert int(stats["count"]) == sum(len(s) for s in samples)
    # A folder of JSON-lines files (no save_to_disk) works too.
    (tmp_path / "jsonl").mkdir()
    (tmp_path / "jsonl" / "train.jsonl").write_text("\n".join(json.dumps({"text": t}) for t in ARTICLES))
    assert len(list(load_corpus(f"hf:{tmp_path / 'jsonl'}").articles(3))) == 3


def test_hf_corpus_errors_are_one_line(tmp_path):
    import datasets

    datasets.Dataset.from_dict({"body": ["x"]}).save_to_disk(str(tmp_path / "no-text"))
    with pytest.raises(CorpusError, match="has no 'text' column"):
        load_corpus(f"hf:{tmp_path / 'no-text'}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CorpusError, match="cannot read .*empty as a dataset"):
        load_corpus(f"hf:{tmp_path / 'empty'}")
    # A hub dataset that is not here: one line saying what to download and where (run offline, in a fresh process).
    code = ("from editors.corpus import load_corpus, CorpusError\n"
            "try:\n    load_corpus('hf:wikipedia:20200501.en')\nexcept CorpusError as e:\n    print(e)\n")
    env = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env,
                          cwd=Path(__file__).resolve().parents[1])
    line = proc.stdout.strip()
    assert line.startswith("--stats-corpus hf:wikipedia:20200501.en: the dataset is not available here"), proc.stdout + proc.stderr
    assert "save_to_disk" in line and "--stats-dir" in line and "\n" not in line


@pytest.mark.slow
def test_a_run_with_stats_dir_uses_the_reference_files(published, cache_dir, tmp_path):
    """--stats-dir alone means the reference's statistics: read from the files, nothing computed into the cache."""
    stats = tmp_path / "stats"
    write_reference_file(reference_stats_path(stats, "tiny-llama", "wikipedia", MODULE, "float32", 100000), spd(128, 1), 500)
    fresh_cache = tmp_path / "cache"
    proc = run_pytest(["suites/", "--editor", "rome", "--model", "tiny-llama", "--dataset-dir", str(published / "GPT2-XL"),
                       "--limit", "1", "-k", "easy", "--record-only", "--stats-dir", str(stats), "--cache-dir", str(fresh_cache),
                       "--results-dir", str(tmp_path / "results"), "--run-name", "ref"], cache_dir)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert [r["status"] for r in records(tmp_path / "results" / "ref" / "cases.jsonl")] == ["ok"]
    assert not (fresh_cache / "stats").exists()
    config = json.loads((tmp_path / "results" / "ref" / "run.json").read_text())
    assert config["stats_dir"] == str(stats) and config["stats_corpus"] == "hf:wikipedia:20200501.en"
    # A file of the wrong shape is read too: the case records one line naming it.
    write_reference_file(reference_stats_path(stats, "tiny-llama", "wikipedia", MODULE, "float32", 100000), spd(4, 1), 500)
    proc = run_pytest(["suites/", "--editor", "rome", "--model", "tiny-llama", "--dataset-dir", str(published / "GPT2-XL"),
                       "--limit", "1", "-k", "easy", "--record-only", "--stats-dir", str(stats), "--cache-dir", str(fresh_cache),
                       "--results-dir", str(tmp_path / "results"), "--run-name", "bad"], cache_dir)
    (line,) = records(tmp_path / "results" / "bad" / "cases.jsonl")
    assert line["status"] == "error" and "mom2_100000.npz: mom2.mom2 has shape (4, 4)" in line["error"], line


def test_a_run_with_a_local_hf_corpus(published, cache_dir, tmp_path):
    folder = make_hf_folder(tmp_path / "wiki", ARTICLES)
    proc = run_pytest(["suites/", "--editor", "rome", "--model", "tiny-llama", "--dataset-dir", str(published / "GPT2-XL"),
                       "--limit", "1", "-k", "easy", "--record-only", "--stats-corpus", f"hf:{folder}",
                       "--results-dir", str(tmp_path / "results"), "--run-name", "hf"], cache_dir)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert [r["status"] for r in records(tmp_path / "results" / "hf" / "cases.jsonl")] == ["ok"]
    config = json.loads((tmp_path / "results" / "hf" / "run.json").read_text())
    assert config["stats_corpus"] == f"hf:{folder}" and "stats_tokens" not in config  # articles are counted, not tokens


def test_a_singular_moment_is_refused_where_the_editor_inverts_it(tiny_loader, cache_dir, tmp_path):
    """ROME inverts C: a rank-deficient one (fewer keys than dimensions) is one line naming the file; MEMIT's
    callers, which solve with K K^T or a ridge added, take it."""
    loaded = tiny_loader("tiny-llama")
    keys = np.random.default_rng(4).standard_normal((40, 128))
    path = reference_stats_path(tmp_path, "tiny-llama", "wikipedia", MODULE, "float32", 100000)
    write_reference_file(path, keys.T @ keys, 40)
    settings = EditorSettings(cache_dir=cache_dir, stats_dir=tmp_path, stats_corpus="hf:wikipedia:20200501.en")
    assert editor_second_moment(loaded, settings, MODULE, 100000, "float32").shape == (128, 128)
    with pytest.raises(StatsFileError, match=r"mom2_100000.npz: the second moment of .* is singular"):
        editor_second_moment(loaded, settings, MODULE, 100000, "float32", invertible=True)


def test_the_gensim_excerpt_is_parsed_once_per_process_and_keeps_the_digest_the_statistics_files_are_named_by():
    from editors.corpus import GENSIM_WIKI, _parse_gensim_wiki

    first = load_corpus(GENSIM_WIKI)
    hits = _parse_gensim_wiki.cache_info().hits
    again = load_corpus(GENSIM_WIKI)
    assert _parse_gensim_wiki.cache_info().hits == hits + 1 and again.paragraphs == first.paragraphs
    # the SHA-256 of the decompressed excerpt, as in every statistics file computed from it (users' caches stay valid)
    assert first.digest == "34c1c63050c8" and len(first.paragraphs) > 100
