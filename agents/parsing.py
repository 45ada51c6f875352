"""Strict, forgiving parsing of model answers: anything that is not a usable answer raises
`AnswerError` with a message the model can be shown on retry."""
from __future__ import annotations

import json
import math
import re


class AnswerError(ValueError):
    pass


def parse_json(text: str):
    text = (text or "").strip()
    if not text:
        raise AnswerError("the answer was empty")
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    fenced = re.search(r"```(?:json)?\s*(.*?)```", text, re.S)
    for candidate in ([fenced.group(1)] if fenced else []) + [text[text.find("{"): text.rfind("}") + 1]]:
        try:
            return json.loads(candidate)
        except (json.JSONDecodeError, ValueError):
            continue
    raise AnswerError("the answer is not valid JSON")


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def parse_genomes(text: str, count: int, length: int) -> tuple[list[list[float]], list[str]]:
    """Rates as fractions. Integers are percentages; a list of numbers all <= 1 is read as
    fractions. Bad lists are dropped with a note; no usable list at all raises."""
    data = parse_json(text)
    if isinstance(data, dict):
        data = data.get("genomes", data.get("configurations", data.get("children")))
    if not isinstance(data, list):
        raise AnswerError('expected {"genomes": [[...], ...]}')
    if data and all(_is_number(v) for v in data):
        data = [data]  # a single bare list
    genomes, notes, problems = [], [], []
    for k, item in enumerate(data):
        if not isinstance(item, list) or not all(_is_number(v) for v in item):
            problems.append(f"item {k} is not a list of numbers")
            continue
        if len(item) != length:
            problems.append(f"item {k} has {len(item)} numbers, expected {length}")
            continue
        if not all(math.isfinite(v) for v in item):
            problems.append(f"item {k} has non-finite numbers")
            continue
        if all(abs(v) <= 1.0 for v in item) and any(0 < abs(v) < 1 for v in item):
            genomes.append([float(v) for v in item])
            notes.append(f"item {k} read as fractions")
        else:
            genomes.append([float(v) / 100.0 for v in item])
    return _fit_count(genomes, count, notes + problems, problems, "configuration")


def _fit_count(items: list, count: int, notes: list[str], problems: list[str], noun: str) -> tuple[list, list[str]]:
    """No usable item raises (with the first problems); extra items are cut, missing ones noted."""
    if not items:
        raise AnswerError("; ".join(problems[:3]) or f"no {noun}s in the answer")
    if len(items) > count:
        notes.append(f"{len(items) - count} extra {noun}(s) ignored")
        items = items[:count]
    elif len(items) < count:
        notes.append(f"{count - len(items)} {noun}(s) missing")
    return items, notes


def parse_pairs(text: str, count: int, population: int) -> tuple[list[tuple[int, int]], list[str]]:
    data = parse_json(text)
    if isinstance(data, dict):
        data = data.get("pairs")
    if not isinstance(data, list):
        raise AnswerError('expected {"pairs": [[i, j], ...]}')
    pairs, problems = [], []
    for k, item in enumerate(data):
        if (not isinstance(item, list) or len(item) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in item)):
            problems.append(f"pair {k} is not two integers")
        elif not all(0 <= v < population for v in item):
            problems.append(f"pair {k} has an index outside 0..{population - 1}")
        elif item[0] == item[1] and population > 1:
            problems.append(f"pair {k} pairs an individual with itself")
        else:
            pairs.append((item[0], item[1]))
    if not pairs:
        raise AnswerError("; ".join(problems[:3]) or "no pairs in the answer")
    notes = problems
    if len(pairs) > count:
        pairs = pairs[:count]
    elif len(pairs) < count:
        notes.append(f"{count - len(pairs)} pair(s) missing")
    return pairs, notes


def parse_choices(text: str, count: int, options: int, per_item: int) -> tuple[list[list[int]], list[str]]:
    """Move-based answers: {"choices": [[i, ...], ...]}, indices into the numbered option list."""
    data = parse_json(text)
    if isinstance(data, dict):
        data = data.get("choices", data.get("moves"))
    if not isinstance(data, list):
        raise AnswerError('expected {"choices": [[i, ...], ...]}')
    if data and all(isinstance(v, int) and not isinstance(v, bool) for v in data):
        data = [[v] for v in data]  # a flat list: one choice per item
    chosen, problems = [], []
    for k, item in enumerate(data):
        if isinstance(item, int) and not isinstance(item, bool):
            item = [item]
        if not isinstance(item, list) or not item or not all(isinstance(v, int) and not isinstance(v, bool) for v in item):
            problems.append(f"item {k} is not a list of option numbers")
        elif not all(0 <= v < options for v in item):
            problems.append(f"item {k} names an option outside 0..{options - 1}")
        else:
            if len(item) > per_item:
                problems.append(f"item {k}: only the first {per_item} options used")
            chosen.append(list(item[:per_item]))
    return _fit_count(chosen, count, problems, problems, "item")
