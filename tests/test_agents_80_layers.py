"""Agents at 80 layers: an 80-value genome (160 at module granularity) fits the prompt and answer
limits of the backend, so answers are used, not cut off into fallbacks.

Token counts are bounds (agents/limits.py: at most one token per UTF-8 byte), so a check here
that passes holds for the real tokenizer too; the integration test shows the real local agent
answering every role on an 80-layer space.
"""
import random
import re
from dataclasses import replace

import pytest
from langchain_core.messages import AIMessage

from agents import classic, limits
from agents.chat import ChatAnswer, ChatBackend, make_backend
from agents.roles import make_roles
from agents.local_server import DEFAULT_CTX, auto_context, gguf_context_length
from agents.prompting import PromptSet
from agents.proposals import to_candidates
from agents.schemas import genomes_answer_chars
from agents.types import Candidate, RoleContext
from pruning.budget import budget_from_args
from pruning.shape import LayerShape, ModelShape
from pruning.space import PruningSpace

USER_MAX_TOKENS = 1024  # the CLI's --max-tokens default
HISTORY_LINE = re.compile(r"^\d+: (?:[\d.]+|\?) \| \[", re.M)


def embedded_context() -> int:
    """The context `make_backend("local")` gives the embedded model's server."""
    from pruning.loading import embedded_gguf_path

    return auto_context(embedded_gguf_path())


def make_space(layers: int) -> PruningSpace:
    shape = ModelShape(hidden_size=64, head_dim=8, vocab_size=128, tie_word_embeddings=False,
                       layers=(LayerShape(8, 2, 256),) * layers)
    return PruningSpace(shape, mlp_unit=16)


class Space:
    """An 80-layer (or any) tiny Llama search space with a scored population of 8."""

    def __init__(self, layers: int, granularity: str, size: int = 8, seed: int = 0):
        self.space, self.granularity = make_space(layers), granularity
        self.budget = budget_from_args(self.space.shape, None, 0.2, self.space.min_total_params(granularity))
        rng = random.Random(seed)
        self.importance = [(rng.uniform(0.5, 1.5), rng.uniform(0.5, 1.5)) for _ in range(layers)]
        ctx = self.context(size, [], generation=0)
        init = classic.initialize(ctx)
        self.population = to_candidates(ctx, init.genomes, init.origins, init.parents)
        for cand in self.population:
            cand.fitness = round(rng.uniform(20.0, 900.0), 3)
        self.population.sort(key=lambda c: c.fitness)

    def context(self, count: int, population: list[Candidate] | None = None, generation: int = 1) -> RoleContext:
        population = self.population if population is None else population
        return RoleContext(space=self.space, budget=self.budget, granularity=self.granularity, population=population,
                           count=count, generation=generation, rng=random.Random(f"test:{generation}:{count}"),
                           known_keys={c.plan_key for c in population}, model_name="tiny-llama-80",
                           layer_importance=self.importance)

    @property
    def values(self) -> int:
        return self.space.num_layers * (1 if self.granularity == "layer" else 2)


