"""What runs inside each Ray actor: an evaluator built once, then plans scored on request.

`FitnessWorker` is a plain class (Ray wraps it at start-up): it imports nothing of Ray's, so the
in-process path never needs Ray. `EvaluatorSpec` is what the coordinator sends each worker so that
its scores equal the coordinator's: the run's settings, the budget, the calibration statistics and
windows, and the validation pool the stages draw from (kilobytes to a few MB: never weights). The
worker loads the dense model itself (same source, dtype and placement rules, on the GPUs Ray gave
it) and makes the refit table along the same reference plan: read from the cache folder when it
shares the coordinator's disk, else by its own reference pass (the start-up check then says
whether it agrees).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable


class FitnessWorker:
    def __init__(self, build: Callable[[], object], threads: int = 1):
        import torch

        torch.set_num_threads(max(1, threads))  # one actor per CPU share: no oversubscription
        built = build()
        # the stages' evaluator, and the judge's (fixed windows) when the build makes one
        self.evaluators = built if isinstance(built, dict) else {"stages": built}

    def info(self) -> dict:
        import socket

        import torch

        facts = {"pid": os.getpid(), "host": socket.gethostname(), "threads": torch.get_num_threads(),
                 "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES", "")}
        if torch.cuda.is_available():
            facts["gpu"] = torch.cuda.get_device_name(0)
        return facts

    def evaluate(self, plan: list, generation: int, stage_index: int, stage, evaluator: str = "stages") -> tuple[float, float]:
        from pruning.genome import PruningPlan

        if evaluator == "judge":
            return self.evaluators["judge"].compute(PruningPlan.from_list(plan))
        return self.evaluators["stages"].compute(PruningPlan.from_list(plan), generation, stage_index, stage)


@dataclass
class EvaluatorSpec:
    config: dict  # RunConfig.to_dict()
    budget: object  # pruning.budget.Budget
    stats: dict  # ActivationStats.to_dict(): the coordinator's calibration statistics
    calibration: object  # TokenWindows: the calibration sample (the refit's reference pass reads it)
    pool: object  # TokenWindows: the validation windows the fidelity stages draw from
    seed: int  # the search's seed (the stages' draws)
    judge_windows: object = None  # TokenWindows: the fixed validation windows the champion is chosen on

    def __call__(self):
        """The worker's evaluator (runs inside the actor)."""
        import torch

        from assembly.config import RunConfig
        from evaluation.fidelity import SampledFitness
        from pruning.importance import ActivationStats
        from pruning.loading import load_model
        from pruning.prepare import prepare

        config = RunConfig.from_dict(self.config)
        # the GPUs Ray assigned (CUDA_VISIBLE_DEVICES), else the CPU; the coordinator's --device and
        # --max-memory name its own devices, not these
        device = "cuda" if torch.cuda.is_available() else "cpu"
        loaded = load_model(config.model, dtype=config.dtype, device=device, random_weights=config.random_weights,
                            seed=config.seed)
        context, _ = prepare(loaded.model, loaded.tokenizer, config.prune_settings(), calibration=self.calibration,
                             stats=ActivationStats.from_dict(self.stats))
        context.prepare_for(self.budget)
        evaluators = {"stages": SampledFitness(context, self.pool, kind=config.fitness, batch_size=config.batch_size,
                                               seed=self.seed)}
        if self.judge_windows is not None:
            from assembly.build import final_fitness

            evaluators["judge"] = final_fitness(config, context, self.judge_windows)
        return evaluators
