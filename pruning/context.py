"""Everything needed to turn plans into pruned models for one (model, metric, space).

Built once per run (the calibration pass is the expensive part, and it is cached on disk); the
fitness evaluator and the final surgery both go through it.
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from pruning.adapter import DecoderAdapter
from pruning.data import TokenWindows
from pruning.genome import PruningPlan
from pruning.importance import (
    ActivationStats,
    ImportanceScores,
    compute_importance,
    load_or_collect_stats,
    stats_cache_key,
)
from pruning.masking import masked
from pruning.selection import LayerSelection, compensation_biases, select
from pruning.space import PruningSpace
from pruning.surgery import prune_in_place, prune_model


@dataclass
class PruningContext:
    model: object
    space: PruningSpace
    stats: ActivationStats
    scores: ImportanceScores
    seconds: dict = field(default_factory=dict)  # {"statistics": .., "importance": ..}: where preparing went

    @property
    def adapter(self) -> DecoderAdapter:
        return DecoderAdapter(self.model)

    def selections(self, plan: PruningPlan) -> list[LayerSelection]:
        return select(plan, self.scores, self.space)

    def biases(self, selections: list[LayerSelection]):
        if not self.space.bias_compensation:
            return None
        return compensation_biases(self.model, selections, self.scores, self.adapter.head_dim)

    @contextmanager
    def masked(self, plan: PruningPlan):
        """The dense model behaving as if pruned by `plan` (no copies)."""
        selections = self.selections(plan)
        with masked(self.model, selections, self.biases(selections)):
            yield self.model

    def prune(self, plan: PruningPlan):
        """A new, physically smaller model (shares untouched tensors with the dense one)."""
        selections = self.selections(plan)
        return prune_model(self.model, selections, self.space.pruned_shape(plan), self.biases(selections))

    def prune_in_place(self, plan: PruningPlan, offload_folder: str | None = None, progress=None):
        """The pruned model, made from the dense one layer by layer: the dense model is consumed, and
        this context's model becomes the pruned one (other contexts sharing the dense model must not
        be used afterwards)."""
        selections = self.selections(plan)
        self.model = prune_in_place(self.model, selections, self.space.pruned_shape(plan), self.biases(selections),
                                    offload_folder=offload_folder, progress=progress)
        return self.model


def build_context(model, space: PruningSpace, metric: str, calibration: TokenWindows, cache_dir: Path | None,
                  calibration_seed: int = 0, batch_size: int = 4, progress=None) -> tuple[PruningContext, bool]:
    """Returns (context, stats_came_from_cache)."""
    key = stats_cache_key(model, f"{calibration.source}:{calibration.split}", len(calibration),
                          calibration.seqlen, calibration_seed)
    started = time.perf_counter()
    stats, cached = load_or_collect_stats(model, calibration, cache_dir, key, batch_size=batch_size, progress=progress)
    scored = time.perf_counter()
    scores = compute_importance(model, stats, metric)
    seconds = {"statistics": scored - started, "importance": time.perf_counter() - scored}
    return PruningContext(model, space, stats, scores, seconds), cached
