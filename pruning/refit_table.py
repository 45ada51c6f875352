"""Re-fitted layers for the search's fitness path, at a cost a search can afford.

The exact sequential refit of a plan (pruning/refit_pass.py) costs about one calibration pass:
too slow to score thousands of candidates. The table makes one *reference* pass instead, along a
reference plan (uniform at the budget), and keeps each layer's whole input Gram matrices G of
o_proj and down_proj as they were on that trajectory (earlier layers pruned and re-fitted as the
reference plan prunes them; down_proj measured behind the layer's own re-fitted attention). The
refit of any level of any layer then follows from G in closed form (one fp64 solve, cached per
(layer, projection, level)), and a candidate's layers are swapped in by pointer.

The approximation: a candidate whose upstream layers differ from the reference sees inputs the
table did not measure (Týr-the-Pruner's "expectation" error accumulation, 66.4 vs 58.1 PPL for
the ideal). Finalize always re-fits the chosen plan exactly; the gap between the two is measured
(BENCHMARKS.md) and reported per run.

Where G lives: CPU RAM, or one file per layer under a cache folder, memory-mapped on use (at
LLaMA-2-70B G is 3.6 GB per layer in fp32, 265 GiB in all: disk). Files are keyed by the model,
the calibration sample, the importance scores, the reference plan and the damping. With the
`dense` reconstruction target (an engine parameter, measured worse) each projection also keeps
the cross term with the dense model's outputs.
"""
from __future__ import annotations

import hashlib
import json
import pickle
from collections import OrderedDict
from dataclasses import replace
from pathlib import Path
from typing import Callable

import torch

from pruning.adapter import DecoderAdapter
from pruning.data import TokenWindows
from pruning.genome import LayerPlan, PruningPlan
from pruning.layer_stream import LayerStream
from pruning.masking import refit_swapped
from pruning.placement import execution_device, materialized
from pruning.reconstruction import (InputGram, LayerRefit, OutputCross, ProjectionRefit, kept_statistics_from_gram,
                                   solve_refit)
from pruning import obs
from pruning.importance import OBS_PENDING, ImportanceScores, LayerImportance
from pruning.selection import LayerSelection, column_indices, select_layer

# solved (layer, level) refits kept in memory for reuse, least recently used dropped first: a share of
# the dense weights' size (held beside the model: memory the whole run pays), at least 256 MiB (below
# that a search on a small model re-solves every layer of every candidate: 3 s a candidate on
# SmolLM2-135M instead of 0.2), at most 1 GiB. With a cache folder, every solved level is also
# written there (the level table on disk), so a level dropped from memory is read back, not re-solved.
SOLVED_CACHE_SHARE = 0.05
SOLVED_CACHE_MIN_BYTES = 256 * 2**20
SOLVED_CACHE_MAX_BYTES = 2**30


