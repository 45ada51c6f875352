"""llama.cpp in this process (llama-cpp-python): perplexity, greedy tokens, speed, quantization.

Used to check an exported GGUF against the transformers checkpoint it came from, and to measure
what a user of llama.cpp (or Ollama, LM Studio: the same engine) gets. The bindings compile
llama.cpp for this machine when installed (its CPU's vector units included), so the numbers are
llama.cpp's own.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

QUANT_TYPES = ("f16", "bf16", "q8_0", "q4_k_m")  # f16/bf16 are written directly; the others by llama.cpp


class LlamaCppError(RuntimeError):
    pass


def _bindings():
    try:
        import llama_cpp
    except ImportError as err:  # a clear line instead of a traceback
        raise LlamaCppError("llama.cpp bindings missing: pip install llama-cpp-python (see README, Serving)") from err
    return llama_cpp


def default_threads() -> int:
    return max(1, min(8, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1))


def quantize(source: str | Path, out: str | Path, quant: str, threads: int | None = None) -> Path:
    """llama.cpp's own quantizer (what `llama-quantize` runs): `source` f16/bf16/f32 GGUF -> `out`."""
    lib = _bindings()
    ftypes = {"q8_0": lib.LLAMA_FTYPE_MOSTLY_Q8_0, "q4_k_m": lib.LLAMA_FTYPE_MOSTLY_Q4_K_M,
              "f16": lib.LLAMA_FTYPE_MOSTLY_F16, "bf16": lib.LLAMA_FTYPE_MOSTLY_BF16}
    if quant not in ftypes:
        raise LlamaCppError(f"quantization must be one of {', '.join(QUANT_TYPES)}, not {quant!r}")
    params = lib.llama_model_quantize_default_params()
    params.ftype = ftypes[quant]
    params.nthread = threads or default_threads()
    out = Path(out)
    tmp = out.with_name(out.name + ".part")
    with quiet_llama():
        rc = lib.llama_model_quantize(str(source).encode(), str(tmp).encode(), params)
    if rc != 0:
        tmp.unlink(missing_ok=True)
        raise LlamaCppError(f"llama.cpp could not quantize {source} to {quant} (code {rc})")
    tmp.replace(out)
    return out


class quiet_llama:
    """Silence llama.cpp's C-level logging to stderr for a block (it prints every tensor)."""

    def __enter__(self):
        self._saved = os.dup(2)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)
        return self

    def __exit__(self, *exc):
        os.dup2(self._saved, 2)
        os.close(self._saved)


@dataclass(frozen=True)
class SpeedResult:
    prompt_tokens: int
    prompt_tokens_per_s: float
    decode_tokens: int
    decode_tokens_per_s: float
    threads: int


