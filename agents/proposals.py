"""Every proposed genome, whatever proposed it, passes the same gate: deterministic repair onto
the budget and bounds, then de-duplication against the population, the fitness cache and the
batch itself (a duplicate is nudged by a level-switch mutation until it is new)."""
from __future__ import annotations

from pruning.genome import Genome
from pruning.repair import RepairResult, repair

from agents import classic
from agents.types import Candidate, RoleContext

MAX_NUDGES = 20


def to_candidates(ctx: RoleContext, genomes: list[Genome], origins: list[str], parents: list[list[str]],
                  plans: list | None = None, plan_origins: list[str] | None = None,
                  plan_parents: list[list[str]] | None = None) -> list[Candidate]:
    """Genomes are repaired onto the budget; `plans` (exact answers) are on it already and only
    de-duplicated (a duplicate is moved by one more exact move until it is new)."""
    seen = set(ctx.known_keys)
    out = []
    for plan, origin, parent_keys in zip(plans or [], plan_origins or [], plan_parents or []):
        notes, nudges = [], 0
        while plan.key() in seen and nudges < MAX_NUDGES and ctx.move_space is not None:
            nudges += 1
            plan, _ = ctx.move_space.mutate(plan, ctx.rng, 1)
        if nudges:
            notes.append(f"duplicate: moved {nudges}x more")
        if plan.key() in seen:
            continue
        seen.add(plan.key())
        out.append(candidate_from_plan(ctx, plan, origin, parent_keys, notes))
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


def candidate_from_plan(ctx: RoleContext, plan, origin: str, parents: list[str] | None = None,
                        notes: list[str] | None = None) -> Candidate:
    """A population member from an exact plan (on the budget already)."""
    genome = ctx.space.realised_genome(plan, ctx.granularity)
    return Candidate(rates=list(genome.to_list()), granularity=ctx.granularity, plan_key=plan.key(),
                     plan=plan.to_list(), total_params=ctx.space.total_params(plan),
                     block_params=ctx.space.block_params(plan), origin=origin, generation=ctx.generation,
                     parents=list(parents or []), notes=list(notes or []))


def proposal_candidates(ctx: RoleContext, result) -> list[Candidate]:
    """Every genome and every exact plan a role's Proposal holds, as candidates."""
    return to_candidates(ctx, result.genomes, result.origins, result.parents, result.plans, result.plan_origins,
                         result.plan_parents)


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
