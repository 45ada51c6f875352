"""`RunConfig`: the one place where a run's settings, their defaults and their meanings live.

The command line is generated from it (`add_options`), the whole of it is stored in `run.db`, and
two flags on each field replace the hand-kept lists there used to be:
- `run`: the field belongs to the run, so `--resume` takes it from the stored run (every field but
  the process knobs: how much memory a device may hold, where offload goes, the C heap);
- `measured`: the field changes what a search measures, so an ablation folder made with another
  value is refused rather than mixed (the device, batch size or a timeout do not).

The engine's own views (`PruneSettings`, `SearchSettings`) are derived here and nowhere else.
"""
from __future__ import annotations

import argparse
from dataclasses import MISSING, asdict, dataclass, field, fields, replace

from assembly.cpu_heap import CHOICES as CPU_HEAP_CHOICES

GROUPS = ("model", "budget", "pruning", "agent", "search", "evolution", "workers", "finalize")


def option(group: str, help: str, *, run: bool = True, measured: bool = True, default=MISSING, **argparse_kw):
    """A field with its command-line meaning (argparse keywords pass through)."""
    assert group in GROUPS, group
    meta = {"group": group, "help": help, "run": run, "measured": measured, "argparse": argparse_kw}
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class RunConfig:
    # --- the model and where it runs
    model: str = option("model", "alias (smollm2-135m = embedded, llama-2-7b, llama-2-70b, llama-3-8b, ...), HF id or directory",
                        default="smollm2-135m")
    dtype: str = option("model", "auto (bf16 on GPUs and on CPUs with native bf16, else fp32), float32, bfloat16, float16", default="auto")
    device: str = option("model", "auto (CUDA when present), cpu, cuda (all visible GPUs), cuda:N (that GPU only)",
                         measured=False, default="auto")
    max_memory: str | None = option("model", "memory per device in accelerate's form, e.g. 0=70GiB,1=70GiB,cpu=200GiB; what does "
                                    "not fit goes to CPU RAM, then disk (default: free GPU memory less 2 GiB, 85%% of free RAM)",
                                    run=False, measured=False, default=None, metavar="SPEC")
    offload_folder: str | None = option("model", "disk offload folder when the model does not fit GPU + CPU (default: offload/ "
                                        "in the run folder)", run=False, measured=False, default=None, metavar="DIR")
    cpu_heap: str = option("model", "auto: when the model computes on the CPU, freed buffers over 4 MiB go back to the system "
                           "(glibc's mmap threshold fixed: a bounded peak, 5-25%% more CPU time); glibc: its default",
                           run=False, measured=False, default="auto", choices=list(CPU_HEAP_CHOICES))
    random_weights: bool = option("model", "random weights from the model's config instead of reading them (scale checks, "
                                  "speed before a download)", default=False, action="store_true")
    data_dir: str | None = option("model", "folder with wikitext-2-raw/ and c4/ (default: $SELF_PRUNER_DATA_DIR, bundled "
                                  "WikiText-2, hub)", measured=False, default=None)
    # --- the size of the result (one of the two)
    budget: str | None = option("budget", "size of the result: 35b, 7.5B, 800m, 50%%, 0.5 (share of the dense total)", default=None)
    rate: float | None = option("budget", "average per-layer pruning rate (share of decoder-block params removed)",
                                default=None, type=float)
    # --- what is pruned and how it is scored
    metric: str = option("pruning", "importance metric: auto = obs with --reconstruct ls (Hessian-aware, from the refit's "
                         "reference pass: what the refit makes up for best), else wanda-sp", default="auto",
                         choices=["auto", "wanda-sp", "flap", "magnitude", "obs"])
    granularity: str = option("pruning", "genome: one rate per layer (paper), or attention + MLP rates per layer",
                              default="layer", choices=["layer", "module"])
    gqa: str = option("pruning", "attention unit: one query head per KV group (default) or whole KV groups",
                      default="query", choices=["query", "group"])
    mlp_unit: int = option("pruning", "MLP channels removed in multiples of this (0 = automatic)", default=0, type=int)
    min_rate: float = option("pruning", "lower bound of every rate", default=0.0, type=float)
    max_rate: float = option("pruning", "upper bound of every rate", default=0.9, type=float)
    reconstruct: str = option("pruning", "what compensates removed heads/channels: ls (least-squares refit of o_proj and "
                              "down_proj, layer by layer on the pruned model's own inputs), bias (FLAP's mean bias), off",
                              default="ls", choices=["ls", "bias", "off"])
    reconstruct_damping: float = option("pruning", "ridge damping of the refit, relative to the mean input energy",
                                        default=1e-2, type=float)
    calib_data: str = option("pruning", "wikitext2 (validation split), c4, or a text file", default="wikitext2")
    calib_samples: int = option("pruning", "calibration windows", default=64, type=int)
    calib_seqlen: int = option("pruning", "calibration window length in tokens", default=512, type=int)
    batch_size: int = option("pruning", "windows per forward pass", measured=False, default=4, type=int)
    seed: int = option("pruning", "seed of the calibration sample and of the search", default=0, type=int)
    # --- the agent behind the roles
    agent: str = option("agent", "local (llama.cpp server with the embedded SmolLM2), classic (no LLM), openai:<model>, "
                        "or URL[#model]", default="local")
    agent_model: str | None = option("agent", "GGUF file for --agent local (default: the embedded SmolLM2)", default=None)
    temperature: float = option("agent", "LLM sampling temperature", default=1.0, type=float)
    max_tokens: int = option("agent", "LLM answer limit", default=1024, type=int)
    agent_timeout: float = option("agent", "seconds per LLM call", measured=False, default=180.0, type=float)
    retries: int = option("agent", "retries (with the error shown) before the classic fallback", default=1, type=int)
    agent_tools: str = option("agent", "the LLM roles call tools (screen children, layer sensitivity, latency, "
                              "population) before answering: on, off, auto (on where the backend answers a tool-call "
                              "probe, except the embedded 135M model)", default="auto", choices=["auto", "on", "off"])
    tool_budget: int = option("agent", "tool calls per LLM role call when --agent-tools is on", default=4, type=int)
    agent_slots: int = option("agent", "LLM calls at once: the local server's parallel slots, or concurrent requests to "
                              "a remote endpoint; from 2 the crosser and the mutator ask at the same time (0 = auto: 1 "
                              "for the local server, measured slower with 2 on 2 CPU cores; 4 for a remote endpoint)",
                              default=0, type=int)
    # --- the search's prompts and roles
    prompts: str | None = option("search", "prompt set: a folder, or a set name under prompts/ (moves: the LLM picks "
                                 "numbered exact moves; default: it writes whole genomes)", default="moves")
    prompt: tuple[str, ...] | None = option("search", "replace one role's prompt (repeatable)", default=None,
                                            action="append", metavar="ROLE=FILE")
    llm_roles: str = option("search", "roles the LLM plays; the others use classic operators",
                            default="initializer,selector,crosser,mutator")
    # --- the evolution and its fitness
    population: int = option("evolution", "survivors per generation", default=4, type=int)
    generations: int = option("evolution", "generations after the initial one (seeds and the initializer's proposals)",
                              default=8, type=int)
    offspring: int = option("evolution", "children per generation (--crossover-share by crossover, the rest by exact moves)",
                            default=12, type=int)
    crossover_share: float = option("evolution", "share of the children made by crossover", default=0.25, type=float)
    fidelity: str = option("evolution", "multi-fidelity stages, WINDOWSxSEQLEN:KEPT each: every generation scores "
                           "population and children on the first stage's fresh validation sample, the KEPT best go on "
                           "to the next stage's (the last stage ranks the survivors)", default="1x128:4,2x256:2")
    patience: int = option("search", "stop after this many generations without improvement (0 = off)", default=0, type=int)
    search_minutes: float = option("evolution", "stop after the first generation that ends past this many minutes of "
                                   "search (all sessions of a resumed run; 0 = off): equal-time comparisons, a "
                                   "budget of GPU hours", default=0.0, type=float)
    fitness: str = option("evolution", "KL divergence to the dense model (top-128 of its distribution) or perplexity",
                          default="kl", choices=["kl", "ppl"])
    latency_weight: float = option("evolution", "latency in the objective: fitness x (predicted prefill latency / the "
                                   "uniform plan's)^W, from module timings on the run's device (0 = fitness only; 1: 1%% "
                                   "of fitness for 1%% of latency)", default=0.0, type=float)
    fitness_tokens: int = option("evolution", "WikiText-2 validation tokens on which the best plan's fitness is stated "
                                 "(search path vs exact refit)", default=2048, type=int)
    fitness_seqlen: int = option("evolution", "validation window length (the stages draw from these windows)",
                                 default=512, type=int)
    fitness_mode: str = option("evolution", "apply candidates as masks on the dense model or by surgery (auto: surgery from "
                               "rate 0.3)", measured=False, default="auto", choices=["auto", "masked", "sliced"])
    final_eval_windows: int = option("evolution", "WikiText-2 test windows in the final comparison (0 = all)", default=32, type=int)
    eval_seqlen: int = option("evolution", "WikiText-2 test window length", default=512, type=int)
    # --- where the search's evaluations run (process knobs: a resumed run may use other workers)
    workers: int = option("workers", "evaluator workers on a local Ray cluster started for the run (1: in this process, "
                          "Ray not needed; with --ray-address: default one per GPU the cluster offers)",
                          run=False, measured=False, default=1, type=int)
    ray_address: str | None = option("workers", "join this Ray cluster (ADDR:6379, from `ray start --head`) instead of "
                                      "starting one; it keeps running afterwards", run=False, measured=False,
                                      default=None, metavar="ADDR")
    gpus_per_worker: float | None = option("workers", "GPUs per worker (a model that needs several; 0.5: two workers "
                                           "share one); default 1 when the model computes on a GPU, else 0",
                                           run=False, measured=False, default=None, type=float)
    cpus_per_worker: int = option("workers", "CPU threads per worker", run=False, measured=False, default=1, type=int)
    eval_timeout: float = option("workers", "seconds one evaluation on a Ray worker may take before the worker is killed "
                                 "as hung and the plan re-queued (0: no limit)", run=False, measured=False, default=0.0,
                                 type=float)
    # --- finalize
    zero_shot: str = option("finalize", "lm-eval on the seven tasks in finalize (auto: when --data-dir holds them)",
                            measured=False, default="auto", choices=["auto", "on", "off"])
    eval_limit: int = option("finalize", "zero-shot documents per task in finalize (0 = skip)", measured=False, default=20, type=int)
    timing: str = option("finalize", "dense vs pruned timing in finalize", measured=False, default="on", choices=["on", "off"])
    save: str = option("finalize", "write the pruned checkpoint (off: measure only, e.g. a scale check with too little disk)",
                       measured=False, default="on", choices=["on", "off"])
    out: str | None = option("finalize", "run folder (default runs/<run-id>)", measured=False, default=None)
    export: str = option("finalize", "also export the saved checkpoint: comma list of gguf (f16), gguf:bf16, gguf:q8_0, "
                         "gguf:q4_k_m, decilm; each GGUF's perplexity and speed in llama.cpp go in the report",
                         measured=False, default="")

    def __post_init__(self):
        if self.prompt is not None:  # argparse and JSON give lists; a frozen config holds a tuple
            object.__setattr__(self, "prompt", tuple(self.prompt) or None)

    # ---- views
    @classmethod
    def from_args(cls, args) -> "RunConfig":
        """From an argparse namespace (or any object): the fields it has; the others keep their defaults."""
        return cls(**{f.name: getattr(args, f.name) for f in fields(cls) if hasattr(args, f.name)})

    @classmethod
    def from_dict(cls, data: dict) -> "RunConfig":
        """From a stored run (unknown keys of older runs are ignored; missing ones take today's defaults,
        except what replaced an older option, which keeps that run's meaning)."""
        return cls.from_args(argparse.Namespace(**{k: v for k, v in upgraded(data).items() if k in FIELD_NAMES}))

    def to_dict(self) -> dict:
        return asdict(self)

    def resumed(self, stored: dict) -> "RunConfig":
        """This command line's process knobs over the stored run's settings (`--resume`)."""
        stored = upgraded(stored)
        return replace(self, **{f.name: stored[f.name] for f in fields(self) if f.metadata["run"] and f.name in stored})

    def measured(self) -> dict:
        """The settings that change what a search measures (compared across an ablation's processes;
        `--metric auto` as the metric it stands for)."""
        settings = {f.name: getattr(self, f.name) for f in fields(self) if f.metadata["measured"]}
        return settings | {"metric": self.importance_metric}

    @property
    def importance_metric(self) -> str:
        """`--metric auto`: OBS where the least-squares refit runs (measured: 4-8% lower test PPL than
        Wanda-sp at rates 0.35-0.5 on SmolLM2-135M, equal at 0.2; its scores come with the refit table's
        reference pass, which the refit makes anyway), Wanda-sp (the paper's) otherwise."""
        if self.metric != "auto":
            return self.metric
        return "obs" if self.reconstruct == "ls" else "wanda-sp"

    def with_rate_default(self, rate: float = 0.2) -> "RunConfig":
        """Neither --budget nor --rate: the quick preset, a realistic rate for a 135M model."""
        return self if self.budget is not None or self.rate is not None else replace(self, rate=rate)

    def prune_settings(self):
        from pruning.prepare import PruneSettings

        return PruneSettings(metric=self.importance_metric, granularity=self.granularity, gqa=self.gqa, mlp_unit=self.mlp_unit,
                             min_rate=self.min_rate, max_rate=self.max_rate, reconstruct=self.reconstruct,
                             reconstruct_damping=self.reconstruct_damping,
                             calib_data=self.calib_data, calib_samples=self.calib_samples, calib_seqlen=self.calib_seqlen,
                             data_dir=self.data_dir, batch_size=self.batch_size, seed=self.seed)

    def search_settings(self, seed: int | None = None, granularity: str | None = None):
        from evaluation.fidelity import parse_stages
        from graphs.nodes import SearchSettings

        return SearchSettings(population=self.population, generations=self.generations, offspring=self.offspring,
                              crossover_share=self.crossover_share, stages=parse_stages(self.fidelity),
                              patience=self.patience, time_limit_s=60 * self.search_minutes,
                              seed=self.seed if seed is None else seed,
                              granularity=granularity or self.granularity, model_name=self.model)

    def check_values(self) -> None:
        """Numbers the search cannot run with, named before anything loads (a ValueError: exit 2)."""
        for name, value, low in (("--population", self.population, 1), ("--offspring", self.offspring, 1),
                                 ("--generations", self.generations, 0), ("--latency-weight", self.latency_weight, 0),
                                 ("--search-minutes", self.search_minutes, 0),
                                 ("--tool-budget", self.tool_budget, 0), ("--retries", self.retries, 0)):
            if value < low:
                raise ValueError(f"{name} {value}: must be at least {low}")
        if not 0 <= self.crossover_share <= 1:
            raise ValueError(f"--crossover-share {self.crossover_share}: must be between 0 and 1")

    @property
    def max_evals(self) -> int:
        """Candidates a search makes at most (seeds and initializer's, then children)."""
        return 3 + self.population + self.generations * self.offspring

    @property
    def fitness_windows(self) -> int:
        return max(1, self.fitness_tokens // self.fitness_seqlen)


FIELD_NAMES = frozenset(f.name for f in fields(RunConfig))


def upgraded(stored: dict) -> dict:
    """A stored run's settings in today's names. Runs made before --reconstruct had
    --bias-compensation auto|on|off (auto: on with --metric flap) and no refit: they resume as they ran."""
    if "reconstruct" in stored or "bias_compensation" not in stored:
        return stored
    old = stored["bias_compensation"]
    on = old == "on" or (old == "auto" and stored.get("metric") == "flap")
    return {**stored, "reconstruct": "bias" if on else "off"}


GROUP_TITLES = {"model": "model and machine", "budget": "budget (one of)", "pruning": "pruning and calibration",
                "agent": "the LLM agent", "search": "the search's roles and prompts",
                "evolution": "the evolution and its fitness", "workers": "where evaluations run (Ray)",
                "finalize": "finalize: evaluation, timing, outputs"}


def add_options(parser: argparse.ArgumentParser, *groups: str) -> None:
    """The command-line options of these groups, generated from RunConfig's fields, each group under
    its own heading in --help, with its default shown."""
    sections: dict[str, argparse._ArgumentGroup] = {}
    exclusive = None
    for f in fields(RunConfig):
        meta = f.metadata
        if meta["group"] not in groups:
            continue
        if meta["group"] not in sections:
            sections[meta["group"]] = parser.add_argument_group(GROUP_TITLES[meta["group"]])
        target = sections[meta["group"]]
        if meta["group"] == "budget":  # --budget and --rate: one or the other
            exclusive = exclusive or target.add_mutually_exclusive_group()
            target = exclusive
        kw = dict(meta["argparse"])
        help_text = meta["help"]
        if kw.get("action") != "store_true":
            kw["default"] = f.default
            if f.default not in (None, "", ()):
                help_text += " (default: %(default)s)"
        target.add_argument("--" + f.name.replace("_", "-"), help=help_text, **kw)
