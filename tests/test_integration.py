"""The real default model (SmolLM2-135M-Instruct) on real data from ../shared/data. Runs in CI."""

from __future__ import annotations

import pytest

from lsllama import Classifier, build_config

from .conftest import DATA_ROOT

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not (DATA_ROOT / "sst2").is_dir(), reason=f"no SST-2 under {DATA_ROOT}"),
]


def test_short_sst2_training_is_clearly_above_chance(tmp_path):
    cfg = build_config(
        overrides={
            "data": {"data": "sst2", "max_train_samples": 480, "max_eval_samples": 300},
            "train": {"epochs": 1, "tensorboard": False},
        }
    )
    clf = Classifier.train(cfg, tmp_path / "sst2", progress=False)
    metrics = clf.evaluate(max_samples=300)
    assert metrics["accuracy"] >= 0.7, metrics["accuracy"]
    assert clf.predict(["a masterpiece: moving, funny and beautifully made"]) == ["positive"]
