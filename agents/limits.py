"""Token limits: every call's prompt and answer must fit the backend's context and answer limit.

Counts are exact or *bounds*, never estimates, so a check that passes holds. Prompts are counted
by the backend where it can (the local llama.cpp server's /tokenize); elsewhere, and for answers,
by bytes: the tokenizers of the models we serve (SmolLM2, Llama, GPT) are byte-level BPE or
SentencePiece with byte fallback, where every token covers at least one byte, so a text of n
UTF-8 bytes is at most n tokens. Genomes are written as integer percentages whose digits these
tokenizers split one per token ("20," = 3 tokens = 3 bytes), so for genome-heavy text the bound
is tight; for prose it is ~2x.

Measured with the SmolLM2 tokenizer, default prompts, a scored population of 8 as history
(8 genomes from the initializer, 8 pairs from the selector, 4 children from crosser and mutator):

    values  role         prompt tokens  answer tokens (longest answer the grammar allows)
    30      initializer        860          726
            crosser           1809          366
    80      initializer       1860         1926
            crosser           4164          966
    160     initializer       1875         3846
            crosser           7899         1926   (all 8 history members: fewer are shown now)

so an 80-value genome needs more than the old 1024-token answer limit and 4096-token context.
The answer limit is raised per call to what the answer can need (`answer_tokens`), the local
server's context follows the model's training context (8192 for SmolLM2, agents/local_server.py),
and a prompt whose scored history would not fit is given fewer history members, the best first
(agents/llm_roles.py).
"""
from __future__ import annotations

from typing import Callable

Counter = Callable[[str], "int | None"]  # exact token count of a text, or None where unknown

CHAT_OVERHEAD = 64  # the chat template around the prompt (SmolLM2's, with its system prompt: 31 tokens)
RETRY_RESERVE = 256  # what a retry appends: "Your previous answer was rejected: <error>. Answer again ..."


def text_tokens(text: str) -> int:
    """At most this many tokens (one per UTF-8 byte)."""
    return len(text.encode("utf-8"))


def prompt_tokens(prompt: str, count: Counter | None = None) -> int:
    """Tokens the prompt may take in the context, with the chat template and a retry's note;
    `count`: an exact counter (the byte bound where it is missing or answers None)."""
    exact = count(prompt) if count is not None else None
    return (text_tokens(prompt) if exact is None else exact) + CHAT_OVERHEAD + RETRY_RESERVE


def answer_tokens(answer_chars: int, grammar: bool) -> int:
    """Tokens the longest valid answer may take (with a few for the end-of-turn token). With a
    grammar the answer is exactly the compact text (no whitespace); with a JSON schema a model may
    add a space after each comma."""
    return answer_chars + 8 if grammar else answer_chars + answer_chars // 3 + 16


def answer_limit(user_limit: int, need: int) -> int:
    """The answer-token limit of one call: the user's `--max-tokens`, raised to what the answer needs."""
    return max(user_limit, need)


def fits(prompt: str, answer: int, context: int | None, count: Counter | None = None) -> bool:
    """Prompt (with template and retry reserve) + answer within the context (None: unknown, assume so)."""
    return context is None or prompt_tokens(prompt, count) + answer <= context
