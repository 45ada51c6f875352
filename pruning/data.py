"""Text data for calibration, fitness and reported perplexity.

WikiText-2 raw: the *validation* split feeds calibration and search fitness; the *test* split is
only for reported perplexity. The two are separate functions so they cannot be mixed by a flag.
Protocol (GPTQ / SparseGPT / Wanda): rows joined with "\n\n", tokenized once, cut into
non-overlapping windows.

Where the text comes from, in order: --data-dir, $SELF_PRUNER_DATA_DIR, the copy of WikiText-2
raw bundled with this package (CC BY-SA 3.0, byte-identical to the official files), the hub.
"""
from __future__ import annotations

import ctypes

import gzip
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

BUNDLED = Path(__file__).parent / "bundled_data"
DATA_ENV = "SELF_PRUNER_DATA_DIR"
WIKITEXT_FILES = {"validation": "wiki.valid.raw", "test": "wiki.test.raw"}
C4_FILE = "c4/c4_validation_2k.jsonl"


class DataUnavailableError(FileNotFoundError):
    """One-line message naming every place that was tried and how to provide the data."""


def data_roots(data_dir: str | Path | None) -> list[Path]:
    roots = []
    if data_dir:
        root = Path(data_dir).expanduser()
        if not root.is_dir():
            raise DataUnavailableError(f"--data-dir {data_dir} is not a directory")
        roots.append(root)
    if os.environ.get(DATA_ENV):
        roots.append(Path(os.environ[DATA_ENV]).expanduser())
    return roots


def _wikitext_rows(raw: str) -> list[str]:
    """Rows of HF `wikitext-2-raw-v1` from the original file (see shared/data/SOURCES.md)."""
    return [line if line.strip() else "" for line in raw.splitlines(keepends=True)]


def wikitext2_text(split: str, data_dir: str | Path | None = None) -> str:
    """The split's rows joined with "\\n\\n" (the standard perplexity protocol)."""
    if split not in WIKITEXT_FILES:
        raise ValueError(f"WikiText-2 split must be one of {sorted(WIKITEXT_FILES)}, not {split!r}")
    name = WIKITEXT_FILES[split]
    tried = []
    for root in data_roots(data_dir):
        path = root / "wikitext-2-raw" / name
        tried.append(str(path))
        if path.exists():
            return "\n\n".join(_wikitext_rows(path.read_text(encoding="utf-8")))
    bundled = BUNDLED / "wikitext-2-raw" / (name + ".gz")
    tried.append(str(bundled))
    if bundled.exists():
        with gzip.open(bundled, "rt", encoding="utf-8") as handle:
            return "\n\n".join(_wikitext_rows(handle.read()))
    rows = _hub_rows("wikitext", "wikitext-2-raw-v1", split, "text", tried)
    return "\n\n".join(rows)


def c4_text(data_dir: str | Path | None = None, max_documents: int | None = None) -> str:
    tried = []
    for root in data_roots(data_dir):
        path = root / C4_FILE
        tried.append(str(path))
        if path.exists():
            docs = []
            with path.open(encoding="utf-8") as handle:
                for line in handle:
                    docs.append(json.loads(line)["text"])
                    if max_documents and len(docs) >= max_documents:
                        break
            return "\n\n".join(docs)
    rows = _hub_rows("allenai/c4", "en", "validation", "text", tried, streaming_limit=max_documents or 2000)
    return "\n\n".join(rows)


def _hub_rows(path, name, split, field, tried, streaming_limit=None) -> list[str]:
    try:
        from datasets import load_dataset

        if streaming_limit:
            stream = load_dataset(path, name, split=split, streaming=True)
            return [row[field] for _, row in zip(range(streaming_limit), stream)]
        return list(load_dataset(path, name, split=split)[field])
    except Exception as err:  # offline, missing package, gated: all mean "not available"
        raise DataUnavailableError(
            f"{path}/{name} {split} not found: tried {', '.join(tried) or 'no local folder'} and the hub "
            f"({type(err).__name__}). Pass --data-dir DIR (layout: wikitext-2-raw/, c4/) or set {DATA_ENV}"
        ) from err


def load_text(source: str, split: str, data_dir: str | Path | None = None) -> str:
    """Named text source: 'wikitext2', 'c4', or a path to a plain text file."""
    if source == "wikitext2":
        return wikitext2_text(split, data_dir)
    if source == "c4":
        return c4_text(data_dir)
    path = Path(source).expanduser()
    if path.is_file():
        return path.read_text(encoding="utf-8")
    raise DataUnavailableError(f"text source {source!r} is neither 'wikitext2', 'c4' nor a readable file")


@dataclass(frozen=True)
class TokenWindows:
    """Non-overlapping windows of one tokenized text: shape (n_windows, seqlen)."""

    input_ids: torch.Tensor
    source: str
    split: str

    @property
    def seqlen(self) -> int:
        return self.input_ids.shape[1]

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def head(self, n: int | None) -> "TokenWindows":
        if n is None or n >= len(self):
            return self
        return TokenWindows(self.input_ids[:n], self.source, self.split)

    def tail(self, n: int) -> "TokenWindows":
        """The last n windows (search fitness uses these; calibration samples the whole split)."""
        if n >= len(self):
            return self
        return TokenWindows(self.input_ids[-n:], self.source, self.split)

    def sample(self, n: int, seed: int = 0) -> "TokenWindows":
        """n windows drawn without replacement (calibration: spread over the split)."""
        if n >= len(self):
            return self
        generator = torch.Generator().manual_seed(seed)
        order = torch.randperm(len(self), generator=generator)[:n].sort().values
        return TokenWindows(self.input_ids[order], self.source, self.split)


def tokenize_windows(text: str, tokenizer, seqlen: int, source: str = "text", split: str = "") -> TokenWindows:
    if seqlen < 2:
        raise ValueError(f"sequence length must be at least 2, not {seqlen}")
    ids = tokenizer(text, return_tensors="pt", add_special_tokens=False).input_ids[0]
    bos = getattr(tokenizer, "window_bos_id", None)  # set by the loader for families that need it (Gemma)
    width = seqlen - (bos is not None)
    n = ids.numel() // width
    if n == 0:
        raise DataUnavailableError(f"{source} {split} has {ids.numel()} tokens, fewer than one window of {seqlen}")
    rows = ids[: n * width].view(n, width)
    if bos is not None:
        rows = torch.cat([torch.full((n, 1), bos, dtype=rows.dtype), rows], dim=1)
    windows = TokenWindows(rows.clone(), source, split)
    release_freed_memory()
    return windows


def release_freed_memory() -> None:
    """Hand memory freed by the tokenizer back to the OS. A one-call encoding of a whole split keeps
    per-token offsets and strings (0.16 GB for WikiText-2 validation at one token per byte) that
    glibc's allocator would otherwise keep, under the model's weights, for the rest of the run."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to do
        pass


def load_windows(source: str, split: str, tokenizer, seqlen: int, data_dir=None) -> TokenWindows:
    return tokenize_windows(load_text(source, split, data_dir), tokenizer, seqlen, source, split)
