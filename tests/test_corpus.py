"""The malformed-input corpus (tests/corpus/cases.yaml): every bad input gets one clear `error:` line
naming the file and line or the argument, the right exit code, no traceback, and nothing half-written."""

from __future__ import annotations

import hashlib
import shlex
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from lsllama.cli import app

from .conftest import toy_rows, write_jsonl

CORPUS = Path(__file__).parent / "corpus"
CASES = {case["id"]: case for case in yaml.safe_load((CORPUS / "cases.yaml").read_text())}
runner = CliRunner()
TINY = "--model tiny-random --quiet --min-steps 0"
"""`{tiny}` in the cases: the finished run below was trained with these, so a case that resumes it matches."""


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> tuple[Path, Path]:
    """A finished tiny run (with its checkpoints) and the data it was trained on."""
    root = tmp_path_factory.mktemp("corpus")
    toy = root / "toy"
    write_jsonl(toy / "train.jsonl", toy_rows(24, 1))
    write_jsonl(toy / "validation.jsonl", toy_rows(8, 2))
    run = root / "run"
    result = runner.invoke(app, ["train", *shlex.split(TINY), "--keep-checkpoints", "--data", str(toy), "-o", str(run)])
    assert result.exit_code == 0, result.output
    return run, toy


def damage(run: Path, changes: dict) -> None:
    for name in changes.get("delete", []):
        path = run / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    for name, text in changes.get("write", {}).items():
        (run / name).write_text(text)
    for pattern in changes.get("truncate", []):
        matches = sorted(run.glob(pattern))
        assert matches, f"{pattern} matches nothing in the run folder"
        for path in matches:
            path.write_bytes(path.read_bytes()[:100])


def snapshot(folder: Path) -> dict[str, str]:
    if not folder.exists():
        return {}
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
        for p in sorted(folder.rglob("*"))
    }


def test_corpus_is_large_and_covers_every_kind_of_input():
    assert len(CASES) >= 30
    commands = [case["args"] for case in CASES.values()]
    for suffix in (".jsonl", ".csv", ".tsv", ".conll", ".yaml"):
        assert any(suffix in c for c in commands), suffix
    assert sum("run" in case for case in CASES.values()) >= 5  # damaged run folders
    assert any(case["exit"] == 1 for case in CASES.values())  # a runtime failure


@pytest.mark.parametrize("case_id", list(CASES))
def test_malformed_input(case_id, finished_run, tmp_path):
    case = CASES[case_id]
    if case.get("without_cuda") and torch.cuda.is_available():
        pytest.skip("only an error where CUDA is missing")
    template_run, toy = finished_run
    run, out, existing = tmp_path / "run", tmp_path / "out", tmp_path / "existing"
    shutil.copytree(template_run, run)
    damage(run, case.get("run", {}))
    existing.mkdir()
    (existing / "keep.txt").write_text("not lsllama's")
    before, corpus_before, existing_before = snapshot(run), snapshot(CORPUS), snapshot(existing)
    args = case["args"].format(corpus=CORPUS, out=out, run=run, toy=toy, existing=existing, tiny=TINY)

    result = runner.invoke(app, shlex.split(args))

    assert result.exit_code == case["exit"], result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr
    for words in case["says"]:
        assert str(words) in errors[0], errors[0]
    assert "Traceback" not in result.output
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit)
    assert snapshot(run) == before, "the run folder was changed"
    assert snapshot(CORPUS) == corpus_before, "something was written into the corpus"
    assert snapshot(existing) == existing_before, "an existing folder was changed"
    if "leaves" in case:  # a runtime failure keeps what lets the user resume, and nothing claims success
        left = {p.name for p in out.iterdir()}
        assert set(case["leaves"]) <= left and "results.json" not in left, left
    else:
        assert not out.exists(), sorted(out.rglob("*"))


def test_debug_flag_shows_the_traceback(tmp_path):
    args = CASES["jsonl-malformed-json"]["args"].format(
        corpus=CORPUS, out=tmp_path / "out", run="", toy="", existing="", tiny=TINY
    )
    result = runner.invoke(app, ["--debug", *shlex.split(args)])
    assert result.exit_code != 0
    assert type(result.exception).__name__ == "DataError"


def test_config_file_values_are_read_as_users_write_them(tmp_path):
    """The counterpart of the YAML cases: `1e-4` (a string to YAML 1.1), ints for floats, lists and nulls
    are accepted, and a run's own saved config.yaml reads back unchanged."""
    from lsllama.config import RunConfig, build_config

    path = tmp_path / "config.yaml"
    path.write_text(
        "model:\n  lora_targets: [q_proj, v_proj]\n  unmask_from_layer: null\n"
        "train:\n  learning_rate: 1e-4\n  epochs: 2\n  max_grad_norm: 1\n"
    )
    cfg = build_config(config_file=path).resolved()
    assert cfg.train.learning_rate == 1e-4 and cfg.train.epochs == 2.0
    assert cfg.model.lora_targets == ["q_proj", "v_proj"]
    cfg.save(tmp_path / "saved.yaml")
    assert RunConfig.load(tmp_path / "saved.yaml") == cfg