class LlamaCppModel:
    """One GGUF loaded in llama.cpp, with a context of `n_ctx` tokens."""

    def __init__(self, gguf: str | Path, n_ctx: int = 512, threads: int | None = None, logits_all: bool = True,
                 gpu_layers: int = 0):
        lib = _bindings()
        path = Path(gguf)
        if not path.is_file():
            raise LlamaCppError(f"{gguf} is not a file")
        self.path = path
        self.threads = threads or default_threads()
        with quiet_llama():
            try:
                self.llm = lib.Llama(model_path=str(path), n_ctx=n_ctx, n_batch=n_ctx, n_ubatch=n_ctx,
                                     n_threads=self.threads, n_threads_batch=self.threads, logits_all=logits_all,
                                     n_gpu_layers=gpu_layers, verbose=False)
            except ValueError as err:
                raise LlamaCppError(f"llama.cpp could not load {path.name}: {err}") from err
        self.n_ctx = n_ctx
        self.n_vocab = self.llm.n_vocab()

    def tokenize(self, text: str) -> list[int]:
        return self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=False)

    def logits(self, ids: list[int]) -> np.ndarray:
        """Logits at every position of `ids` (len <= n_ctx), float32 [len, vocab]."""
        if len(ids) > self.n_ctx:
            raise LlamaCppError(f"{len(ids)} tokens exceed the context of {self.n_ctx}")
        self.llm.reset()
        self.llm.eval(ids)
        return np.array(self.llm.scores[: len(ids)], dtype=np.float32)

    def window_scores(self, ids: list[int]) -> tuple[float, int, np.ndarray]:
        """For one window: summed negative log-likelihood of tokens 1..n given their prefixes, its
        count, and the greedy (argmax) token after every prefix."""
        logits = self.logits(ids)
        greedy = logits.argmax(axis=1)
        logits = logits[:-1].astype(np.float64)
        targets = np.asarray(ids[1:])
        top = logits.max(axis=1, keepdims=True)
        log_norm = np.log(np.exp(logits - top).sum(axis=1)) + top[:, 0]
        nll = log_norm - logits[np.arange(len(targets)), targets]
        return float(nll.sum()), len(targets), greedy

    def perplexity(self, windows: list[list[int]], progress=None) -> float:
        total, count = 0.0, 0
        for k, window in enumerate(windows):
            nll, n, _ = self.window_scores(window)
            total += nll
            count += n
            if progress:
                progress(k + 1, len(windows))
        return math.exp(total / count)

    def as_tokenizer(self):
        """llama.cpp's tokenizer in the calling form of a Hugging Face one, so that
        `pruning.data.tokenize_windows` cuts the windows exactly as it does for checkpoints."""
        def encode(text, return_tensors=None, add_special_tokens=False):
            return SimpleNamespace(input_ids=torch.tensor([self.tokenize(text)]))

        return encode

    def speed(self, prompt: list[int], decode_tokens: int = 64, repeats: int = 3) -> SpeedResult:
        """Prompt processing and greedy decoding throughput, best of `repeats` (after one warm-up).
        Needs a model opened with logits_all=False: then llama.cpp computes logits only for the
        last position, as a server does."""
        lib = _bindings()
        prompt = prompt[: self.n_ctx - decode_tokens]

        def next_token() -> int:
            return int(np.argmax(np.ctypeslib.as_array(lib.llama_get_logits_ith(self.llm.ctx, -1), shape=(self.n_vocab,))))

        best_prompt, best_decode = math.inf, math.inf
        for r in range(repeats + 1):
            self.llm.reset()
            start = time.perf_counter()
            self.llm.eval(prompt)
            token = next_token()
            prompt_s = time.perf_counter() - start
            start = time.perf_counter()
            for _ in range(decode_tokens):
                self.llm.eval([token])
                token = next_token()
            decode_s = time.perf_counter() - start
            if r:  # the first round warms caches and the thread pool
                best_prompt, best_decode = min(best_prompt, prompt_s), min(best_decode, decode_s)
        return SpeedResult(len(prompt), len(prompt) / best_prompt, decode_tokens, decode_tokens / best_decode, self.threads)

    def bench(self, tokens: list[int], pp: int = 512, tg: int = 128, repeats: int = 3) -> dict:
        """llama-bench's two numbers, from an empty context each: `pp<pp>`, tokens/s processing a
        prompt of `pp` tokens, and `tg<tg>`, tokens/s generating `tg` tokens one at a time (best of
        `repeats` after a warm-up; needs n_ctx >= pp + 1 and a model opened with logits_all=False)."""
        if len(tokens) < pp:
            raise ValueError(f"pp{pp} needs a prompt of {pp} tokens, got {len(tokens)}")
        if self.n_ctx < max(pp, tg) + 1:
            raise ValueError(f"pp{pp} / tg{tg} need a context of {max(pp, tg) + 1} tokens, this one has {self.n_ctx}")
        prompt = self.speed(tokens[:pp], decode_tokens=1, repeats=repeats)
        generate = self.speed(tokens[:1], decode_tokens=tg, repeats=repeats)
        return {f"pp{pp}": prompt.prompt_tokens_per_s, f"tg{tg}": generate.decode_tokens_per_s, "threads": self.threads}

    def close(self) -> None:
        llm, self.llm = getattr(self, "llm", None), None
        if llm is not None:
            llm.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
