"""Fitness of a pruning plan: perplexity (default) or KL divergence to the dense model, on
WikiText-2 *validation* windows (never the test split, which is for reporting).

Cached by plan key in memory and in the run database, so a resumed search never evaluates a
plan twice. A plan is applied as masks on the dense model (no weight copies, dense speed) or by
surgery (a smaller model: faster forward, pays the copy). `mode="auto"` picks per plan: measured
on the embedded model (BENCHMARKS.md), masks win at rate 0.2 (1.02x a dense forward vs 1.09x
sliced) and surgery wins at rate 0.5 (0.84x vs 1.14x), so plans removing at least
`SLICE_ABOVE` of the block parameters are sliced, unless CUDA memory is too short for the copy.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from evaluation.jobs import Job, Outcome, evaluate_plans
from pruning.adapter import DecoderAdapter
from pruning.context import PruningContext
from pruning.data import TokenWindows
from pruning.genome import PruningPlan
from pruning.perplexity import lm_head_chunk
from pruning.placement import available_ram, input_device, is_dispatched

FITNESS_KINDS = ("ppl", "kl")
MODES = ("auto", "masked", "sliced")
SLICE_ABOVE = 0.3


@dataclass
class FitnessResult:
    value: float
    seconds: float
    cached: bool


class FitnessEvaluator:
    def __init__(self, context: PruningContext, windows: TokenWindows, kind: str = "ppl", mode: str = "auto",
                 store=None, batch_size: int = 4, chunk_tokens: int | None = None):
        if kind not in FITNESS_KINDS:
            raise ValueError(f"--fitness must be one of {', '.join(FITNESS_KINDS)}, not {kind!r}")
        if mode not in MODES:
            raise ValueError(f"fitness mode must be one of {MODES}")
        self.context, self.windows, self.kind, self.mode = context, windows, kind, mode
        self.store, self.batch_size = store, batch_size
        self.chunk_tokens = chunk_tokens or lm_head_chunk(context.model.config.vocab_size)
        self.memory: dict[str, float] = {}
        self.evaluations = 0  # real (uncached) evaluations made for this process (here or on its workers)
        self.executor = None  # None: computed here; else e.g. distributed.ray_pool.RayEvaluatorPool
        self._dense_logprobs: list[torch.Tensor] | None = None

    @property
    def cache_kind(self) -> str:
        return f"fitness:{self.kind}:{len(self.windows)}x{self.windows.seqlen}"

    def cached(self, plan: PruningPlan) -> float | None:
        return self._cached_key(plan.key())

    def _cached_key(self, key: str) -> float | None:
        if key in self.memory:
            return self.memory[key]
        if self.store is not None:
            value = self.store.cached(key, self.cache_kind)
            if value is not None:
                self.memory[key] = value
                return value
        return None

    def evaluate(self, plan: PruningPlan) -> FitnessResult:
        return self.evaluate_many([plan])[0]

    def evaluate_many(self, plans: list[PruningPlan],
                      on_scored: Callable[[int, FitnessResult], None] | None = None) -> list[FitnessResult]:
        """These plans' fitness, in their order: known ones from the cache, the others computed here or,
        with an `executor` (distributed/ray_pool.py), on its workers. on_scored(done, result) as each is known."""
        if self.executor is not None:
            self.ensure_reference()  # this process states finished models' fitness later (finalize)
        return evaluate_plans(
            plans, known=self._cached_key,
            job=lambda index, plan: Job(index, plan.key(), self.cache_kind, plan.to_list(), 0, 0, None,
                                        evaluator="judge"),
            compute=lambda job: self.compute(PruningPlan.from_list(job.plan)), record=self._record,
            result=FitnessResult, executor=self.executor, on_scored=on_scored)

    def _record(self, job: Job, outcome: Outcome) -> None:
        self.memory[job.key] = outcome.value
        self.evaluations += 1
        if self.store is not None:
            metrics = {"kind": self.kind} | ({"failed": outcome.failed} if outcome.failed else {})
            self.store.record_evaluation(job.key, self.cache_kind, outcome.value, metrics, outcome.seconds,
                                         worker=outcome.worker)

    def compute(self, plan: PruningPlan) -> tuple[float, float]:
        """One plan's fitness, uncached: (value, seconds). What a worker runs."""
        start = time.perf_counter()
        if self.kind == "kl":
            self._ensure_dense_logprobs()  # before any mask goes on: the model object is shared
        if self.sliced(plan):
            model = self.context.prune(plan)
            value = self._score(model)
            del model
        else:
            with self.context.masked(plan) as model:
                value = self._score(model)
        return value, time.perf_counter() - start

    def sliced(self, plan: PruningPlan) -> bool:
        if self.mode != "auto":
            return self.mode == "sliced"
        space = self.context.space
        removed = 1.0 - space.block_params(plan) / space.shape.block_params()
        return removed >= SLICE_ABOVE and pruned_copy_fits(self.context, plan)

    def ensure_reference(self) -> None:
        """KL needs the dense model's log-probs: make them while the dense model still exists."""
        if self.kind == "kl":
            self._ensure_dense_logprobs()

    def score(self, model) -> float:
        """This fitness of any model on these windows (e.g. the finalized one), uncached."""
        if self.kind == "kl" and self._dense_logprobs is None:
            raise RuntimeError("KL fitness of a finished model needs ensure_reference() while the model is dense")
        return self._score(model)

    # -- scoring ---------------------------------------------------------------------------
    @torch.inference_mode()
    def _hidden_batches(self, model):
        adapter = DecoderAdapter(model)
        device = input_device(model)
        ids = self.windows.input_ids
        for start in range(0, ids.shape[0], self.batch_size):
            batch = ids[start : start + self.batch_size].to(device)
            hidden = adapter.decoder(input_ids=batch, use_cache=False).last_hidden_state
            yield batch, hidden[:, :-1].reshape(-1, hidden.shape[-1]), adapter.lm_head()

    @torch.inference_mode()
    def _score(self, model) -> float:
        if self.kind == "ppl":
            nll, count = 0.0, 0
            for batch, hidden, head in self._hidden_batches(model):
                targets = batch[:, 1:].reshape(-1)
                for s in range(0, hidden.shape[0], self.chunk_tokens):
                    logits = head(hidden[s : s + self.chunk_tokens]).float()
                    # the LM head may sit on another device than the embeddings (several GPUs)
                    chunk = targets[s : s + self.chunk_tokens].to(logits.device)
                    nll += F.cross_entropy(logits, chunk, reduction="sum").item()
                count += targets.numel()
            return math.exp(nll / count) if math.isfinite(nll) else float("inf")
        return self._kl(model)

    @torch.inference_mode()
    def _ensure_dense_logprobs(self) -> None:
        """Dense next-token log-probs of the fitness windows, computed once, kept in bf16."""
        if self._dense_logprobs is None:
            self._dense_logprobs = []
            for _, hidden, head in self._hidden_batches(self.context.model):
                for s in range(0, hidden.shape[0], self.chunk_tokens):
                    self._dense_logprobs.append(F.log_softmax(head(hidden[s : s + self.chunk_tokens]).float(), -1)
                                                .to(torch.bfloat16).cpu())

    def _kl(self, model) -> float:
        """Mean per-token KL(dense || pruned)."""
        total, count, i = 0.0, 0, 0
        for _, hidden, head in self._hidden_batches(model):
            for s in range(0, hidden.shape[0], self.chunk_tokens):
                pruned = F.log_softmax(head(hidden[s : s + self.chunk_tokens]).float(), -1)
                dense = self._dense_logprobs[i].to(pruned.device).float()
                total += F.kl_div(pruned, dense, log_target=True, reduction="sum").item()
                count += pruned.shape[0]
                i += 1
        return total / count


def pruned_copy_fits(context: PruningContext, plan: PruningPlan) -> bool:
    """A physically pruned copy of the model fits beside the dense one, where the model computes (never
    for a model spread over devices or offloaded: the copy would not fit where it does)."""
    model = context.model
    if is_dispatched(model):
        return False
    device = input_device(model)
    needed = context.space.total_params(plan) * next(model.parameters()).element_size()
    free = torch.cuda.mem_get_info(device)[0] if device.type == "cuda" else available_ram()
    return free > 1.2 * needed

