"""Prompt sets: load, check fields, render. The text lives in prompts/<set>/<role>.md."""
from __future__ import annotations

import json
import random
import string
from dataclasses import dataclass
from pathlib import Path

from agents.types import ROLES, Candidate, RoleContext

PROMPTS_ROOT = Path(__file__).resolve().parent.parent / "prompts"
COMMON_FIELDS = {"model_name", "num_layers", "budget", "average_rate", "min_rate", "max_rate", "count",
                 "granularity_note"}
HISTORY_FIELDS = {"population", "population_unsorted"}
ROLE_FIELDS = {
    "initializer": COMMON_FIELDS | {"importance", "answer_format"},
    "selector": COMMON_FIELDS | HISTORY_FIELDS,
    "crosser": COMMON_FIELDS | HISTORY_FIELDS | {"parents", "answer_format"},
    "mutator": COMMON_FIELDS | HISTORY_FIELDS | {"genomes", "answer_format"},
}
# Answer schemas a set may declare in its set.json ({"answer": "moves"}); "genomes" is the default.
ANSWERS = ("genomes", "moves")
MOVE_FIELDS = {"initializer": {"moves"}, "selector": set(), "crosser": {"options"}, "mutator": {"moves"}}


def role_fields(role: str, answer: str) -> set[str]:
    return ROLE_FIELDS[role] | (MOVE_FIELDS[role] if answer == "moves" else set())


class PromptError(ValueError):
    pass


@dataclass(frozen=True)
class PromptSet:
    name: str
    templates: dict[str, str]
    answer: str = "genomes"  # "moves": the LLM picks numbered options instead of writing genomes

    @classmethod
    def load(cls, directory: str | Path | None = None, overrides: dict[str, str] | None = None) -> "PromptSet":
        """`directory`: a set folder or a set name under prompts/ (default: prompts/default)."""
        folder = Path(directory) if directory else PROMPTS_ROOT / "default"
        if directory and not folder.is_dir() and (PROMPTS_ROOT / str(directory)).is_dir():
            folder = PROMPTS_ROOT / str(directory)
        if not folder.is_dir():
            raise PromptError(f"prompt set {directory} is not a folder (expected {', '.join(r + '.md' for r in ROLES)})")
        templates = {}
        for role in ROLES:
            path = Path(overrides[role]) if overrides and role in overrides else folder / f"{role}.md"
            if not path.is_file():
                raise PromptError(f"prompt for role {role!r} not found: {path}")
            templates[role] = path.read_text(encoding="utf-8")
        for role in overrides or {}:
            if role not in ROLES:
                raise PromptError(f"--prompt {role}=...: unknown role; roles are {', '.join(ROLES)}")
        answer = "genomes"
        manifest = folder / "set.json"
        if manifest.is_file():
            try:
                answer = json.loads(manifest.read_text(encoding="utf-8")).get("answer", "genomes")
            except (json.JSONDecodeError, AttributeError) as err:
                raise PromptError(f"{manifest}: not a JSON object ({err})") from None
            if answer not in ANSWERS:
                raise PromptError(f"{manifest}: unknown answer schema {answer!r}; use one of {', '.join(ANSWERS)}")
        prompt_set = cls(name=folder.name if not overrides else f"{folder.name}+{'+'.join(sorted(overrides))}",
                         templates=templates, answer=answer)
        prompt_set.check()
        return prompt_set

    def check(self) -> None:
        for role, text in self.templates.items():
            try:
                names = {field for _, field, _, _ in string.Formatter().parse(text) if field is not None}
            except ValueError as err:
                raise PromptError(f"prompt for {role}: bad template ({err}); write {{{{ and }}}} for literal braces") from None
            allowed = role_fields(role, self.answer)
            unknown = {n.split(".")[0].split("[")[0] for n in names} - allowed
            if "" in unknown:
                raise PromptError(f"prompt for {role}: empty {{}} field; write {{{{ and }}}} for literal braces")
            if unknown:
                raise PromptError(f"prompt for {role} uses unknown variable(s) {sorted(unknown)}; "
                                  f"available with answer schema {self.answer!r}: {sorted(allowed)}")

    def render(self, role: str, fields: dict) -> str:
        return self.templates[role].format(**fields)


# -- field values ------------------------------------------------------------------------------

def pct(rate: float) -> int:
    return int(round(rate * 100))


def genome_text(rates: list[float]) -> str:
    return "[" + ",".join(str(pct(r)) for r in rates) + "]"


HISTORY_LIMIT = 20  # population members shown as scored history (fewer when a long genome would not fit)


def population_text(population: list[Candidate], limit: int = HISTORY_LIMIT) -> str:
    lines = []
    for i, cand in enumerate(population[:limit]):
        fitness = "?" if cand.fitness is None else f"{cand.fitness:.3f}"
        latency = "" if cand.latency is None else f" | latency {cand.latency:.2f} of dense"  # --latency-weight
        lines.append(f"{i}: {fitness}{latency} | {genome_text(cand.rates)}")
    return "\n".join(lines)


def unsorted_population_text(population: list[Candidate], rng: random.Random, limit: int = HISTORY_LIMIT) -> str:
    """The same members and indices as `population_text`, in random order (the no-history ablation)."""
    lines = population_text(population, limit).splitlines()
    rng.shuffle(lines)
    return "\n".join(lines)


def history_fields(ctx: RoleContext, limit: int = HISTORY_LIMIT) -> dict:
    """The best `limit` members, sorted and shuffled (indices 0..limit-1 either way)."""
    # A separate generator: shuffling must not shift the role's own random draws.
    order_rng = random.Random(f"{ctx.generation}:{len(ctx.population)}:{ctx.count}")
    return {"population": population_text(ctx.population, limit),
            "population_unsorted": unsorted_population_text(ctx.population, order_rng, limit)}


def importance_text(importance: list[tuple[float, float]]) -> str:
    return "\n".join(f"layer {i}: attention {a:.2f}, mlp {m:.2f}" for i, (a, m) in enumerate(importance))


def common_fields(ctx: RoleContext) -> dict:
    n = ctx.space.num_layers
    if ctx.granularity == "layer":
        note = f"One configuration = {n} integers: the pruning rate (%) of layer 0, 1, ..., {n - 1}."
    else:
        note = (f"One configuration = {2 * n} integers: first the attention pruning rates (%) of layers 0..{n - 1}, "
                f"then the MLP pruning rates (%) of layers 0..{n - 1}.")
    return {
        "model_name": ctx.model_name or "the model", "num_layers": n, "budget": ctx.budget.description,
        "average_rate": pct(ctx.budget.average_rate), "min_rate": pct(ctx.space.min_rate),
        "max_rate": pct(ctx.space.max_rate), "count": ctx.count, "granularity_note": note,
    }


def answer_format(count: int, length: int, average: int) -> str:
    example = ",".join([str(average)] * min(length, 4))
    return (f'Answer with JSON only, exactly {count} lists of {length} integers: '
            f'{{"genomes":[[{example},...],...]}}')


def prompt_overrides(items: list[str] | None) -> dict[str, str]:
    """`--prompt ROLE=FILE` items as {role: file}."""
    overrides = {}
    for item in items or []:
        role, sep, path = item.partition("=")
        if not sep:
            raise ValueError(f"--prompt {item!r}: use ROLE=FILE, e.g. --prompt mutator=my_mutator.md")
        overrides[role] = path
    return overrides
