"""Everything needed to turn plans into pruned models for one (model, metric, space).

Built once per run (the calibration pass is the expensive part, and it is cached on disk); the
fitness evaluator and the final surgery both go through it.

Reconstruction (`Reconstruction.mode`): `off` prunes only; `bias` adds FLAP's compensation bias;
`ls` re-fits o_proj / down_proj by least squares. With `ls`, what a plan turns into depends on the
path: the search's candidates take their layers from the refit table (one reference pass, refits
per level: `prepare_table`), while `exact=True` paths (finalize, `prune`, the baselines) re-fit the
plan itself, layer by layer on its own pruned inputs (pruning/refit_pass.py).
"""
from __future__ import annotations

import hashlib
import json
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch

from pruning.adapter import DecoderAdapter
from pruning.data import TokenWindows
from pruning.genome import PruningPlan
from pruning.importance import (
    OBS_PENDING,
    ActivationStats,
    ImportanceScores,
    compute_importance,
    load_or_collect_stats,
    stats_cache_key,
)
from pruning.masking import masked
from pruning.reconstruction import (DEFAULT_DAMPING, RECONSTRUCTIONS, TARGETS, LayerRefit, refits_from_state,
                                   refits_state)
from pruning.selection import LayerSelection, compensation_biases, select
from pruning.space import PruningSpace
from pruning.surgery import prune_in_place, prune_model

EXACT_CACHE_BYTES = 512 * 2**20  # exact refits kept in memory per plan below this size (not at 70B)


@dataclass
class Reconstruction:
    """How removed units are compensated, and what the least-squares refit calibrates on."""

    mode: str = "off"  # ls | bias | off
    damping: float = DEFAULT_DAMPING
    # what a refit reproduces (pruning/refit_pass.py): local W x, or the dense model's own output. Not a
    # command-line option: measured worse on SmolLM2-135M at rate 0.35 (test PPL 148 vs 64; BENCHMARKS.md)
    target: str = "local"
    calibration: TokenWindows | None = None  # the windows the refit calibrates on (validation split)
    batch_size: int = 4
    cache_dir: Path | None = None  # refit tables on disk (None: in memory)
    stats_key: str = ""  # identifies model + calibration: part of the table's cache key
    exact_cache: Path | None = None  # exact refits of plans kept on disk (benchmarks measuring a plan several times)

    def __post_init__(self):
        if self.mode not in RECONSTRUCTIONS:
            raise ValueError(f"--reconstruct must be one of {', '.join(RECONSTRUCTIONS)}, not {self.mode!r}")
        if not 0 < self.damping < 10:
            raise ValueError(f"--reconstruct-damping must be in (0, 10), not {self.damping}")
        if self.target not in TARGETS:
            raise ValueError(f"reconstruction target must be one of {', '.join(TARGETS)}, not {self.target!r}")


