"""Inference through the Python API: what it accepts, exact mode, and what it leaves of its caller's process."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lsllama import Classifier
from lsllama.errors import UsageError
from lsllama.run_folder import atomic_folder, atomic_write_text

from .conftest import toy_rows, train_tiny_run

TEXTS = [f"the movie was {'really ' * (i % 9)}{'wonderful' if i % 2 else 'terrible'}" for i in range(40)]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    return train_tiny_run(tmp_path_factory.mktemp("seq"), toy_rows(32, 1))


@pytest.fixture(scope="module")
def clf(run) -> Classifier:
    return Classifier.load(run, device="cpu")


@pytest.fixture(scope="module")
def pair_run(tmp_path_factory) -> Path:
    rows = [{**r, "hypothesis": "and time"} for r in toy_rows(16, 1)]
    return train_tiny_run(tmp_path_factory.mktemp("pairs"), rows, text_pair_column="hypothesis")


def test_a_string_is_one_text(clf):
    assert clf.predict("a wonderful story") == clf.predict(["a wonderful story"])
    assert len(clf.predict("a b")) == 1
    assert clf.predict_proba("a b").shape == (1, 2)
    assert len(clf.records("a b")) == 1


def test_an_empty_list_gives_an_empty_result(clf):
    assert clf.predict([]) == []
    assert clf.records([]) == []
    assert clf.predict_proba([]).shape == (0, 2)


def test_something_that_is_not_texts_is_a_type_error(clf):
    with pytest.raises(TypeError, match="texts must be a string or a list"):
        clf.predict(42)


def test_a_pair_run_refuses_single_texts_naming_the_pair_column(pair_run):
    pairs = Classifier.load(pair_run, device="cpu")
    with pytest.raises(UsageError, match="'hypothesis'"):
        pairs.predict(["a wonderful story"])
    assert len(pairs.predict(["a wonderful story"], pairs=["and time"])) == 1
    with pytest.raises(UsageError, match="1 texts but 2 pairs"):
        pairs.predict(["a wonderful story"], pairs=["and time", "and time"])


def test_a_single_text_run_refuses_pairs(clf):
    with pytest.raises(UsageError, match="takes no `pairs`"):
        clf.predict(["a wonderful story"], pairs=["x"])


def test_load_leaves_the_global_rng_alone(run):
    torch.manual_seed(1234)
    state = torch.get_rng_state()
    Classifier.load(run, device="cpu")
    assert torch.equal(torch.get_rng_state(), state)


def test_fp32_probabilities_do_not_depend_on_the_batch(run):
    exact = Classifier.load(run, device="cpu", precision="fp32")
    assert exact.model.compute_dtype == torch.float32
    by_size = {size: exact.predict_proba(TEXTS, batch_size=size) for size in (1, 7, 32)}
    np.testing.assert_allclose(by_size[7], by_size[1], atol=1e-4, rtol=0)
    np.testing.assert_allclose(by_size[32], by_size[1], atol=1e-4, rtol=0)
    fast = Classifier.load(run, device="cpu", precision="bf16")
    assert fast.model.compute_dtype == torch.bfloat16
    assert fast.predict_proba(TEXTS, batch_size=32).shape == (len(TEXTS), 2)
    with pytest.raises(UsageError, match="precision must be one of"):
        Classifier.load(run, device="cpu", precision="fp16")


def test_outputs_respect_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.json", "{}")
        folder = atomic_folder(tmp_path / "folder")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == 0o644
    assert stat.S_IMODE(folder.stat().st_mode) == 0o755


def test_the_batch_invariance_benchmark_runs_on_a_tiny_run(run, tmp_path):
    data = tmp_path / "texts.txt"
    data.write_text("\n".join(TEXTS) + "\n")
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "batch_invariance.py"
    command = [sys.executable, str(script), str(run), str(data), "--rows", "40", "--precisions", "bf16", "fp32"]
    proc = subprocess.run([*command, "--results", str(tmp_path / "out")], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads((tmp_path / "out" / "batch_invariance.json").read_text())
    bf16, fp32 = summary["results"]
    assert (bf16["dtype"], fp32["dtype"]) == ("bfloat16", "float32") and summary["rows"] == 40
    assert fp32["max_abs_difference"] < 1e-4 and fp32["rows_per_s_batch_32"] > 0
    assert "| fp32 | float32 |" in (tmp_path / "out" / "batch_invariance.md").read_text()