def call_every_role(roles: dict, s: Space, initial: int = 8, offspring: int = 8) -> dict:
    """One call per role, with the search's counts: `initial` genomes, `offspring` pairs, half
    of them crossed, half mutated."""
    results = {"initializer": roles["initializer"](s.context(initial, []))}
    results["selector"] = roles["selector"](s.context(offspring))
    pairs = results["selector"].pairs
    cross, mutate = pairs[: offspring // 2], pairs[offspring // 2:]
    results["crosser"] = roles["crosser"](replace(s.context(len(cross)), pairs=cross))
    chosen = [s.population[a] for a, _ in mutate]
    results["mutator"] = roles["mutator"](replace(s.context(len(chosen)), genomes=[c.genome for c in chosen],
                                                  parent_keys=[c.plan_key for c in chosen]))
    return results


# -- unit: the limits, no server -------------------------------------------------------------

class Recorder(ChatBackend):
    """Answers every call with the longest answer its schema allows (two-digit numbers), and
    records what each call asked for."""

    def __init__(self, context: int | None, grammar: bool = True):
        super().__init__(name="recorder", chat=None, grammar=grammar, max_tokens=USER_MAX_TOKENS, context=context)
        self.asked: list[dict] = []

    def ask(self, prompt, schema=None, grammar=None, max_tokens=None, call=None):
        items = next(iter(schema["properties"].values()))
        count, key = items["minItems"], next(iter(schema["properties"]))
        if key == "genomes":
            length = items["items"]["minItems"]
            text = '{"genomes":[' + ",".join("[" + ",".join(["55"] * length) + "]" for _ in range(count)) + "]}"
        elif key == "pairs":
            text = '{"pairs":[' + ",".join(f"[{k % 2},{1 - k % 2}]" for k in range(count)) + "]}"
        else:
            text = '{"choices":[' + ",".join(["[0]"] * count) + "]}"
        self.asked.append({"prompt": prompt, "max_tokens": max_tokens, "answer": text})
        return ChatAnswer(text, 0.0)


@pytest.mark.parametrize("layers,granularity", [(80, "layer"), (80, "module")])
@pytest.mark.parametrize("prompt_set", ["default", "moves", "no-history", "no-importance", "diverse"])
def test_80_layer_prompts_and_answers_fit_the_local_context(layers, granularity, prompt_set):
    context = embedded_context()
    assert context == 8192  # SmolLM2-135M's training context, read from the embedded GGUF
    s = Space(layers, granularity)
    backend = Recorder(context)
    prompts = PromptSet.load(prompt_set)
    results = call_every_role(make_roles(backend, prompts, retries=0), s)
    for role, result in results.items():
        assert result.calls[-1].outcome in ("used", "repaired"), (role, result.calls[-1])
    for asked in backend.asked:
        answer = len(asked["answer"].encode())  # tokens <= bytes
        need = limits.answer_tokens(answer, grammar=True)
        assert answer <= asked["max_tokens"], "the answer limit is below the answer"
        assert limits.prompt_tokens(asked["prompt"]) + need <= context, "prompt + answer exceed the context"
    selector = backend.asked[1]
    assert len(HISTORY_LINE.findall(selector["prompt"])) == 8  # the selector still sees everyone
    if prompts.answer == "genomes":
        needed = genomes_answer_chars(8, s.values)
        assert needed > USER_MAX_TOKENS  # before: --max-tokens 1024 cut this answer off
        assert backend.asked[0]["max_tokens"] >= needed  # after: the limit follows the genome length


def test_160_values_shrink_only_the_history_that_would_not_fit():
    s = Space(80, "module")
    backend = Recorder(embedded_context())
    call_every_role(make_roles(backend, PromptSet.load(), retries=0), s)
    shown = {k: len(HISTORY_LINE.findall(a["prompt"])) for k, a in zip(("init", "sel", "cross", "mut"), backend.asked)}
    assert shown["sel"] == 8
    assert 1 <= shown["cross"] < 8  # 8 x 160 values of history + 4 pairs of parents: only the best few fit
    best = [line for line in backend.asked[1]["prompt"].splitlines() if HISTORY_LINE.match(line)]
    assert all(line in backend.asked[2]["prompt"] for line in best[: shown["cross"]])  # the best first
    # an exact counter (the local server's /tokenize) is used where there is one: prose takes
    # fewer tokens than bytes, so more history fits
    counted = Recorder(embedded_context())
    counted.count_tokens = lambda text: len(text.encode()) * 9 // 10
    call_every_role(make_roles(counted, PromptSet.load(), retries=0), s)
    assert shown["cross"] < len(HISTORY_LINE.findall(counted.asked[2]["prompt"])) < 8
    for asked in counted.asked:
        need = limits.answer_tokens(len(asked["answer"]), grammar=True)
        assert limits.prompt_tokens(asked["prompt"], counted.count_tokens) + need <= counted.context


@pytest.mark.parametrize("granularity", ["layer", "module"])
def test_30_layers_ask_as_before(granularity):
    """The embedded model's own 30 layers: the prompts are those of a backend with no context
    limit (nothing shortened), and layer granularity asks for no more than --max-tokens."""
    s = Space(30, granularity)
    limited, unlimited = Recorder(embedded_context()), Recorder(None)
    for backend in (limited, unlimited):
        call_every_role(make_roles(backend, PromptSet.load(), retries=0), s)
    assert [a["prompt"] for a in limited.asked] == [a["prompt"] for a in unlimited.asked]
    assert all(len(HISTORY_LINE.findall(a["prompt"])) == 8 for a in limited.asked[1:])
    if granularity == "layer":
        assert all(a["max_tokens"] == USER_MAX_TOKENS for a in limited.asked)
    else:  # 8 x 60 values need ~1470 tokens: before, --max-tokens 1024 cut the initializer off
        assert limited.asked[0]["max_tokens"] > USER_MAX_TOKENS


def test_the_answer_limit_is_bound_only_when_raised():
    bound: list[dict] = []

    class Chat:
        def bind(self, **kwargs):
            bound.append(kwargs)
            return self

        def invoke(self, prompt):
            return AIMessage(content="{}", response_metadata={"finish_reason": "length"})

    backend = ChatBackend(name="stub", chat=Chat(), grammar=True, max_tokens=1024)
    answer = backend.ask("p", grammar="root ::= x", max_tokens=1024)
    assert "max_tokens" not in bound[-1] and answer.finish_reason == "length"
    backend.ask("p", grammar="root ::= x", max_tokens=2000)
    assert bound[-1]["max_tokens"] == 2000


def test_a_cut_off_answer_says_so():
    class Cut(ChatBackend):
        def ask(self, prompt, schema=None, grammar=None, max_tokens=None, call=None):
            return ChatAnswer('{"genomes":[[20,2', 0.0, 10, max_tokens, finish_reason="length")

    s = Space(80, "layer")
    roles = make_roles(Cut(name="cut", chat=None, grammar=True), PromptSet.load(), retries=1)
    result = roles["initializer"](s.context(2, []))
    assert result.calls[-1].outcome == "fallback"
    assert all("finish_reason=length" in c.error for c in result.calls[:-1])


def test_context_from_the_gguf_header(tmp_path):
    from pruning.loading import embedded_gguf_path

    assert gguf_context_length(embedded_gguf_path()) == 8192
    other = tmp_path / "x.gguf"
    other.write_bytes(b"not a gguf file")
    assert gguf_context_length(other) is None and auto_context(other) == DEFAULT_CTX


# -- integration: the real local agent on an 80-layer space ------------------------------------

@pytest.mark.integration
def test_local_agent_answers_every_role_at_80_layers():
    """The CLI's agent defaults (--max-tokens 1024, the server's context from the GGUF), 8 initial
    genomes of 80 values, a scored population of 8, one crossover and one mutation (~95 s on 2
    idle cores: the initializer writes ~1850 tokens)."""
    s = Space(80, "layer")
    backend = make_backend("local", max_tokens=USER_MAX_TOKENS, seed=0)
    try:
        assert backend.context == 8192
        results = call_every_role(make_roles(backend, PromptSet.load(), retries=1), s, initial=8, offspring=2)
    finally:
        backend.close()
    for role, result in results.items():
        final = result.calls[-1]
        assert final.outcome in ("used", "repaired", "retried"), (role, [(c.outcome, c.error) for c in result.calls])
        for call in result.calls:
            assert not re.search(r"length|finish_reason|context|exceed", call.error), (role, call.error)
            # the real tokenizer's counts stay under the bounds the limits are sized with
            assert 0 < call.prompt_tokens <= limits.text_tokens(call.prompt) + limits.CHAT_OVERHEAD
            assert call.prompt_tokens + call.completion_tokens <= backend.context
    init = results["initializer"].calls[-1]
    assert init.completion_tokens > USER_MAX_TOKENS  # 8 x 80 values: --max-tokens 1024 cut this off before
    assert init.completion_tokens <= genomes_answer_chars(8, 80)
    assert len(results["initializer"].genomes) == 8
    assert all(len(g.rates) == 80 for r in results.values() for g in r.genomes)
