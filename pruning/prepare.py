"""From a loaded model and settings to a ready `PruningContext` and `Budget` (shared by the
`prune` command, the search and the benchmarks)."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from pruning.adapter import DecoderAdapter
from pruning.budget import Budget, budget_from_args
from pruning.context import PruningContext, Reconstruction, build_context
from pruning.data import load_windows
from pruning.importance import METRICS
from pruning.loading import cache_dir
from pruning.reconstruction import DEFAULT_DAMPING, RECONSTRUCTIONS
from pruning.space import PruningSpace


@dataclass
class PruneSettings:
    metric: str = "obs"  # RunConfig's --metric auto with the default reconstruction (ls)
    granularity: str = "layer"
    gqa: str = "query"
    mlp_unit: int = 0  # 0 = automatic
    min_rate: float = 0.0
    max_rate: float = 0.9
    reconstruct: str = "ls"  # ls: least-squares refit of o_proj/down_proj; bias: FLAP's compensation; off
    reconstruct_damping: float = DEFAULT_DAMPING
    calib_data: str = "wikitext2"  # validation split; or "c4", or a text file
    calib_samples: int = 64
    calib_seqlen: int = 512
    data_dir: str | None = None
    batch_size: int = 4
    seed: int = 0

    def __post_init__(self):
        if self.metric not in METRICS:
            raise ValueError(f"unknown --metric {self.metric!r}; use one of {', '.join(METRICS)}")
        if self.reconstruct not in RECONSTRUCTIONS:
            raise ValueError(f"--reconstruct must be one of {', '.join(RECONSTRUCTIONS)}, not {self.reconstruct!r}")
        if not 0 < self.reconstruct_damping < 10:
            raise ValueError(f"--reconstruct-damping must be in (0, 10), not {self.reconstruct_damping}")
        if self.calib_samples < 1 or self.calib_seqlen < 2:
            raise ValueError("--calib-samples must be >= 1 and --calib-seqlen >= 2")

    @property
    def adds_bias(self) -> bool:
        """FLAP's compensation and the least-squares refit both leave a bias where units went."""
        return self.reconstruct in ("ls", "bias")

    def to_dict(self) -> dict:
        return asdict(self)


def make_space(model, settings: PruneSettings) -> PruningSpace:
    return PruningSpace(
        DecoderAdapter(model).shape(), gqa=settings.gqa, mlp_unit=settings.mlp_unit,
        min_rate=settings.min_rate, max_rate=settings.max_rate, adds_bias=settings.adds_bias,
    )


def make_budget(space: PruningSpace, budget: str | None, rate: float | None, granularity: str) -> Budget:
    return budget_from_args(space.shape, budget, rate, space.min_total_params(granularity))


def calibration_windows(tokenizer, settings: PruneSettings):
    """The calibration sample (validation split: calibration never sees the test split)."""
    windows = load_windows(settings.calib_data, "validation", tokenizer, settings.calib_seqlen, settings.data_dir)
    return windows.sample(settings.calib_samples, seed=settings.seed)


def prepare(model, tokenizer, settings: PruneSettings, progress=None, calibration=None,
            stats=None) -> tuple[PruningContext, bool]:
    """Calibrate (or read the cached statistics) and score. Returns (context, from_cache).
    calibration: windows tokenized before the model was loaded (else tokenized here).
    stats: the calibration statistics made elsewhere (a Ray worker gets the coordinator's)."""
    space = make_space(model, settings)
    if calibration is None:
        calibration = calibration_windows(tokenizer, settings)
    reconstruction = Reconstruction(settings.reconstruct, settings.reconstruct_damping, calibration=calibration,
                                    batch_size=settings.batch_size, cache_dir=Path(cache_dir()) / "refit")
    return build_context(model, space, settings.metric, calibration, Path(cache_dir()) / "stats",
                         calibration_seed=settings.seed, batch_size=settings.batch_size, progress=progress,
                         reconstruction=reconstruction, stats=stats)