@dataclass
class PruningContext:
    model: object
    space: PruningSpace
    stats: ActivationStats
    scores: ImportanceScores
    seconds: dict = field(default_factory=dict)  # {"statistics": .., "importance": .., "reference pass": ..}
    reconstruction: Reconstruction = field(default_factory=Reconstruction)
    table: object = None  # pruning.refit_table.RefitTable, once prepared
    _exact: dict = field(default_factory=dict)  # plan key -> exact refits (small models only)

    def __post_init__(self):
        if self.space.adds_bias != (self.reconstruction.mode != "off"):
            raise ValueError(f"the pruning space {'prices' if self.space.adds_bias else 'does not price'} a compensation "
                             f"bias but the reconstruction is {self.reconstruction.mode!r}: build both from one setting")

    @property
    def adapter(self) -> DecoderAdapter:
        return DecoderAdapter(self.model)

    def comparable_scores(self) -> ImportanceScores:
        """Scores whose sizes compare across layers (FLAP's global allocation, the per-layer facts the
        agents are shown): the run's own, except OBS's, which rank removals within one layer: then
        Wanda-sp's, from the same statistics."""
        if self.scores.metric in ("obs", OBS_PENDING):
            return compute_importance(self.model, self.stats, "wanda-sp")
        return self.scores

    def selections(self, plan: PruningPlan) -> list[LayerSelection]:
        return select(plan, self.scores, self.space)

    def biases(self, selections: list[LayerSelection]):
        if self.reconstruction.mode != "bias":
            return None
        return compensation_biases(self.model, selections, self.scores, self.adapter.head_dim)

    # -- least-squares refits ----------------------------------------------------------------------
    def uniform_plan(self, budget) -> PruningPlan:
        """Uniform layer rates at the budget: the refit table's reference and the one-shot baseline."""
        from pruning import allocation
        from pruning.repair import repair

        return repair(allocation.uniform(self.space, budget, "layer"), self.space, budget).plan

    def prepare_for(self, budget, progress=None) -> None:
        """What the search's fitness path needs for this budget: the refit table along the uniform
        plan (`ls`) and `--metric obs`'s scores. Nothing for other settings; nothing twice."""
        reference = self.uniform_plan(budget)
        if self.table is not None and self.table.is_exact_for(reference):
            return
        self.prepare_table(reference, progress)

    def prepare_table(self, reference: PruningPlan, progress=None) -> None:
        """The refit table for the search's fitness path (and, for `--metric obs`, the scores),
        along `reference` (uniform at the budget). Read from the disk cache when it is there."""
        if self.reconstruction.mode != "ls" and self.scores.metric != OBS_PENDING:
            return
        from pruning.refit_table import RefitTable

        started = time.perf_counter()
        self._exact = {}  # OBS scores may change with the reference: a plan's exact refits with them
        table, scores = RefitTable.build(self, reference, progress=progress)
        self.scores = scores
        self.table = table if self.reconstruction.mode == "ls" else None
        self.seconds["reference pass"] = time.perf_counter() - started

    def refits(self, plan: PruningPlan, selections: list[LayerSelection], exact: bool = False) -> list[LayerRefit] | None:
        if self.reconstruction.mode != "ls":
            return None
        if not exact and self.table is not None:
            return self.table.refits(plan, selections)
        return self.exact_refits(plan, selections)

    def exact_refits(self, plan: PruningPlan, selections: list[LayerSelection], progress=None) -> list[LayerRefit]:
        """The plan re-fitted layer by layer on its own pruned inputs (cached for small models)."""
        key = plan.key()
        if key in self._exact:
            return self._exact[key]
        if self.table is not None and self.table.is_exact_for(plan):
            return self.table.refits(plan, selections)
        from pruning.refit_pass import SequentialRefit

        r = self._require_calibration()
        path = None
        if r.exact_cache is not None:
            path = Path(r.exact_cache) / f"exact-{_exact_key(r, self.scores, self.space, plan)}.pt"
            if path.exists():
                return refits_from_state(torch.load(path, weights_only=True))
        refits = SequentialRefit(self.model, selections, r.calibration, r.damping, r.batch_size,
                                 target=r.target).all(progress)
        if sum(layer.nbytes for layer in refits) <= EXACT_CACHE_BYTES:
            self._exact = {key: refits}  # the last plan only: finalize asks twice (measure, then prune)
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                torch.save(refits_state(refits), path.with_suffix(".tmp"))
                path.with_suffix(".tmp").replace(path)
        return refits

    def _require_calibration(self) -> Reconstruction:
        if self.reconstruction.calibration is None:
            raise ValueError("--reconstruct ls needs the calibration windows in the pruning context")
        return self.reconstruction

    # -- plans as models ---------------------------------------------------------------------------
    @contextmanager
    def masked(self, plan: PruningPlan, exact: bool = False):
        """The dense model behaving as if pruned by `plan` (no copies; refits swapped in by pointer)."""
        selections = self.selections(plan)
        with masked(self.model, selections, self.biases(selections), self.refits(plan, selections, exact)):
            yield self.model

    def prune(self, plan: PruningPlan, exact: bool = False):
        """A new, physically smaller model (shares untouched tensors with the dense one)."""
        selections = self.selections(plan)
        return prune_model(self.model, selections, self.space.pruned_shape(plan), self.biases(selections),
                           self.refits(plan, selections, exact))

    def prune_in_place(self, plan: PruningPlan, offload_folder: str | None = None, progress=None):
        """The pruned model, made from the dense one layer by layer: the dense model is consumed, and
        this context's model becomes the pruned one (other contexts sharing the dense model must not
        be used afterwards). With `ls`, each layer is re-fitted exactly just before it is sliced, so
        the refits of one layer at a time are held, never a second copy of the blocks."""
        selections = self.selections(plan)
        refit_for = None
        if self.reconstruction.mode == "ls":
            key = plan.key()
            if key in self._exact or (self.table is not None and self.table.is_exact_for(plan)):
                known = self.exact_refits(plan, selections)
                refit_for = known.__getitem__
            else:
                from pruning.refit_pass import SequentialRefit

                r = self._require_calibration()
                refit_for = SequentialRefit(self.model, selections, r.calibration, r.damping, r.batch_size,
                                            target=r.target).layer
        # what served the search goes before the pruning's peak: the table (its solved refits) and the
        # exact refits of other plans (refit_for holds this plan's own)
        self._exact = {}
        self.table = None
        self.model = prune_in_place(self.model, selections, self.space.pruned_shape(plan), self.biases(selections),
                                    offload_folder=offload_folder, progress=progress, refit_for=refit_for)
        return self.model


