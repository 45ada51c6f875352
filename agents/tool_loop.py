"""A role that looks before it leaps: LangChain's tool-calling loop (`bind_tools`) ahead of the
role's structured answer.

The model sees its usual prompt and the tools (tools/search_tools.py); each round it may call some
of them, and every call is executed and its result handed back (`ToolMessage`), until it answers
without a tool call, the rounds are over or the call budget is spent. A bad call — an unknown tool,
arguments that do not fit the schema or that the tool refuses, a call over the budget — comes back
to the model as an error message, never as a crash, and is recorded as invalid. What the tools
returned is then written under the prompt of the role's ordinary structured call (same schema or
grammar as without tools), so every backend's final answer is checked as before.

Every tool call is a `ToolCall` (role, tool, arguments, result or error, seconds) that the graph
stores in `run.db` (`tool_calls`) and `replay` shows with the agent calls.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass

from agents.types import CallRecord

ROUNDS = 3  # model turns in the tool phase
RESULT_CHARS = 700  # a tool result as the transcript shows it

INSTRUCTIONS = ("\n\nBefore answering you may call the tools you were given, at most {budget} calls in all, to "
                "look before you leap (e.g. screen candidate children, check per-layer sensitivity). When you "
                "have seen enough, reply without a tool call.")


@dataclass
class ToolCall:
    role: str
    generation: int
    tool: str
    arguments: str  # JSON, as the model sent them
    result: str = ""
    error: str = ""
    seconds: float = 0.0
    valid: bool = True

    def to_dict(self) -> dict:
        return asdict(self)


def tool_phase(backend, tools: list, prompt: str, budget: int, role: str, generation: int,
               prompt_set: str = "") -> tuple[str, list[CallRecord], list[ToolCall]]:
    """Returns (what the tools returned, as text for the answer's prompt; the LLM calls; the tool calls)."""
    from langchain_core.messages import HumanMessage, ToolMessage

    by_name = {tool.name: tool for tool in tools}
    messages = [HumanMessage(prompt + INSTRUCTIONS.format(budget=budget))]
    records: list[CallRecord] = []
    calls: list[ToolCall] = []
    for turn in range(1, ROUNDS + 1):
        record = CallRecord(role=role, backend=backend.name, prompt_set=prompt_set, attempt=turn, outcome="tools",
                            prompt=messages[0].content if turn == 1 else "", generation=generation)
        records.append(record)
        try:
            reply = backend.converse(messages, tools, call=f"{role}:g{generation}:tools{turn}")
        except Exception as err:  # no answer after the client's transport retries: go on without tools
            record.error = f"{type(err).__name__}: {err}"[:500]  # outcome stays "tools": not an answer attempt
            record.transport_retries = getattr(err, "transport_retries", 0)
            break
        message = reply.message
        record.latency_s, record.transport_retries = reply.latency_s, reply.transport_retries
        record.prompt_tokens, record.completion_tokens = reply.prompt_tokens, reply.completion_tokens
        requested = list(message.tool_calls or []) + [
            {"name": bad.get("name") or "", "args": bad.get("args") or "", "id": bad.get("id") or "",
             "error": bad.get("error") or "arguments are not valid JSON"}
            for bad in (getattr(message, "invalid_tool_calls", None) or [])]
        record.raw = json.dumps({"content": message.content if isinstance(message.content, str) else str(message.content),
                                 "tool_calls": [{"name": c["name"], "args": c["args"]} for c in requested]},
                                default=str)[:4000]
        if not requested:
            break
        messages.append(message)
        for request in requested:
            call = _execute(request, by_name, budget - len(calls), role, generation)
            calls.append(call)
            messages.append(ToolMessage(content=call.result or f"error: {call.error}",
                                        tool_call_id=request.get("id") or f"call-{len(calls)}"))
        record.notes = [f"{len(requested)} tool call(s)"]
        if len(calls) >= budget:
            break
    return transcript(calls), records, calls


def _execute(request: dict, by_name: dict, left: int, role: str, generation: int) -> ToolCall:
    name, args = request.get("name") or "", request.get("args")
    call = ToolCall(role, generation, name, args if isinstance(args, str) else json.dumps(args, default=str))
    started = time.perf_counter()
    if left <= 0:
        call.error, call.valid = "the tool-call budget is spent: give your final answer now", False
    elif request.get("error"):
        call.error, call.valid = f"malformed call: {request['error']}"[:300], False
    elif name not in by_name:
        call.error, call.valid = f"unknown tool {name!r}; the tools are {', '.join(sorted(by_name))}", False
    else:
        try:
            result = by_name[name].invoke(args if isinstance(args, dict) else {})
            call.result = json.dumps(result, default=str)
        except Exception as err:  # bad arguments (schema or range): the model is told, the run goes on
            call.error, call.valid = f"{type(err).__name__}: {err}"[:300], False
    call.seconds = time.perf_counter() - started
    return call


def transcript(calls: list[ToolCall]) -> str:
    lines = [f"- {c.tool}({c.arguments}) -> " + (c.result[:RESULT_CHARS] if c.valid else f"error: {c.error}")
             for c in calls]
    return "\n".join(lines)


def decide_tools(setting: str, backend) -> tuple[bool, str]:
    """--agent-tools auto|on|off for this backend: (on, why), the reason recorded with the run."""
    if backend is None:
        return False, "no LLM roles"
    if setting == "off":
        return False, "--agent-tools off"
    if setting == "on":
        return True, "--agent-tools on"
    if backend.server is not None and backend.name.startswith("local:") and "smollm2" in backend.name.lower():
        return False, ("the embedded SmolLM2-135M made no tool call in 3 tool turns (BENCHMARKS.md, agent calls); "
                       "--agent-tools on to try")
    ok, detail = probe_tools(backend)
    return ok, detail


def probe_tools(backend) -> tuple[bool, str]:
    """One request with one tool the model is asked to call: does the answer carry a tool call?"""
    from langchain_core.messages import HumanMessage
    from langchain_core.tools import StructuredTool

    def ping(text: str) -> str:
        return text

    tool = StructuredTool.from_function(ping, name="ping", description="Echo the text back.")
    try:
        reply = backend.converse([HumanMessage("Call the ping tool with the text 'ok'.")], [tool])
    except Exception as err:
        return False, f"the backend refused a tool-call probe ({type(err).__name__}: {str(err)[:120]})"
    if reply.message.tool_calls:
        return True, "the backend answered a tool-call probe with a tool call"
    return False, "the backend answered a tool-call probe without a tool call"

