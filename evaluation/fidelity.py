"""Multi-fidelity fitness: many candidates on few tokens, the survivors on more, each stage on a
fresh random sample of the validation split (EvoPress's multi-step selection).

A stage is `windows x seqlen` tokens drawn for one (generation, stage) from a pool of validation
windows; every candidate of that stage is scored on the same draw, so their scores compare, and
the next generation draws anew, so no plan is fitted to one sample. Fitness is the mean per-token
KL divergence from the dense model (default) or perplexity. For KL the dense model's top-K
log-probabilities of each drawn window are computed once and kept (K=128: 0.5 KB per token,
whatever the vocabulary); the rest of the distribution is one "other" bucket, so the score is the
KL between the two distributions coarsened to K+1 outcomes (a lower bound of the full KL, equal
to it where the dense model puts its mass on its top K).

Scores are cached per (plan, stage sample) in memory and in the run database (kind
`kl:2x256:g3s1:seed0`), so a resumed search never scores a plan twice on the same draw. A stage's
uncached plans are scored here one after another or, given an `executor`, on its workers
(`compute` is what a worker runs; the coordinator keeps the cache and the records).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from evaluation.jobs import Job, Outcome, evaluate_plans
from evaluation.logits import next_token_logits
from pruning.context import PruningContext
from pruning.data import TokenWindows
from pruning.genome import PruningPlan
from pruning.perplexity import lm_head_chunk

KINDS = ("kl", "ppl")
TOP_K = 128


@dataclass(frozen=True)
class Stage:
    windows: int
    seqlen: int
    keep: int  # candidates promoted to the next stage (the last stage: survivors ranked)

    @property
    def tokens(self) -> int:
        return self.windows * self.seqlen

    def label(self) -> str:
        return f"{self.windows}x{self.seqlen}"


def parse_stages(text: str) -> tuple[Stage, ...]:
    """'1x256:8,4x512:2' -> stages (windows x seqlen : kept). The last stage's kept count is how
    many of its candidates are ranked for the population."""
    stages = []
    for part in str(text).split(","):
        part = part.strip()
        try:
            size, keep = part.split(":")
            windows, seqlen = size.lower().split("x")
            stage = Stage(int(windows), int(seqlen), int(keep))
        except ValueError:
            raise ValueError(f"--fidelity {text!r}: write stages as WINDOWSxSEQLEN:KEPT, comma-separated, "
                             f"e.g. 1x256:8,4x512:2") from None
        if stage.windows < 1 or stage.seqlen < 2 or stage.keep < 1:
            raise ValueError(f"--fidelity {part!r}: windows, keep >= 1 and seqlen >= 2")
        stages.append(stage)
    if not stages:
        raise ValueError("--fidelity needs at least one stage")
    for a, b in zip(stages, stages[1:]):
        if b.tokens < a.tokens:
            raise ValueError(f"--fidelity {text!r}: later stages must score on at least as many tokens")
    return tuple(stages)


@dataclass
class Scored:
    value: float
    seconds: float
    cached: bool


class SampledFitness:
    """Scores plans on drawn samples of `pool` (validation windows of the pool's length)."""

    def __init__(self, context: PruningContext, pool: TokenWindows, kind: str = "kl", store=None,
                 batch_size: int = 4, seed: int = 0, top_k: int = TOP_K):
        if kind not in KINDS:
            raise ValueError(f"--fitness must be one of {', '.join(KINDS)}, not {kind!r}")
        self.context, self.pool, self.kind, self.store = context, pool, kind, store
        self.batch_size, self.seed, self.top_k = batch_size, seed, top_k
        self.chunk_tokens = lm_head_chunk(context.model.config.vocab_size)
        self.memory: dict[tuple[str, str], float] = {}
        self._dense: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = {}  # (window, seqlen) -> top-K
        self.evaluations = 0
        self.tokens_scored = 0
        self.seconds = 0.0
        self.executor = None  # None: scored in this process; else e.g. distributed.ray_pool.RayEvaluatorPool

    def known_keys(self) -> set[str]:
        """Every plan scored so far, at any stage (by this process or, through the run database, before a resume)."""
        keys = {key for key, _ in self.memory}
        if self.store is not None:
            keys |= self.store.scored_keys(f"{self.kind}:")
        return keys

    # -- samples -----------------------------------------------------------------------------
    def draw(self, generation: int, stage_index: int, stage: Stage) -> list[int]:
        """Pool windows of one (generation, stage): fresh per generation and per stage, the same
        on every resume."""
        generator = torch.Generator().manual_seed(hash_seed(self.seed, generation, stage_index))
        n = min(stage.windows, len(self.pool))
        return torch.randperm(len(self.pool), generator=generator)[:n].sort().values.tolist()

    def sample_kind(self, generation: int, stage_index: int, stage: Stage) -> str:
        return f"{self.kind}:{stage.label()}:g{generation}s{stage_index}:seed{self.seed}"

    # -- scoring -----------------------------------------------------------------------------
    def score(self, plan: PruningPlan, generation: int, stage_index: int, stage: Stage) -> Scored:
        return self.score_many([plan], generation, stage_index, stage)[0]

    def score_many(self, plans: list[PruningPlan], generation: int, stage_index: int, stage: Stage,
                   on_scored: Callable[[int, Scored], None] | None = None) -> list[Scored]:
        """These plans' scores on one (generation, stage) sample, in their order. Known ones come from
        memory or the run database; the others are computed here, one after another, or with an
        `executor` (distributed/ray_pool.py) on its workers, recorded as each arrives.
        on_scored(done, scored): called as each score is known."""
        kind = self.sample_kind(generation, stage_index, stage)
        tokens = min(stage.windows, len(self.pool)) * stage.seqlen
        return evaluate_plans(
            plans, known=lambda key: self._known(key, kind),
            job=lambda index, plan: Job(index, plan.key(), kind, plan.to_list(), generation, stage_index, stage),
            compute=lambda job: self.compute(PruningPlan.from_list(job.plan), generation, stage_index, stage),
            record=lambda job, outcome: self._record(job.key, kind, outcome, tokens), result=Scored,
            executor=self.executor, on_scored=on_scored)

    def _known(self, key: str, kind: str) -> float | None:
        if (key, kind) in self.memory:
            return self.memory[(key, kind)]
        if self.store is not None:
            value = self.store.cached(key, kind)
            if value is not None:
                self.memory[(key, kind)] = value
                return value
        return None

    def _record(self, key: str, kind: str, outcome: Outcome, tokens: int) -> None:
        self.memory[(key, kind)] = outcome.value
        self.evaluations += 1
        self.tokens_scored += tokens
        self.seconds += outcome.seconds
        if self.store is not None:
            metrics = {"kind": self.kind, "tokens": tokens} | ({"failed": outcome.failed} if outcome.failed else {})
            self.store.record_evaluation(key, kind, outcome.value, metrics, outcome.seconds, worker=outcome.worker)

    def compute(self, plan: PruningPlan, generation: int, stage_index: int, stage: Stage) -> tuple[float, float]:
        """One plan's score on one (generation, stage) sample, uncached: (value, seconds). What a
        worker runs; the same in every process that holds the same model, statistics and pool."""
        windows = self.draw(generation, stage_index, stage)
        ids = self.pool.input_ids[windows, : stage.seqlen]
        started = time.perf_counter()
        if self.kind == "kl":
            dense = self._dense_top_k(windows, stage.seqlen, ids)
        with self.context.masked(plan) as model:
            value = self._kl(model, ids, dense) if self.kind == "kl" else self._ppl(model, ids)
        return value, time.perf_counter() - started

    def _logits(self, model, ids: torch.Tensor):
        """Next-token logits in chunks: (rows of hidden states, targets) per chunk, fp32."""
        return next_token_logits(model, ids, self.batch_size, self.chunk_tokens)

    def _ppl(self, model, ids: torch.Tensor) -> float:
        nll, count = 0.0, 0
        for logits, targets in self._logits(model, ids):
            nll += F.cross_entropy(logits, targets, reduction="sum").item()
            count += targets.numel()
        return math.exp(nll / count) if math.isfinite(nll) else float("inf")

    @torch.inference_mode()
    def _dense_top_k(self, windows: list[int], seqlen: int, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The dense model's top-K log-probs (and their token ids) for these windows, in row order."""
        missing = [k for k, w in enumerate(windows) if (w, seqlen) not in self._dense]
        if missing:
            rows = ids[missing]
            values, indices = [], []
            for logits, _ in self._logits(self.context.model, rows):
                top = F.log_softmax(logits, -1).topk(self.top_k, dim=-1)
                values.append(top.values.cpu())
                indices.append(top.indices.cpu())
            values, indices = torch.cat(values), torch.cat(indices)
            per = seqlen - 1
            for n, k in enumerate(missing):
                self._dense[(windows[k], seqlen)] = (values[n * per : (n + 1) * per], indices[n * per : (n + 1) * per])
        parts = [self._dense[(w, seqlen)] for w in windows]
        return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])

    def _kl(self, model, ids: torch.Tensor, dense: tuple[torch.Tensor, torch.Tensor]) -> float:
        dense_logp, dense_ids = dense
        total, start = 0.0, 0
        for logits, _ in self._logits(model, ids):
            rows = logits.shape[0]
            p_log = dense_logp[start : start + rows].to(logits.device)
            q_log = F.log_softmax(logits, -1).gather(1, dense_ids[start : start + rows].to(logits.device))
            start += rows
            total += coarse_kl(p_log, q_log).sum().item()
        return total / start


def coarse_kl(p_log: torch.Tensor, q_log: torch.Tensor) -> torch.Tensor:
    """Per row KL(p || q) over the K listed outcomes plus one bucket for the rest of each distribution."""
    p = p_log.exp()
    top = (p * (p_log - q_log)).sum(-1)
    p_rest = (1 - p.sum(-1)).clamp_min(1e-12)
    q_rest = (1 - q_log.exp().sum(-1)).clamp_min(1e-12)
    return top + p_rest * (p_rest.log() - q_rest.log())


def hash_seed(*parts: int) -> int:
    value = 0
    for part in parts:
        value = (value * 1_000_003 + int(part) + 1) % (2**61 - 1)
    return value