def _exact_key(r: Reconstruction, scores, space: PruningSpace, plan: PruningPlan) -> str:
    w = r.calibration
    payload = json.dumps([r.stats_key, _scores_key(scores), space.gqa, space.mlp_unit, plan.key(), r.damping, r.target,
                          w.source, w.split, len(w), w.seqlen, int(w.input_ids.sum())])
    return hashlib.sha256(payload.encode()).hexdigest()[:20]


def _scores_key(scores) -> str:
    """The metric's name, and for OBS the scores themselves: they depend on the budget (the reference
    pass's trajectory), so two budgets' OBS selections of one plan differ."""
    if scores.metric != "obs":
        return scores.metric
    digest = hashlib.sha256()
    for layer in scores.layers:
        for t in (layer.head_scores, layer.channel_scores):
            digest.update(t.detach().to(torch.float32).cpu().contiguous().numpy().tobytes())
    return "obs:" + digest.hexdigest()[:16]


def build_context(model, space: PruningSpace, metric: str, calibration: TokenWindows, cache_dir: Path | None,
                  calibration_seed: int = 0, batch_size: int = 4, progress=None,
                  reconstruction: Reconstruction | None = None,
                  stats: ActivationStats | None = None) -> tuple[PruningContext, bool]:
    """Returns (context, stats_came_from_cache). `--metric obs` scores come with the reference pass
    (`prepare_table`), which needs the budget. The reconstruction calibrates on `calibration` unless
    it names its own windows. `stats`: given (another process made them), not collected or read."""
    key = stats_cache_key(model, f"{calibration.source}:{calibration.split}", len(calibration),
                          calibration.seqlen, calibration_seed)
    started = time.perf_counter()
    if stats is None:
        stats, cached = load_or_collect_stats(model, calibration, cache_dir, key, batch_size=batch_size, progress=progress)
    else:
        cached = True
    scored = time.perf_counter()
    scores = compute_importance(model, stats, metric)
    seconds = {"statistics": scored - started, "importance": time.perf_counter() - scored}
    # not given: what the space prices (a bias means the default, least-squares reconstruction)
    reconstruction = reconstruction or Reconstruction("ls" if space.adds_bias else "off")
    reconstruction.calibration = reconstruction.calibration or calibration
    reconstruction.stats_key = key
    return PruningContext(model, space, stats, scores, seconds, reconstruction), cached
