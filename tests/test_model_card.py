"""The model card (RUN/README.md) is rendered from a template that ships with the package."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml
from huggingface_hub import ModelCard

from lsllama.run_folder import RunFolder
from lsllama.training.card import model_card, write_model_card

from .conftest import REPO, toy_rows
from .test_export import train


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    return train(tmp_path_factory.mktemp("card"), "sequence", toy_rows(16, 1), 1, 3e-3)


def test_a_hub_base_model_is_linked_and_named_in_the_hub_metadata(run, tmp_path):
    copy = shutil.copytree(run, tmp_path / "run")
    config = yaml.safe_load((copy / "config.yaml").read_text())
    config["model"]["name"] = "smollm2-135m"
    (copy / "config.yaml").write_text(yaml.safe_dump(config))
    card = ModelCard.load(write_model_card(copy))
    assert card.data.base_model == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert (card.data.library_name, card.data.pipeline_tag) == ("lsllama", "text-classification")
    hub = "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert f"[{hub}](https://huggingface.co/{hub})" in card.text
    assert "(lsllama name `smollm2-135m`)" in card.text


def test_the_card_says_what_the_model_reads_and_where_its_head_started(run, tmp_path):
    text = model_card(RunFolder.locate(run), "run")
    template = yaml.safe_load((run / "config.yaml").read_text())["data"]["template"]
    assert "Possible labels: " in template  # the default run reads the labels question
    assert "| template | `" + template.replace("\n", "\\n") + "` |" in text
    assert "| head init | label_names |" in text


def test_an_unfinished_run_says_so_and_leaves_out_no_section(run, tmp_path):
    copy = shutil.copytree(run, tmp_path / "run", ignore=shutil.ignore_patterns("results.json", "report"))
    text = model_card(RunFolder.locate(copy), "unfinished")
    assert "No results yet: training has not finished." in text and "| training examples | ? |" in text
    headings = [line for line in text.splitlines() if line.startswith("## ")]
    assert headings == ["## Usage", "## Model", "## Data", "## Training", "## Results", "## Configuration"]
    assert "\n\n\n" not in text  # a section left out leaves no blank lines behind


def test_the_card_template_ships_in_the_wheel(tmp_path):
    source = tmp_path / "source"  # a copy: building in the checkout would leave build/ and a stale build cache
    shutil.copytree(REPO / "src", source / "src", ignore=shutil.ignore_patterns("*.egg-info", "__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path), str(source)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    (wheel,) = tmp_path.glob("lsllama-*.whl")
    assert "lsllama/training/templates/model_card.md" in zipfile.ZipFile(wheel).namelist()