class RefitTable:
    """Per layer the reference trajectory's input Grams; per (layer, level) the refit, solved on demand."""

    def __init__(self, context, grams: list[tuple[torch.Tensor, torch.Tensor]] | None, damping: float,
                 folder: Path | None = None, reference: PruningPlan | None = None):
        self.context = context
        self.damping = damping
        self.folder = folder
        self.reference = reference
        self._grams = grams  # in memory, or None: read from folder per layer
        self._solved: OrderedDict[tuple[int, str, int], ProjectionRefit] = OrderedDict()  # least recently used first
        self._solved_bytes = 0
        self._solved_limit = min(SOLVED_CACHE_MAX_BYTES, max(SOLVED_CACHE_MIN_BYTES, int(SOLVED_CACHE_SHARE * sum(
            p.numel() * p.element_size() for p in context.model.parameters()))))
        self.solves = 0
        self.reads = 0

    def is_exact_for(self, plan: PruningPlan) -> bool:
        """The table's Grams were measured on this plan's own trajectory: its refits are exact."""
        return self.reference is not None and plan.key() == self.reference.key()

    # -- building ------------------------------------------------------------------------------
    @classmethod
    def build(cls, context, reference: PruningPlan, progress: Callable[[int, int], None] | None = None):
        """The reference pass; returns (table, importance scores). With `--metric obs` the scores are
        made here, layer by layer from the trajectory's Grams, before the layer is re-fitted. With a
        cache folder, each layer's Grams go to disk as they are made, and a finished folder is read
        back instead of recomputed."""
        r = context.reconstruction
        # OBS scores belong to the trajectory they were measured on: a table along another reference
        # (another budget) makes them again, it does not keep the last one's
        obs = context.scores.metric in (OBS_PENDING, "obs")
        folder = None
        if r.cache_dir is not None:
            metric = "obs" if obs else context.scores.metric
            folder = Path(r.cache_dir) / table_key(r.stats_key, metric, reference, r.calibration, r.damping, context.space,
                                                   r.target)
            if (folder / "done.json").exists():
                scores = _load_scores(folder / "scores.pt") if obs else context.scores
                if scores is not None:
                    return cls(context, None, r.damping, folder, reference), scores
                (folder / "done.json").unlink()  # an older format's scores: the pass is made again
            folder.mkdir(parents=True, exist_ok=True)
        model, space = context.model, context.space
        adapter = DecoderAdapter(model)
        stream = LayerStream(model, r.calibration, r.batch_size)
        dense = stream.fork() if r.target == "dense" else None  # the dense model's own stream (pruning/refit_pass.py)
        grams, layer_scores = [], []
        for i in range(adapter.num_layers):
            scores_i = context.scores.layers[i]
            o, down = adapter.o_proj(i), adapter.down_proj(i)
            targets = dense.outputs(i, [o, down]) if dense is not None else (None, None)
            g_o = _gram(stream, i, o, targets[0])
            if obs:
                scores_i = replace(scores_i, head_scores=_obs_heads(adapter, space, i, g_o, r.damping))
            sel = select_layer(i, reference.layers[i], scores_i, space)
            refit = LayerRefit()
            if sel.removes_heads:
                refit.o_proj = _solve_from_gram(o, g_o, column_indices(sel.kept_heads, adapter.head_dim), r.damping)
            with refit_swapped(model, i, refit):
                g_d = _gram(stream, i, down, targets[1])
            if obs:
                scores_i = replace(scores_i, channel_scores=_obs_channels(adapter, space, i, g_d, r.damping))
                sel = select_layer(i, reference.layers[i], scores_i, space)
            if sel.removes_channels:
                refit.down_proj = _solve_from_gram(down, g_d, sel.kept_channels, r.damping)
            with refit_swapped(model, i, refit):
                stream.run(i, advance=True)
            layer_scores.append(scores_i)
            pair = (g_o, g_d)
            del g_o, g_d, targets
            if folder is not None:
                torch.save(pair, folder / f"layer-{i:04d}.pt")
            grams.append(None if folder is not None else pair)
            if progress:
                progress(i + 1, adapter.num_layers)
        scores = ImportanceScores("obs", layer_scores) if obs else context.scores
        if folder is not None:
            if obs:
                _save_scores(scores, folder / "scores.pt")
            (folder / "done.json").write_text(json.dumps({"layers": adapter.num_layers, "tokens": stream.tokens,
                                                          "reference": reference.to_list()}))
            grams = None
        return cls(context, grams, r.damping, folder, reference), scores

    # -- using ---------------------------------------------------------------------------------
    def grams(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self._grams is not None:
            return self._grams[i]
        return torch.load(self.folder / f"layer-{i:04d}.pt", mmap=True, weights_only=True)

    def refits(self, plan: PruningPlan, selections: list[LayerSelection] | None = None) -> list[LayerRefit]:
        selections = selections or self.context.selections(plan)
        return [self.layer(i, layer_plan, sel) for i, (layer_plan, sel) in enumerate(zip(plan.layers, selections))]

    def layer(self, i: int, layer_plan: LayerPlan, sel: LayerSelection) -> LayerRefit:
        adapter = DecoderAdapter(self.context.model)
        refit = LayerRefit()
        if sel.removes_heads:
            refit.o_proj = self._projection(i, "o", layer_plan.attn_units_removed, adapter.o_proj(i),
                                            lambda: column_indices(sel.kept_heads, adapter.head_dim))
        if sel.removes_channels:
            refit.down_proj = self._projection(i, "down", layer_plan.mlp_units_removed, adapter.down_proj(i),
                                               lambda: sel.kept_channels)
        return refit

    def _projection(self, i: int, which: str, level: int, projection, kept: Callable[[], torch.Tensor]):
        key = (i, which, level)
        if key in self._solved:
            self._solved.move_to_end(key)
            return self._solved[key]
        path = None if self.folder is None else self.folder / f"level-{i:04d}-{which}-{level}.pt"
        if path is not None and path.exists():
            refit = ProjectionRefit(**torch.load(path, weights_only=True, map_location=execution_device(projection)))
            self.reads += 1
        else:
            s_o, s_d = self.grams(i)
            refit = _solve_from_gram(projection, s_o if which == "o" else s_d, kept(), self.damping)
            self.solves += 1
            if path is not None:
                tmp = path.with_suffix(".tmp")
                torch.save({"weight": refit.weight, "bias": refit.bias, "kept": refit.kept}, tmp)
                tmp.replace(path)
        self._solved[key] = refit
        self._solved_bytes += refit.nbytes
        while self._solved_bytes > self._solved_limit and len(self._solved) > 1:
            _, old = self._solved.popitem(last=False)
            self._solved_bytes -= old.nbytes
        return refit


Statistics = tuple  # (G, cross or None): the input Gram, and C for the dense target (pruning/reconstruction.py)


def _gram(stream: LayerStream, i: int, projection, targets=None) -> Statistics:
    """The projection's input Gram over the windows (and with `targets`, the cross term with them),
    accumulated where the layer computes, then kept in CPU RAM (on a GPU it would sit beside the
    solve: 3.3 GB for a 70B down_proj)."""
    gram = InputGram(projection.in_features)
    cross = OutputCross(projection.in_features) if targets is not None else None

    def sink(x, _y, k):
        gram.add(x)
        if cross is not None:
            cross.add(x, targets[k])

    stream.observe(i, projection, sink)
    return gram.finish().cpu(), None if cross is None else cross.matrix.cpu()


def _solve_from_gram(projection, statistics: Statistics, kept: torch.Tensor, damping: float) -> ProjectionRefit:
    """A and C from the Gram (read in row blocks, wherever it lives), then the solve on the weight's
    device: no whole-Gram copy on the GPU."""
    gram, cross = statistics
    device = execution_device(projection)
    with materialized(projection):
        weight, bias = projection.weight, projection.bias
        a, c = kept_statistics_from_gram(gram, weight, bias, kept, cross)
        dtype = weight.dtype
    return solve_refit(a, c, kept, damping, device=device, dtype=dtype)


def _full_weight(projection, statistics: Statistics, damping: float) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The weight OBS starts from: the projection's own (local target), or for the dense target the
    least-squares fit with every input kept (then OBS on it is exact: the error splits into the
    full fit's and the removal's)."""
    gram, cross = statistics
    with materialized(projection):
        if cross is None:
            return projection.weight, projection.bias
        everything = torch.arange(projection.in_features)
        full = _solve_from_gram(projection, statistics, everything, damping)
        return full.weight, full.bias


def _obs_heads(adapter, space, i: int, statistics: Statistics, damping: float) -> torch.Tensor:
    layer = space.shape.layers[i]
    o = adapter.o_proj(i)
    weight, bias = _full_weight(o, statistics, damping)
    with materialized(o):
        return obs.head_scores(statistics[0].to(execution_device(o)), weight, bias, layer.num_key_value_heads,
                               layer.queries_per_group, adapter.head_dim, space.query_mode(layer), damping)


def _obs_channels(adapter, space, i: int, statistics: Statistics, damping: float) -> torch.Tensor:
    down = adapter.down_proj(i)
    max_removed = (space.mlp_units(i) - 1) * space.mlp_unit  # every layer keeps one unit
    weight, bias = _full_weight(down, statistics, damping)
    with materialized(down):
        return obs.channel_scores(statistics[0].to(execution_device(down)), weight, bias, space.mlp_unit,
                                  max_removed, damping)


def _save_scores(scores: ImportanceScores, path: Path) -> None:
    torch.save({"metric": scores.metric, "layers": [(l.head_scores, l.channel_scores, l.head_input_mean,
                                                     l.channel_input_mean) for l in scores.layers]}, path)


def _load_scores(path: Path) -> ImportanceScores | None:
    """None when the file is not today's format (an older version pickled the scores' class)."""
    try:
        data = torch.load(path, weights_only=True)
        return ImportanceScores(data["metric"], [LayerImportance(*layer) for layer in data["layers"]])
    except (pickle.UnpicklingError, KeyError, TypeError, RuntimeError, EOFError):
        return None


def table_key(stats_key: str, metric: str, reference: PruningPlan, windows: TokenWindows, damping: float,
              space, target: str) -> str:
    payload = json.dumps([stats_key, metric, reference.key(), windows.source, windows.split, len(windows),
                          windows.seqlen, damping, space.gqa, space.mlp_unit, target, 2])
    return "table-" + hashlib.sha256(payload.encode()).hexdigest()[:20]
