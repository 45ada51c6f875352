"""The four roles backed by an LLM. Each method is `(ctx, fallback) -> Proposal`; `agents.roles`
binds the classic operator as the fallback (`with_fallback`), which makes it a plain role.

One call = render prompt -> ask (structured) -> parse -> validate; on failure, retry with the
error shown to the model; when every attempt fails, the classic operator answers instead.
Each attempt becomes a `CallRecord`; the final record says whether the answer was used as is,
repaired, needed a retry, or was replaced (fallback).

Limits (agents/limits.py): each call's answer-token limit is --max-tokens raised to the longest
answer its grammar allows (8 genomes of 80 values need ~1950 tokens); where the backend's context
is known and the prompt plus that answer would not fit, the scored history shows fewer members
(the best first). Short genomes are untouched: the same prompts and requests as before.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Callable

from pruning.genome import Genome, PruningPlan
from pruning.repair import repair

from agents import classic, limits
from agents.chat import ChatBackend
from agents import moves as mv
from agents.parsing import AnswerError, parse_choices, parse_genomes, parse_pairs
from agents.prompting import (
    HISTORY_LIMIT,
    PromptSet,
    answer_format,
    common_fields,
    genome_text,
    history_fields,
    importance_text,
    pct,
)
from agents.proposals import material_repair
from agents.schemas import (
    choices_answer_chars,
    choices_grammar,
    choices_schema,
    genomes_answer_chars,
    genomes_grammar,
    genomes_schema,
    pairs_answer_chars,
    pairs_grammar,
    pairs_schema,
)
from agents.types import CallRecord, Proposal, Role, RoleContext

# Move-based answers: how many options each genome may combine, and how many moves are listed.
MOVES_PER_ITEM = {"initializer": 4, "crosser": 1, "mutator": 3}
MOVES_LISTED = 16
SHIFTS_LISTED = 4  # of them, large layer shifts (pruning/quanta.py); the rest pairwise moves


class LLMRoles:
    """The chat backend, the prompt set and the retry count the four LLM roles share."""

    def __init__(self, backend: ChatBackend, prompts: PromptSet, retries: int = 1, tool_budget: int = 0):
        """tool_budget: tool calls per role call before the answer (0: no tools, structured answers only)."""
        self.backend, self.prompts, self.retries, self.tool_budget = backend, prompts, retries, tool_budget

    # -- the four roles --------------------------------------------------------------------
    def initialize(self, ctx: RoleContext, fallback: Role) -> Proposal:
        fields = {**common_fields(ctx), "importance": importance_text(ctx.layer_importance)}
        parents = [[] for _ in range(ctx.count)]
        if self.prompts.answer == "moves":
            moves = mv.enumerate_moves(ctx, MOVES_LISTED)
            base = classic.uniform_rates(ctx)
            fields |= {"moves": mv.moves_text(ctx, moves), "answer_format": self._choice_format("initializer", ctx.count)}
            uniform = self._on_budget(ctx, base)[0]
            return self._choice_role("initializer", ctx, fields, fallback, parents, len(moves),
                                     lambda k, chosen: mv.apply_moves(ctx, base, moves, chosen),
                                     compared=lambda k: [uniform], what="move numbers")
        fields["answer_format"] = self._format(ctx)
        return self._genome_role("initializer", ctx, fields, fallback, parents)

    def select(self, ctx: RoleContext, fallback: Role) -> Proposal:
        need = self._answer_tokens(pairs_answer_chars(ctx.count))
        prompt, shown = self._render("selector", common_fields(ctx), need, history=ctx, minimum=2)
        prompt, looked, tool_calls = self._look("selector", ctx, prompt, None)

        def decode(text: str):
            pairs, notes = parse_pairs(text, ctx.count, shown)
            return pairs, notes, pairs

        parsed, calls = self._ask("selector", ctx, prompt, pairs_schema(ctx.count), pairs_grammar(ctx.count, shown),
                                  decode, need)
        calls = looked + calls
        if parsed is None:
            result = fallback(ctx)
            result.calls, result.tool_calls = calls + [self._fallback("selector", ctx)], tool_calls
            return result
        pairs, notes, _ = parsed
        if len(pairs) < ctx.count:  # top up from the fallback (tournament selection)
            extra = fallback(replace(ctx, count=ctx.count - len(pairs)))
            pairs += extra.pairs
        calls[-1].notes = [*calls[-1].notes, *notes]  # after any transport note
        calls[-1].outcome = self._final_outcome(calls, bool(notes))
        return Proposal(pairs=pairs, calls=calls, tool_calls=tool_calls)

    def crossover(self, ctx: RoleContext, fallback: Role) -> Proposal:
        pairs = ctx.pairs
        parents_text = "\n".join(
            f"pair {k}: A = {genome_text(ctx.population[a].rates)}  B = {genome_text(ctx.population[b].rates)}"
            for k, (a, b) in enumerate(pairs))
        fields = {**common_fields(ctx), "count": len(pairs), "parents": parents_text}
        keys = [[ctx.population[a].plan_key, ctx.population[b].plan_key] for a, b in pairs]
        sub = replace(ctx, count=len(pairs))
        if self.prompts.answer == "moves":
            options = mv.crossover_options(sub)
            fields |= {"options": mv.options_text(options), "answer_format": self._choice_format("crosser", len(pairs))}

            def child(k, chosen):
                a, b = pairs[k]
                return mv.cross(ctx.population[a].rates, ctx.population[b].rates, options[chosen[0]][1])

            def compared(k):
                return [PruningPlan.from_list(ctx.population[i].plan) for i in pairs[k]]
            return self._choice_role("crosser", sub, fields, fallback, keys, len(options), child, history=ctx,
                                     compared=compared, what="option number")
        fields["answer_format"] = self._format(ctx, len(pairs))
        return self._genome_role("crosser", sub, fields, fallback, keys, history=ctx)

    def mutate(self, ctx: RoleContext, fallback: Role) -> Proposal:
        if ctx.move_space is not None and self.prompts.answer == "moves":
            return self._exact_mutate(ctx, fallback)
        genomes, parent_keys = ctx.genomes, ctx.parent_keys
        listed = "\n".join(f"{k}: {genome_text(list(g.rates))}" for k, g in enumerate(genomes))
        fields = {**common_fields(ctx), "count": len(genomes), "genomes": listed}
        sub, parents = replace(ctx, count=len(genomes)), [[k] for k in parent_keys]
        if self.prompts.answer == "moves":
            moves = mv.enumerate_moves(sub, MOVES_LISTED)
            fields |= {"moves": mv.moves_text(sub, moves), "answer_format": self._choice_format("mutator", len(genomes))}
            plans = ctx.plans  # the parents' plans (the graph's vary node sets them)
            return self._choice_role("mutator", sub, fields, fallback, parents, len(moves),
                                     lambda k, chosen: mv.apply_moves(sub, list(genomes[k].rates), moves, chosen),
                                     history=ctx, compared=lambda k: list(plans[k:k + 1]),
                                     what="move numbers")
        fields["answer_format"] = self._format(ctx, len(genomes))
        return self._genome_role("mutator", sub, fields, fallback, parents, history=ctx)

    def _exact_mutate(self, ctx: RoleContext, fallback: Role) -> Proposal:
        """The mutator picks, for each parent plan, 1 to 3 of a numbered list of exact moves (parameter
        quanta between layers, pruning/quanta.py): its children are on the budget by construction. A
        listed move that does not fit a parent (it would empty a module) is skipped and noted."""
        from pruning.quanta import LayerShift

        plans = ctx.plans
        # parents by their index in the population shown above: the rates are not written twice (on 2
        # CPU cores the prompt's length is most of the call's time: 16 s for 2,100 tokens)
        index = {c.plan_key: i for i, c in enumerate(ctx.population)}
        listed = "\n".join(f"{k}: population member {index[key]}" if key in index else
                            f"{k}: {genome_text(list(g.rates))}" for k, (g, key) in enumerate(zip(ctx.genomes, ctx.parent_keys)))
        fields = {**common_fields(ctx), "count": len(plans), "genomes": listed}
        sub = replace(ctx, count=len(plans))
        moves = ctx.move_space.options(plans[0], ctx.rng, MOVES_LISTED, shifts=SHIFTS_LISTED)
        importance = mv.position_importance(replace(sub, granularity="module"))
        n = ctx.space.num_layers

        def imp(layer, kind):
            return importance[layer if kind == "attn" else n + layer]

        lines = [f"{k}: {move.describe()} (importance {imp(move.layer, move.kind):.2f})" if isinstance(move, LayerShift)
                 else f"{k}: {move.describe()} (importance {imp(move.more, move.more_kind):.2f} -> "
                      f"{imp(move.less, move.less_kind):.2f})" for k, move in enumerate(moves)]
        fields |= {"moves": "\n".join(lines), "answer_format": self._choice_format("mutator", len(plans))}
        per = MOVES_PER_ITEM["mutator"]
        skipped = []

        def decode(text: str):
            chosen, notes = parse_choices(text, sub.count, len(moves), per)
            children = []
            for k, picks in enumerate(chosen):
                plan = plans[k]
                for index in picks:
                    if ctx.move_space.legal(plan, moves[index]):
                        plan = ctx.move_space.apply(plan, moves[index])
                    else:
                        skipped.append(index)
                children.append(plan)
            return children, notes, chosen

        need = self._answer_tokens(choices_answer_chars(sub.count, len(moves), per))
        prompt, _ = self._render("mutator", fields, need, history=ctx)
        prompt, looked, tool_calls = self._look("mutator", ctx, prompt,
                                                lambda tools: tools.for_mutator(ctx, moves))
        parsed, calls = self._ask("mutator", sub, prompt, choices_schema(sub.count, len(moves), per),
                                  choices_grammar(sub.count, len(moves), per), decode, need)
        calls = looked + calls
        if parsed is None:
            result = fallback(ctx)
            result.calls = calls + [self._fallback("mutator", ctx)]
            result.tool_calls = tool_calls
            return result
        children, notes, _ = parsed
        if skipped:
            notes.append(f"{len(skipped)} chosen move(s) did not fit their parent and were skipped")
        unchanged = sum(1 for child, plan in zip(children, plans) if child.key() == plan.key())
        if unchanged:
            notes.append(f"{unchanged} child(ren) equal to their parent")
        result = Proposal(plans=children, plan_origins=["llm:mutator"] * len(children),
                          plan_parents=[[key] for key in ctx.parent_keys[: len(children)]], calls=calls,
                          tool_calls=tool_calls)
        missing = len(plans) - len(children)
        if missing > 0:  # top up with exact random moves
            extra = fallback(replace(ctx, plans=plans[len(children):], genomes=ctx.genomes[len(children):],
                                     parent_keys=ctx.parent_keys[len(children):]))
            result.plans += extra.plans
            result.plan_origins += extra.plan_origins
            result.plan_parents += extra.plan_parents
            notes.append(f"{missing} filled by the classic operator")
        calls[-1].notes = [*calls[-1].notes, *notes]  # after any transport note
        calls[-1].outcome = self._final_outcome(calls, bool(skipped) or bool(unchanged) or missing > 0)
        return result

    # -- shared machinery ------------------------------------------------------------------
    def _format(self, ctx: RoleContext, count: int | None = None) -> str:
        return answer_format(count or ctx.count, self._length(ctx), pct(ctx.budget.average_rate))

    @staticmethod
    def _choice_format(role: str, count: int) -> str:
        per = MOVES_PER_ITEM[role]
        if per == 1:
            return f'Answer with JSON only, exactly {count} lists of one option number each: {{"choices":[[3],[0],...]}}'
        return (f'Answer with JSON only, exactly {count} lists of 1 to {per} move numbers each: '
                f'{{"choices":[[3,7],[1],...]}}')

    @staticmethod
    def _length(ctx: RoleContext) -> int:
        return ctx.space.num_layers * (1 if ctx.granularity == "layer" else 2)

    def _choice_role(self, role: str, ctx: RoleContext, fields: dict, fallback: Role,
                     parents: list[list[str]], options: int, build: Callable[[int, list[int]], list[float]],
                     history: RoleContext | None = None, compared=None, what: str = "move numbers") -> Proposal:
        """Move-based answer: option indices per item, turned into rates by `build(item, chosen)`.
        With tools, a child the model tries is those rates put on the budget (as the answer's will be),
        screened beside `compared(item)` (the plans it comes from)."""
        per = MOVES_PER_ITEM[role]
        candidates = None
        if compared is not None:
            from tools.search_tools import Candidates

            candidates = Candidates(ctx.count, options, per, lambda k, c: self._on_budget(ctx, build(k, c)),
                                    compared, what)

        def decode(text: str):
            chosen, notes = parse_choices(text, ctx.count, options, per)
            return [build(k, c) for k, c in enumerate(chosen)], notes, chosen

        return self._genome_role(role, ctx, fields, fallback, parents, choices_schema(ctx.count, options, per),
                                 choices_grammar(ctx.count, options, per), decode,
                                 choices_answer_chars(ctx.count, options, per), history, candidates)

    def _genome_role(self, role: str, ctx: RoleContext, fields: dict, fallback: Role,
                     parents: list[list[str]], schema: dict | None = None, grammar: str | None = None,
                     decode=None, answer_chars: int | None = None, history: RoleContext | None = None,
                     candidates=None) -> Proposal:
        """`fallback(ctx)` answers when every attempt fails and tops up a short answer; `history`:
        the context whose population the prompt shows as scored history (None: none); `candidates`
        (tools.search_tools.Candidates): what the role's tools may try before it answers."""
        length = self._length(ctx)
        if decode is None:
            schema, grammar = genomes_schema(ctx.count, length), genomes_grammar(ctx.count, length)
            answer_chars = genomes_answer_chars(ctx.count, length)

            def decode(text: str):
                rates, notes = parse_genomes(text, ctx.count, length)
                return rates, notes, rates
        need = self._answer_tokens(answer_chars)
        prompt, _ = self._render(role, fields, need, history=history)
        prompt, looked, tool_calls = self._look(role, ctx, prompt, (lambda tools: tools.for_role(ctx, candidates))
                                                if candidates is not None else None)
        parsed, calls = self._ask(role, ctx, prompt, schema, grammar, decode, need)
        calls = looked + calls
        if parsed is None:
            result = fallback(ctx)
            result.calls, result.tool_calls = calls + [self._fallback(role, ctx)], tool_calls
            return result
        rate_lists, notes, _ = parsed
        genomes = [Genome(ctx.granularity, tuple(rates)) for rates in rate_lists]
        origins = [f"llm:{role}"] * len(genomes)
        parent_lists = parents[: len(genomes)]
        repairs = [repair(g, ctx.space, ctx.budget) for g in genomes]
        keys = [r.plan.key() for r in repairs]
        duplicates = len(keys) - len(set(keys) - ctx.known_keys)
        if duplicates:
            notes.append(f"{duplicates} duplicate(s) of known or sibling configurations")
        repaired = any(material_repair(r.notes) for r in repairs) or duplicates > 0
        if len(genomes) < ctx.count:  # top up with the classic operator's answers
            extra = fallback(ctx)
            missing = ctx.count - len(genomes)
            genomes += extra.genomes[len(genomes):][:missing]
            origins += extra.origins[len(origins):][:missing]
            parent_lists += extra.parents[len(parent_lists):][:missing]
            notes.append(f"{missing} filled by the classic operator")
        calls[-1].notes = [*calls[-1].notes, *notes]  # after any transport note
        calls[-1].outcome = self._final_outcome(calls, repaired or bool(notes))
        return Proposal(genomes=genomes, origins=origins, parents=parent_lists, calls=calls, tool_calls=tool_calls)

    def _look(self, role: str, ctx: RoleContext, prompt: str, make_tools) -> tuple[str, list[CallRecord], list]:
        """Look before leaping: with tools on, the tool phase (agents/tool_loop.py) runs first and what
        the tools returned is written under the prompt of the structured answer. `make_tools(tools)`
        builds this call's tools (None: the selector's, which make no children). Returns (prompt, the
        tool phase's LLM calls, its tool calls)."""
        if self.tool_budget <= 0 or ctx.tools is None:
            return prompt, [], []
        from agents.tool_loop import tool_phase

        tools = make_tools(ctx.tools) if make_tools is not None else ctx.tools.for_role(ctx, None)
        found, looked, tool_calls = tool_phase(self.backend, tools, prompt, self.tool_budget, role, ctx.generation,
                                               self.prompts.name)
        if found:
            prompt = f"{prompt}\n\nWhat your tool calls returned:\n{found}\n\nNow give your final answer."
        return prompt, looked, tool_calls

    @staticmethod
    def _on_budget(ctx: RoleContext, rates: list[float]):
        """Rates put on the budget as the search will (pruning/repair.py): (plan, repair notes)."""
        fixed = repair(Genome(ctx.granularity, tuple(rates)), ctx.space, ctx.budget)
        return fixed.plan, list(fixed.notes)

    def _answer_tokens(self, answer_chars: int) -> int:
        return limits.answer_tokens(answer_chars, bool(getattr(self.backend, "grammar", False)))

    def _render(self, role: str, fields: dict, answer_tokens: int, history: RoleContext | None = None,
                minimum: int = 1) -> tuple[str, int]:
        """The prompt, and how many population members it shows as scored history: as many as
        usual (up to HISTORY_LIMIT), fewer (the best first, never under `minimum`) while the
        prompt and the longest answer would not fit the backend's context."""
        if history is None:
            return self.prompts.render(role, fields), 0
        context = getattr(self.backend, "context", None)
        count = getattr(self.backend, "count_tokens", None)
        shown = min(len(history.population), HISTORY_LIMIT)
        floor = min(shown, minimum)
        while True:
            prompt = self.prompts.render(role, {**fields, **history_fields(history, shown)})
            if shown <= floor or limits.fits(prompt, answer_tokens, context, count):
                return prompt, shown
            shown -= 1

    @staticmethod
    def _final_outcome(calls: list[CallRecord], repaired: bool) -> str:
        if len([c for c in calls if c.outcome != "tools"]) > 1:  # re-prompts (not the tool phase's turns)
            return "retried"
        return "repaired" if repaired else "used"

    def _fallback(self, role: str, ctx: RoleContext) -> CallRecord:
        return CallRecord(role=role, backend="classic", prompt_set=self.prompts.name, attempt=0, outcome="fallback",
                          generation=ctx.generation, notes=["all LLM attempts failed; classic operator used"])

    def _ask(self, role: str, ctx: RoleContext, prompt: str, schema: dict, grammar: str, parse,
             answer_tokens: int = 0):
        """`parse(text)` returns (value, notes, what the model said) or raises AnswerError.
        `answer_tokens`: what the longest valid answer may take; the call's answer limit is
        --max-tokens raised to it."""
        calls: list[CallRecord] = []
        current = prompt
        max_tokens = limits.answer_limit(getattr(self.backend, "max_tokens", 0), answer_tokens)
        for attempt in range(1, self.retries + 2):
            record = CallRecord(role=role, backend=self.backend.name, prompt_set=self.prompts.name, attempt=attempt,
                                outcome="invalid", prompt=current, generation=ctx.generation)
            calls.append(record)
            try:
                answer = self.backend.ask(current, schema=schema, grammar=grammar, max_tokens=max_tokens,
                                          call=f"{role}:g{ctx.generation}:a{attempt}")
            except Exception as err:  # network, timeout, rate limit after the client's own retries: no answer
                record.outcome, record.error = "error", f"{type(err).__name__}: {err}"[:500]
                record.transport_retries = getattr(err, "transport_retries", 0)
                current = prompt
                continue
            record.raw, record.latency_s = answer.text, answer.latency_s
            record.transport_retries = answer.transport_retries
            if answer.transport_retries:
                record.notes = record.notes + [f"retried-transport: {answer.transport_retries} request(s) repeated "
                                               f"(rate limit, server or connection error)"]
            record.prompt_tokens, record.completion_tokens = answer.prompt_tokens, answer.completion_tokens
            try:
                parsed = parse(answer.text)
            except AnswerError as err:
                if getattr(answer, "finish_reason", "") == "length":  # say why: the limit, not the model
                    err = AnswerError(f"the answer was cut off at the token limit ({answer.completion_tokens} tokens, "
                                      f"limit {max_tokens}, finish_reason=length): {err}")
                record.error = str(err)
                current = (f"{prompt}\n\nYour previous answer was rejected: {err}. "
                           "Answer again, following the format exactly.")
                continue
            record.parsed = parsed[2]  # what the model said: genomes, pairs, or a move-based answer's options
            return parsed, calls
        return None, calls
