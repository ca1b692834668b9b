"""Throughput and latency of `lsllama serve`, with and without batching.

    python -m benchmarks serve [--run RUN] [--requests 400] [--concurrency 32]

Each setting starts `lsllama serve` in a child process (its own interpreter, so this client does not
compete with the server for the GIL), warms it up, then `--concurrency` clients send one-text requests
(SST-2 validation sentences) until `--requests` are answered; latency is per request, as the client
sees it. "batched" is the server's default batching; "unbatched" is `--max-batch-size 1`. Without
`--run`, a quick run of the default model (SmolLM2-135M, 200 SST-2 training rows, one epoch) is trained
once and cached under benchmarks/cache/. Writes benchmarks/results/serve.json and .md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np

from benchmarks import record

CACHED_RUN = record.CACHE / "serve-smollm2-sst2-200-labels"  # the defaults since the `labels` template


def default_run() -> Path:
    """Train (once) the quick run this benchmark serves when no --run is given."""
    from lsllama import Classifier, build_config

    # One epoch (no step floor): the benchmark times serving, not the model's accuracy.
    train = {"tensorboard": False, "min_steps": 0}
    cfg = build_config(overrides={"data": {"data": "sst2", "max_train_samples": 200}, "train": train})
    Classifier.train(cfg, CACHED_RUN, progress=True)  # a finished run is loaded, not trained again
    return CACHED_RUN


def sst2_texts() -> list[str]:
    from lsllama.config import DataConfig
    from lsllama.data.dataset import load_split, resolve_labels

    cfg = DataConfig(data="sst2")
    return [e.text for e in load_split(cfg, "validation", "sequence", resolve_labels(cfg, "sequence"), None)]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(run: Path, port: int, options: list[str]) -> subprocess.Popen:
    command = [sys.executable, "-m", "lsllama.cli", "serve", str(run), "--port", str(port), *options]
    process = subprocess.Popen(command, env={**os.environ, "TRANSFORMERS_VERBOSITY": "error"})
    deadline = time.monotonic() + 600
    while True:
        if process.poll() is not None:
            raise SystemExit(f"lsllama serve exited with {process.returncode}")
        if time.monotonic() > deadline:
            process.kill()
            raise SystemExit("lsllama serve did not come up within 10 minutes")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200:
                return process
        except httpx.TransportError:
            time.sleep(0.5)


async def load(url: str, texts: list[str], requests: int, concurrency: int) -> dict:
    """`concurrency` clients in a closed loop: each sends its next request when the last is answered."""
    latencies: list[float] = []
    failures = 0
    order = iter(range(requests))

    async def client_loop(client: httpx.AsyncClient) -> None:
        nonlocal failures
        for i in order:
            start = time.perf_counter()
            answer = await client.post("/predict", json={"inputs": texts[i % len(texts)]})
            latencies.append(time.perf_counter() - start)
            failures += answer.status_code != 200

    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=600) as client:
        start = time.perf_counter()
        await asyncio.gather(*(client_loop(client) for _ in range(concurrency)))
        seconds = time.perf_counter() - start
    ms = np.array(latencies) * 1000
    return {
        "requests": requests,
        "failures": failures,
        "seconds": seconds,
        "requests_per_s": requests / seconds,
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
    }


def measure(run: Path, options: list[str], texts: list[str], args: argparse.Namespace) -> dict:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = start_server(run, port, options)
    try:
        asyncio.run(load(url, texts[::-1], args.warmup, args.concurrency))  # allocator, kernels, connections
        before = httpx.get(f"{url}/health").json()
        result = asyncio.run(load(url, texts, args.requests, args.concurrency))
        after = httpx.get(f"{url}/health").json()
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=120)
    result["mean_batch"] = (after["texts"] - before["texts"]) / max(1, after["batches"] - before["batches"])
    result["server_options"] = " ".join(options)
    return result


def main(argv: list[str]) -> None:
    parser = record.parser(__name__, __doc__)
    parser.add_argument("--run", type=Path, help="a trained run or export folder (default: a cached quick run)")
    parser.add_argument("--requests", type=int, default=400, help="measured requests per setting")
    parser.add_argument("--concurrency", type=int, default=32, help="clients sending at the same time")
    parser.add_argument("--warmup", type=int, default=64, help="requests before measuring")
    parser.add_argument("--max-batch-size", type=int, default=32, help="the batched setting's batch limit")
    parser.add_argument("--max-wait-ms", type=float, default=5.0, help="the batched setting's wait window")
    args = parser.parse_args(argv)
    started = record.Record.start(__name__, argv)
    run = args.run or default_run()
    texts = sst2_texts()
    settings = {
        "batched": ["--max-batch-size", str(args.max_batch_size), "--max-wait-ms", str(args.max_wait_ms)],
        "unbatched": ["--max-batch-size", "1"],
    }
    results = {name: measure(run, options, texts, args) for name, options in settings.items()}
    repo = record.BENCHMARKS.parent
    summary = {
        "batched_requests_per_s": results["batched"]["requests_per_s"],
        "unbatched_requests_per_s": results["unbatched"]["requests_per_s"],
        "speedup": results["batched"]["requests_per_s"] / results["unbatched"]["requests_per_s"],
        "batched_p50_ms": results["batched"]["p50_ms"],
        "batched_p99_ms": results["batched"]["p99_ms"],
        "unbatched_p50_ms": results["unbatched"]["p50_ms"],
        "unbatched_p99_ms": results["unbatched"]["p99_ms"],
        "failures": results["batched"]["failures"] + results["unbatched"]["failures"],
        "run": str(run.resolve().relative_to(repo)) if run.resolve().is_relative_to(repo) else str(run),
        "requests": args.requests,
        "concurrency": args.concurrency,
        "settings": results,
    }
    started.write("serve", summary, markdown(summary, started), args.out)


def markdown(s: dict, started: record.Record) -> str:
    lines = [
        started.header(
            f"run `{s['run']}`; {s['requests']} one-text requests per setting from {s['concurrency']} concurrent "
            "clients (SST-2 validation sentences)."
        ),
        "",
        "| setting | server options | requests/s | p50 latency (ms) | p99 latency (ms) | mean batch | failures |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, r in s["settings"].items():
        lines.append(
            f"| {name} | `{r['server_options']}` | {r['requests_per_s']:.1f} | {r['p50_ms']:.0f} | {r['p99_ms']:.0f} "
            f"| {r['mean_batch']:.1f} | {r['failures']} |"
        )
    return "\n".join(lines) + "\n"
