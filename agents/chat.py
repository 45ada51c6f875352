"""Chat-model backends. Every LLM call goes through langchain-openai's `ChatOpenAI`:

* ``local``              a llama.cpp server (xllamacpp) on 127.0.0.1 serving the embedded
                         SmolLM2-135M-Instruct GGUF (the model prunes itself) or --agent-model;
* ``openai:<model>``     the OpenAI API, key from $OPENAI_API_KEY only (never stored);
* ``<url>[#model]``      any OpenAI-compatible server (vLLM, llama.cpp, ...);
* ``classic``            no LLM: the numeric operators (returns None here).

Structured output: a JSON-schema `response_format`, or for llama.cpp an equivalent GBNF grammar
(compact, bounded numbers; see agents/schemas.py).

Limits: `max_tokens` (--max-tokens) is the answer limit a call gets at least; a call whose answer
can be longer (a long genome) asks for more (`ask(max_tokens=...)`, agents/limits.py). `context`
is the backend's context in tokens where we know it (the local server's n_ctx), else None;
`count_tokens` counts a text's tokens exactly where the server can (llama.cpp's /tokenize).
An answer cut off at the limit comes back with finish_reason "length".

Transport errors (connection, timeout, 429, 5xx) are retried by the OpenAI client with backoff and
counted per call (agents/transport.py); only what still fails after that is an error the roles see.
"""
from __future__ import annotations

import json
import os
import threading
import time
import zlib
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from agents.local_server import LocalLlamaServer, LocalServerError
from agents.transport import TRANSPORT_RETRIES, retry_counter


class AgentError(ValueError):
    pass


_lock = threading.Lock()  # the call counter, when calls run concurrently
# --agent-slots 0 (auto): measured on 2 CPU cores, the crosser's and mutator's calls took 9.5 s at once on
# a 2-slot local server vs 5.6 s one after the other; a remote endpoint has its own capacity
LOCAL_SLOTS, REMOTE_SLOTS = 1, 4


@dataclass
class ChatAnswer:
    text: str
    latency_s: float
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str = ""  # "length": cut off at the answer-token limit
    transport_retries: int = 0  # requests the OpenAI client repeated (429, 5xx, connection): agents/transport.py


@dataclass
class ToolReply:
    message: object  # a LangChain AIMessage: tool_calls, invalid_tool_calls, content
    latency_s: float
    prompt_tokens: int = 0
    completion_tokens: int = 0
    transport_retries: int = 0


