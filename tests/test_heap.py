"""Resident memory: freed tensor memory goes back to the system (lsllama.heap, glibc); training loads no
library it does not use."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

# In a fresh process: in a long-lived one the heap's earlier holes decide where blocks land.
SCRIPT = """
import json, os, torch
from lsllama.heap import release_free_heap_pages, tune_process_heap

def rss_mb():
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

assert not release_free_heap_pages()  # a library alone leaves the heap as it is
assert tune_process_heap()
blocks, pins = [], []
for _ in range(400):  # 400 KB blocks (heap, below the mmap threshold), each followed by a live 8 KB pin
    blocks.append(torch.ones(100_000))
    pins.append(torch.ones(2_000))  # keeps the freed blocks inside the heap, away from its top
before = rss_mb()
del blocks
after_free = rss_mb()
released = release_free_heap_pages()
print(json.dumps({"freed": before - after_free, "released": released, "trimmed": after_free - rss_mb()}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's heap")
def test_free_pages_inside_the_heap_are_released():
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["freed"] < 10  # freeing alone keeps those pages: glibc only trims the heap's top
    assert result["released"] and result["trimmed"] > 100  # ~160 MB handed back


def test_training_and_prediction_imports_leave_the_metric_libraries_out():
    """scikit-learn (also behind seqeval) loads when scores are computed: libraries imported at start-up stay
    resident through every training step and add to its peak."""
    script = (
        "import sys, lsllama.api, lsllama.cli, lsllama.training.loop, lsllama.evaluation.evaluate\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'sklearn', 'seqeval', 'pandas', 'matplotlib'}))"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "[]"


def test_building_a_model_leaves_the_process_allocator_alone_and_the_cli_tunes_it():
    """A notebook or server that loads a model keeps its allocator: only the CLI (an application) tunes it."""
    script = (
        "import torch, lsllama.heap as heap\n"
        "asked = []\n"
        "real = heap._libc_function\n"
        "heap._libc_function = lambda name: asked.append(name) or real(name)\n"
        "from lsllama.config import ModelConfig\n"
        "from lsllama.modeling.loading import load_tokenizer\n"
        "from lsllama.modeling.model import build_model\n"
        "tokenizer = load_tokenizer('tiny-random')\n"
        "build_model(ModelConfig(name='tiny-random'), 'sequence', 2, tokenizer, torch.device('cpu'))\n"
        "print(asked)\n"
        "from typer.testing import CliRunner\n"
        "from lsllama.cli import app\n"
        "CliRunner().invoke(app, ['train', '--help'])\n"
        "print(asked)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    library, cli = proc.stdout.strip().splitlines()[-2:]
    assert library == "[]"
    assert cli == "['mallopt']"


def test_building_a_model_warns_nothing_and_leaves_the_warning_filters_as_they_were(tokenizer):
    import warnings

    import torch

    from lsllama.config import ModelConfig
    from lsllama.modeling.model import build_model

    before = list(warnings.filters)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        inside = list(warnings.filters)
        build_model(ModelConfig(name="tiny-random", precision="fp32"), "sequence", 2, tokenizer, torch.device("cpu"))
        assert warnings.filters == inside
    assert not [w for w in caught if issubclass(w.category, FutureWarning)]
    assert warnings.filters == before
