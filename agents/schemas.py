"""Answer formats: a JSON schema (OpenAI-compatible `response_format`) and, for llama.cpp, an
equivalent compact GBNF grammar.

Rates travel as integer percentages: a small model writes "20" in one token where "0.2000001"
costs six, and the grammar bounds every number to two digits, so no answer can run away. The
grammar also forbids the pretty-printing whitespace small models love (tokens we would pay for).
"""
from __future__ import annotations


def genomes_schema(count: int, length: int) -> dict:
    genome = {"type": "array", "items": {"type": "integer"}, "minItems": length, "maxItems": length}
    return {"type": "object", "additionalProperties": False, "required": ["genomes"],
            "properties": {"genomes": {"type": "array", "items": genome, "minItems": count, "maxItems": count}}}


def pairs_schema(count: int) -> dict:
    pair = {"type": "array", "items": {"type": "integer"}, "minItems": 2, "maxItems": 2}
    return {"type": "object", "additionalProperties": False, "required": ["pairs"],
            "properties": {"pairs": {"type": "array", "items": pair, "minItems": count, "maxItems": count}}}


def _repeat(item: str, n: int) -> str:
    return item + "".join(f' "," {item}' for _ in range(n - 1))


def genomes_grammar(count: int, length: int) -> str:
    return (
        f'root ::= "{{\\"genomes\\":[" {_repeat("genome", count)} "]}}"\n'
        f'genome ::= "[" {_repeat("num", length)} "]"\n'
        'num ::= [0-9] | [1-9] [0-9]\n'
    )


def pairs_grammar(count: int, population: int) -> str:
    # Indices can only name someone in the population (<= 10 shown: one digit in range).
    digits = "[0-9] | [1-9] [0-9]" if population > 10 else f"[0-{max(0, population - 1)}]"
    return (
        f'root ::= "{{\\"pairs\\":[" {_repeat("pair", count)} "]}}"\n'
        'pair ::= "[" idx "," idx "]"\n'
        f"idx ::= {digits}\n"
    )


def choices_schema(count: int, options: int, per_item: int) -> dict:
    """Move-based answers: `count` lists of 1..per_item option indices."""
    item = {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": options - 1},
            "minItems": 1, "maxItems": per_item}
    return {"type": "object", "additionalProperties": False, "required": ["choices"],
            "properties": {"choices": {"type": "array", "items": item, "minItems": count, "maxItems": count}}}


def choices_grammar(count: int, options: int, per_item: int) -> str:
    digits = " | ".join(f'"{k}"' for k in range(options))  # exactly the listed options
    optional = "".join(' ("," idx' for _ in range(per_item - 1)) + "".join(")?" for _ in range(per_item - 1))
    return (
        f'root ::= "{{\\"choices\\":[" {_repeat("item", count)} "]}}"\n'
        f'item ::= "[" idx{optional} "]"\n'
        f"idx ::= {digits}\n"
    )


def response_format(schema: dict, name: str) -> dict:
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": False}}


# -- answer sizes ------------------------------------------------------------------------------
# The longest compact answer each grammar allows, in characters (= bytes: the answers are ASCII).
# agents/limits.py turns these into answer-token limits.

def genomes_answer_chars(count: int, length: int) -> int:
    genome = 1 + 2 * length + (length - 1) + 1  # "[" two-digit numbers, commas "]"
    return len('{"genomes":[]}') + count * genome + (count - 1)


def pairs_answer_chars(count: int) -> int:
    return len('{"pairs":[]}') + count * len("[99,99]") + (count - 1)


def choices_answer_chars(count: int, options: int, per_item: int) -> int:
    item = 2 + per_item * len(str(max(0, options - 1))) + (per_item - 1)
    return len('{"choices":[]}') + count * item + (count - 1)