@dataclass
class ChatBackend:
    name: str
    chat: object  # a LangChain chat model
    grammar: bool = False  # llama.cpp GBNF grammars accepted
    server: LocalLlamaServer | None = None
    seed: int = 0
    calls: int = field(default=0)
    max_tokens: int = 1024  # the answer limit every call gets at least (--max-tokens)
    context: int | None = None  # the context in tokens, where known (the local server's n_ctx per slot)
    slots: int = 1  # requests it serves at once: independent calls of a generation run concurrently

    def ask(self, prompt: str, schema: dict | None = None, grammar: str | None = None,
            max_tokens: int | None = None, call: str | None = None) -> ChatAnswer:
        """`max_tokens`: this call's answer limit, where it differs from the backend's. `call` names the
        call (role, generation, attempt): its sampling seed, the same whatever runs beside it."""
        from agents.schemas import response_format

        kwargs = {}
        seed = self._seed(call)
        if self.grammar and grammar:
            kwargs["extra_body"] = {"grammar": grammar, "seed": seed}
        else:
            kwargs["seed"] = seed
            if schema is not None:
                kwargs["response_format"] = response_format(schema, "answer")
        if max_tokens is not None and max_tokens != self.max_tokens:
            kwargs["max_tokens"] = max_tokens
        start = time.perf_counter()
        counter = retry_counter()
        counter.reset()
        try:
            message = self.chat.bind(**kwargs).invoke(prompt) if kwargs else self.chat.invoke(prompt)
        except Exception as err:
            err.transport_retries = counter.count  # the call's record says how often it was tried
            raise
        usage = getattr(message, "usage_metadata", None) or {}
        content = message.content if isinstance(message.content, str) else str(message.content)
        finish = (getattr(message, "response_metadata", None) or {}).get("finish_reason") or ""
        return ChatAnswer(content, time.perf_counter() - start, usage.get("input_tokens", 0) or 0,
                          usage.get("output_tokens", 0) or 0, str(finish), counter.count)

    def _seed(self, call: str | None) -> int:
        """One seed per call on every backend, from --seed (an ablation cell sets `seed` to give each seed
        its own stream) and the call's name; unnamed calls count up (--seed + 1, + 2, ...)."""
        with _lock:
            self.calls += 1
            count = self.calls
        return self.seed + (zlib.crc32(call.encode()) % 1_000_003 if call else count)

    def converse(self, messages: list, tools: list, call: str | None = None) -> "ToolReply":
        """One turn of a tool-calling conversation: the model's reply (`tool_calls` or a plain answer)."""
        seed = self._seed(call)
        chat = self.chat.bind_tools(tools)
        counter = retry_counter()
        counter.reset()
        start = time.perf_counter()
        try:
            message = chat.bind(seed=seed).invoke(messages)
        except Exception as err:
            err.transport_retries = counter.count
            raise
        usage = getattr(message, "usage_metadata", None) or {}
        return ToolReply(message, time.perf_counter() - start, usage.get("input_tokens", 0) or 0,
                         usage.get("output_tokens", 0) or 0, counter.count)

    def count_tokens(self, text: str) -> int | None:
        """The served model's token count of `text` (no chat template), or None where unknown."""
        if self.server is None:
            return None
        url = self.server.base_url.removesuffix("/v1") + "/tokenize"
        request = urllib.request.Request(url, data=json.dumps({"content": text}).encode(),
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return len(json.loads(response.read())["tokens"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def close(self) -> None:
        if self.server is not None:
            self.server.stop()


def _chat_openai(**kwargs):
    from langchain_openai import ChatOpenAI

    return ChatOpenAI(**kwargs)


def _probe(base_url: str, api_key: str, timeout: float = 5.0) -> None:
    request = urllib.request.Request(base_url.rstrip("/") + "/models", headers={"Authorization": f"Bearer {api_key}"})
    try:
        urllib.request.urlopen(request, timeout=timeout).close()
    except urllib.error.HTTPError:
        return  # it answered (even 401/404 means a server is there)
    except (OSError, ValueError) as err:
        raise AgentError(f"agent server {base_url} is unreachable ({type(err).__name__}: {err}); "
                         "start it, fix --agent, or use --agent local / classic") from None


def make_backend(spec: str, agent_model: str | None = None, temperature: float = 1.0, max_tokens: int = 1024,
                 timeout: float = 180.0, seed: int = 0, threads: int | None = None,
                 context: int | None = None, slots: int = 0) -> ChatBackend | None:
    """`max_tokens`: the answer limit every call gets at least (calls with longer answers ask for
    more); `context`: the local server's n_ctx (None: the model's training context, 4096..8192)."""
    # transport errors (429, 5xx, connection, timeout) are retried by the client with backoff; a malformed
    # answer is re-prompted by the roles (--retries): two different things, recorded apart
    common = dict(temperature=temperature, max_tokens=max_tokens, timeout=timeout, max_retries=TRANSPORT_RETRIES)
    if spec == "classic":
        return None
    if slots <= 0:  # auto: the local server on this machine's cores serves one call faster than two at once
        slots = LOCAL_SLOTS if spec == "local" else REMOTE_SLOTS  # (BENCHMARKS.md, agent calls)
    if spec == "local":
        from pruning.loading import embedded_gguf_path

        gguf = Path(agent_model) if agent_model else embedded_gguf_path()
        try:
            server = LocalLlamaServer(gguf, threads=threads, ctx=context, slots=slots).start()
        except LocalServerError as err:
            raise AgentError(str(err)) from None
        chat = _chat_openai(base_url=server.base_url, api_key="none", model=gguf.stem, **common)
        return ChatBackend(name=f"local:{gguf.name}", chat=chat, grammar=True, server=server, seed=seed,
                           max_tokens=max_tokens, context=server.ctx, slots=server.slots)
    if spec.startswith("openai:"):
        model = spec.split(":", 1)[1]
        if not model:
            raise AgentError("--agent openai:<model> needs a model name, e.g. openai:gpt-4o-mini")
        if not os.environ.get("OPENAI_API_KEY"):
            raise AgentError("--agent openai:... needs the OPENAI_API_KEY environment variable (it is never stored)")
        return ChatBackend(name=spec, chat=_chat_openai(model=model, **common), seed=seed,
                           max_tokens=max_tokens, slots=slots)
    if spec.startswith(("http://", "https://")):
        url, _, model = spec.partition("#")
        api_key = os.environ.get("OPENAI_API_KEY", "none")
        _probe(url, api_key)
        chat = _chat_openai(base_url=url, api_key=api_key, model=model or "default", **common)
        return ChatBackend(name=url + (f"#{model}" if model else ""), chat=chat, seed=seed, max_tokens=max_tokens,
                           slots=slots)
    raise AgentError(f"unknown --agent {spec!r}: use local, classic, openai:<model>, or an http(s) URL[#model]")
