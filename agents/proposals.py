"""Every proposed genome, whatever proposed it, passes the same gate: deterministic repair onto
the budget and bounds, then de-duplication against the population, the fitness cache and the
batch itself (a duplicate is nudged by a level-switch mutation until it is new)."""
from __future__ import annotations

from pruning.genome import Genome
from pruning.repair import RepairResult, repair

from agents import classic
from agents.types import Candidate, RoleContext

MAX_NUDGES = 20


def to_candidates(ctx: RoleContext, genomes: list[Genome], origins: list[str], parents: list[list[str]]) -> list[Candidate]:
    seen = set(ctx.known_keys)
    out = []
    for genome, origin, parent_keys in zip(genomes, origins, parents):
        result = repair(genome, ctx.space, ctx.budget)
        notes = list(result.notes)
        nudges = 0
        while result.plan.key() in seen and nudges < MAX_NUDGES:
            nudges += 1
            nudged = Genome(genome.granularity, tuple(classic.level_switch(ctx, list(result.genome.rates))))
            result = repair(nudged, ctx.space, ctx.budget)
        if nudges:
            notes.append(f"duplicate: nudged {nudges}x by level-switch mutation")
        if result.plan.key() in seen:
            continue  # the space around it is exhausted; drop rather than evaluate twice
        seen.add(result.plan.key())
        out.append(candidate_from(result, origin, ctx.generation, parent_keys, notes))
    return out


def candidate_from(result: RepairResult, origin: str, generation: int, parents: list[str] | None = None,
                   notes: list[str] | None = None) -> Candidate:
    """A population member from a repaired genome (not yet evaluated)."""
    return Candidate(
        rates=list(result.genome.to_list()), granularity=result.genome.granularity, plan_key=result.plan.key(),
        plan=result.plan.to_list(), total_params=result.total_params, block_params=result.block_params,
        origin=origin, generation=generation, parents=list(parents or []),
        notes=list(result.notes if notes is None else notes),
    )


def material_repair(notes: list[str]) -> bool:
    """Did repair change the answer's substance (beyond the usual small shift onto the budget)?"""
    for note in notes:
        if "non-finite" in note or "clipped" in note or "duplicate" in note:
            return True
        if "shifted by" in note:
            try:
                if abs(float(note.split("shifted by")[1].split()[0])) > 0.02:
                    return True
            except (IndexError, ValueError):
                return True
    return False
