"""`lsllama serve`: a real uvicorn server on 127.0.0.1 that answers like `Classifier` and `lsllama predict`."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path

import httpx
import numpy as np
import pytest
import uvicorn
from fastapi import FastAPI
from typer.testing import CliRunner

from lsllama import Classifier, build_config
from lsllama.cli import app as cli
from lsllama.serving.server import Batcher, ServeSettings, create_app

from .conftest import toy_ner_rows, toy_rows, write_jsonl

SETTINGS = ServeSettings(max_batch_size=16, max_wait_ms=20, max_texts=8, max_text_chars=300, max_body_bytes=4096)


class LiveServer:
    """uvicorn in a thread on a socket bound here (port 0: the OS picks a free port, so no race)."""

    def __init__(self, app: FastAPI):
        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.socket.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.socket]}, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "server did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=60)
        assert not self.thread.is_alive(), "server did not shut down"
        self.socket.close()


def train(folder: Path, task: str, rows: list[dict], epochs: float, lr: float) -> tuple[Classifier, Path]:
    write_jsonl(folder / "data" / "train.jsonl", rows)
    write_jsonl(folder / "data" / "validation.jsonl", rows[:16])
    cfg = build_config(
        task=task,
        overrides={
            "model": {"name": "tiny-random", "precision": "fp32"},
            "data": {"data": str(folder / "data")},
            "train": {"epochs": epochs, "min_steps": 0, "learning_rate": lr, "batch_size": 8, "tensorboard": False},
        },
    )
    return Classifier.train(cfg, folder / "run", progress=False), folder / "run"


@pytest.fixture(scope="module")
def seq_run(tmp_path_factory) -> tuple[Classifier, Path]:
    return train(tmp_path_factory.mktemp("seq"), "sequence", toy_rows(64, 1), 2, 3e-3)


@pytest.fixture(scope="module")
def seq_clf(seq_run) -> Classifier:
    return seq_run[0]


@pytest.fixture(scope="module")
def ner_clf(tmp_path_factory) -> Classifier:
    return train(tmp_path_factory.mktemp("ner"), "token", toy_ner_rows(64, 1), 6, 5e-3)[0]


@pytest.fixture(scope="module")
def seq_server(seq_clf):
    with LiveServer(create_app(seq_clf, SETTINGS)) as server:
        yield server


def texts_for(n: int) -> list[str]:
    return [f"{'a wonderful' if i % 3 else 'the terrible'} story of {i} people" for i in range(n)]


def test_sequence_answers_equal_classifier_and_cli(seq_server, seq_run, tmp_path):
    seq_clf, run_dir = seq_run
    texts = texts_for(6)
    answer = httpx.post(f"{seq_server.url}/predict", json={"inputs": texts})
    assert answer.status_code == 200, answer.text
    served = answer.json()["predictions"]
    source = tmp_path / "texts.txt"
    source.write_text("\n".join(texts) + "\n")
    result = CliRunner().invoke(cli, ["predict", str(run_dir), "-i", str(source), "-o", str(tmp_path / "p.jsonl")])
    assert result.exit_code == 0, result.output
    written = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    probs = seq_clf.predict_proba(texts)
    for got, cli_record, p in zip(served, written, probs, strict=True):
        assert got.keys() == cli_record.keys()
        assert (got["text"], got["label"]) == (cli_record["text"], cli_record["label"])
        np.testing.assert_allclose(list(got["probabilities"].values()), p, atol=1e-5)
        np.testing.assert_allclose(got["score"], cli_record["score"], atol=1e-5)
    [single] = httpx.post(f"{seq_server.url}/predict", json={"inputs": texts[0]}).json()["predictions"]
    assert single["label"] == served[0]["label"]


def test_token_answers_equal_predict_entities(ner_clf):
    texts = ["Maria Smith flew to Berlin today.", "John Smith flew to Rome today ."]
    with LiveServer(create_app(ner_clf, SETTINGS)) as server:
        answer = httpx.post(f"{server.url}/predict", json={"inputs": texts})
    assert answer.status_code == 200, answer.text
    expected = [
        {"text": t, "entities": [asdict(e) for e in ents]}
        for t, ents in zip(texts, ner_clf.predict_entities(texts), strict=True)
    ]
    assert answer.json()["predictions"] == expected
    assert {"type": "LOC", "text": "Berlin", "start_char": 20, "end_char": 26}.items() <= next(
        e for e in expected[0]["entities"] if e["type"] == "LOC"
    ).items()


def test_a_run_trained_on_text_pairs_takes_pairs(tmp_path):
    rows = [{**row, "hypothesis": f"about {row['text'].split()[0]}"} for row in toy_rows(32, 3)]
    write_jsonl(tmp_path / "data" / "train.jsonl", rows)
    write_jsonl(tmp_path / "data" / "validation.jsonl", rows[:8])
    cfg = build_config(
        overrides={
            "model": {"name": "tiny-random", "precision": "fp32"},
            "data": {"data": str(tmp_path / "data"), "text_pair_column": "hypothesis"},
            "train": {"epochs": 1, "min_steps": 0, "batch_size": 8, "tensorboard": False},
        },
    )
    clf = Classifier.train(cfg, tmp_path / "run", progress=False)
    texts, pairs = ["a wonderful story", "terrible time"], ["about a", "about terrible"]
    with LiveServer(create_app(clf, SETTINGS)) as server:
        answer = httpx.post(f"{server.url}/predict", json={"inputs": texts, "pairs": pairs})
        missing = httpx.post(f"{server.url}/predict", json={"inputs": texts})
        uneven = httpx.post(f"{server.url}/predict", json={"inputs": texts, "pairs": pairs[:1]})
    assert answer.status_code == 200, answer.text
    got = [list(p["probabilities"].values()) for p in answer.json()["predictions"]]
    np.testing.assert_allclose(got, clf.predict_proba(texts, pairs), atol=1e-5)
    assert missing.status_code == 422 and "pairs" in missing.text
    assert uneven.status_code == 422


def test_200_concurrent_requests_are_batched_and_all_answered_correctly(seq_server, seq_clf):
    texts = texts_for(200)
    expected = seq_clf.predict_proba(texts)
    before = httpx.get(f"{seq_server.url}/health").json()

    async def ask_all() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=200)
        async with httpx.AsyncClient(base_url=seq_server.url, limits=limits, timeout=120) as client:
            return await asyncio.gather(*(client.post("/predict", json={"inputs": t}) for t in texts))

    answers = asyncio.run(ask_all())
    after = httpx.get(f"{seq_server.url}/health").json()
    for text, answer, p in zip(texts, answers, expected, strict=True):
        assert answer.status_code == 200, answer.text
        [record] = answer.json()["predictions"]
        assert record["text"] == text
        assert record["label"] == seq_clf.labels.names[int(p.argmax())]
        np.testing.assert_allclose(list(record["probabilities"].values()), p, atol=1e-5)
    assert after["requests"] - before["requests"] == 200
    assert after["texts"] - before["texts"] == 200
    assert after["batches"] - before["batches"] < 200  # requests shared model calls
    assert 1 < after["largest_batch"] <= SETTINGS.max_batch_size


def test_malformed_wrong_and_oversized_requests_get_4xx(seq_server):
    url = f"{seq_server.url}/predict"
    json_header = {"content-type": "application/json"}
    assert httpx.post(url, content=b'{"inputs": ', headers=json_header).status_code == 422
    for body in (
        {"inputs": 5},
        {"inputs": [1, 2]},
        {"inputs": None},
        {},
        ["a text"],
        {"inputs": "a text", "unknown": 1},
        {"inputs": "   "},
        {"inputs": []},
        {"inputs": ["fine", ""]},
        {"inputs": ["t"] * (SETTINGS.max_texts + 1)},
        {"inputs": "x" * (SETTINGS.max_text_chars + 1)},
        {"inputs": "a text", "pairs": "not a pair model"},
    ):
        answer = httpx.post(url, json=body)
        assert answer.status_code == 422, (body, answer.text)
    oversize = json.dumps({"inputs": ["y" * 200] * 30}).encode()
    assert len(oversize) > SETTINGS.max_body_bytes
    assert httpx.post(url, content=oversize, headers=json_header).status_code == 413

    def chunks():  # no Content-Length: the limit must hold while the body streams in
        yield b'{"inputs": "'
        for _ in range(10):
            yield b"z" * 1000
        yield b'"}'

    assert httpx.post(url, content=chunks(), headers=json_header).status_code == 413
    assert httpx.get(url).status_code == 405
    assert httpx.post(url, json={"inputs": "still serving"}).status_code == 200


def test_health_metadata_and_openapi(seq_server, seq_clf):
    assert httpx.get(f"{seq_server.url}/health").json()["status"] == "ok"
    meta = httpx.get(f"{seq_server.url}/metadata").json()
    assert meta["task"] == "sequence" and meta["labels"] == seq_clf.labels.names
    assert meta["base_model"] == "tiny-random" and meta["settings"]["max_texts"] == SETTINGS.max_texts
    schema = httpx.get(f"{seq_server.url}/openapi.json").json()
    assert {"/predict", "/health", "/metadata"} <= set(schema["paths"])
    assert f'"maxItems": {SETTINGS.max_texts}' in json.dumps(schema)
    docs = httpx.get(f"{seq_server.url}/docs")
    assert docs.status_code == 200 and "swagger-ui-bundle.js" in docs.text
    assert "cdn" not in docs.text and "https://" not in docs.text  # the page works offline
    assets = re.findall(r"""(?:src|href)=['"](/[^'"]+\.(?:js|css))['"]""", docs.text)
    assert len(assets) >= 2
    for asset in assets:  # served from the installed package
        assert httpx.get(f"{seq_server.url}{asset}").status_code == 200, asset


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"inputs": "x" * (SETTINGS.max_text_chars + 1)}, "inputs.0: String should have at most 300 characters"),
        ({"inputs": ["fine", "x" * (SETTINGS.max_text_chars + 1)]}, "inputs.1: String should have at most 300"),
        ({"inputs": ["fine", "  "]}, "inputs: a text is empty or only whitespace"),
        ({"inputs": 5}, "inputs: Input should be a valid list"),
        ({}, "inputs: Field required"),
    ],
)
def test_a_bad_request_gets_one_clear_message_without_its_input(seq_server, body, message):
    answer = httpx.post(f"{seq_server.url}/predict", json=body)
    assert answer.status_code == 422
    detail = answer.json()["detail"]
    assert isinstance(detail, str) and detail.startswith(message), detail
    assert "valid string" not in detail and "xxxxxxxxxx" not in answer.text and len(answer.content) < 300


def test_every_request_gets_an_access_log_line(seq_clf, caplog):
    server = LiveServer(create_app(seq_clf, SETTINGS))
    with caplog.at_level(logging.INFO, logger="lsllama.serving.access"), server as s, httpx.Client() as client:
        client.post(f"{s.url}/predict", json={"inputs": "a wonderful film"})
        client.post(f"{s.url}/predict", json={"inputs": 5})
        client.get(f"{s.url}/health")
    lines = [r.getMessage() for r in caplog.records if r.name == "lsllama.serving.access"]
    # One kept-alive connection, so one client address: a late line from an earlier test's server has another.
    ours = lines[-1].split(" ", 1)[0]
    lines = [line for line in lines if line.startswith(ours + " ")]
    assert len(lines) == 3
    assert re.fullmatch(r"127\.0\.0\.1:\d+ POST /predict 200 [\d.]+ms", lines[0]), lines[0]
    assert " POST /predict 422 " in lines[1] and " GET /health 200 " in lines[2]


def test_batcher_groups_waiting_requests_and_isolates_a_failing_one():
    calls: list[list[str]] = []

    def predict(texts: list[str], pairs: list[str] | None) -> list[dict]:
        calls.append(texts)
        if "bad" in texts:
            raise ValueError("bad text")
        return [{"text": t} for t in texts]

    async def scenario() -> list:
        batcher = Batcher(predict, max_batch_size=4, max_wait_s=0.2)
        worker = asyncio.create_task(batcher.run())
        try:
            jobs = [["a"], ["b", "c"], ["bad"], ["d", "e"]]
            return await asyncio.gather(*(batcher.submit(j, None) for j in jobs), return_exceptions=True)
        finally:
            worker.cancel()
            batcher.executor.shutdown()

    results = asyncio.run(scenario())
    assert results[0] == [{"text": "a"}] and results[1] == [{"text": "b"}, {"text": "c"}]
    assert isinstance(results[2], ValueError)
    assert results[3] == [{"text": "d"}, {"text": "e"}]
    assert calls[0] == ["a", "b", "c", "bad"]  # one model call for the first four texts (the limit)
    assert ["d", "e"] in calls and ["bad"] in calls  # the failed batch was retried request by request


def test_cli_serve_answers_and_shuts_down_cleanly_on_sigint(seq_run):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "lsllama.cli", "serve", str(seq_run[1]), "--port", str(port)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "lsllama serve did not come up"
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        answer = httpx.post(f"http://127.0.0.1:{port}/predict", json={"inputs": "a wonderful film"})
        assert answer.status_code == 200
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, stderr  # uvicorn.run ends quietly after a graceful Ctrl+C shutdown
    assert "Application shutdown complete" in stderr and "Traceback" not in stderr
    assert re.search(r"access 127\.0\.0\.1:\d+ POST /predict 200 ", stderr)  # the CLI shows the access log
