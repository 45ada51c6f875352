import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data_dir():
    """../shared/data when present (the dev and CI machines); the product falls back to bundled data."""
    return str(SHARED_DATA) if SHARED_DATA.is_dir() else None


@pytest.fixture(scope="session")
def embedded():
    """The embedded SmolLM2-135M in fp32 (converted once, then cached)."""
    from pruning.loading import load_model

    return load_model("smollm2-135m", dtype="float32", device="cpu")


@pytest.fixture
def cli(capsys, monkeypatch):
    """`main.main(argv)` in this process (no second interpreter importing torch and transformers):
    returns the exit code, stdout and stderr as a user would see them."""
    from types import SimpleNamespace

    import main
    from assembly import cpu_heap

    # --cpu-heap changes the whole process's allocator: tested in a child (test_cpu_heap.py), not here
    monkeypatch.setattr(cpu_heap, "fix_mmap_threshold", lambda *args, **kwargs: False)
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.chdir(REPO)

    def run(*args, env_extra=None):
        for key, value in (env_extra or {}).items():
            monkeypatch.setenv(key, value)
        capsys.readouterr()
        try:
            code = main.main([str(a) for a in args])
        except SystemExit as err:  # argparse's usage errors
            code = err.code
        captured = capsys.readouterr()
        return SimpleNamespace(returncode=code, stdout=captured.out, stderr=captured.err)

    return run
