"""The paper's seven zero-shot tasks as lm-eval task configs over local files (offline).

Prompts, choices and metrics follow lm-eval's own task definitions (lm_eval/tasks/<task>/*.yaml);
only the data source differs: `custom_dataset` reads the files under --data-dir (formats in
shared/data/SOURCES.md). Known differences, all forced by the data available offline:

* hellaswag: the file keeps lm-eval's preprocessing but not the ctx_a / ctx_b boundary; we
  capitalise the first letter after the last ". " when it is lower case, approximating lm-eval's
  `ctx_a + " " + ctx_b.capitalize()`.
* winogrande: the dev file was rebuilt from two public copies (text) and the original labels;
  lm-eval's partial scoring (score only the words after the blank) is reproduced exactly.
* boolq: labels are the strings "true"/"false" (mapped to 1/0); prompt and choices as lm-eval.
"""
from __future__ import annotations

import json
from pathlib import Path

OFFICIAL_COUNTS = {"boolq": 3270, "piqa": 1838, "hellaswag": 10042, "winogrande": 1267, "arc_easy": 2376,
                   "arc_challenge": 1172, "openbookqa": 500}
TASKS = tuple(OFFICIAL_COUNTS)
FILES = {
    "boolq": "boolq/val.jsonl", "piqa": "piqa/valid.jsonl", "hellaswag": "hellaswag/hellaswag_val_full.txt",
    "winogrande": "winogrande/dev.derived.jsonl", "arc_easy": "arc_easy/ARC-Easy-Test.jsonl",
    "arc_challenge": "arc_challenge/ARC-Challenge-Test.jsonl", "openbookqa": "openbookqa/test.derived.jsonl",
}


class TaskDataError(FileNotFoundError):
    pass


def _jsonl(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def task_file(task: str, data_dir: str | Path) -> Path:
    if task not in FILES:
        raise ValueError(f"unknown task {task!r}; tasks: {', '.join(TASKS)}")
    path = Path(data_dir) / FILES[task]
    if not path.is_file():
        raise TaskDataError(f"{task}: data file {path} is missing (expected layout: {FILES[task]} under --data-dir)")
    return path


def load_docs(task: str, data_dir: str | Path) -> list[dict]:
    """Documents in the field names lm-eval's prompts use."""
    path = task_file(task, data_dir)
    if task == "boolq":
        return [{"question": d["question"], "passage": d["passage"], "label": 1 if str(d["label"]).lower() == "true" else 0}
                for d in _jsonl(path)]
    if task == "piqa":
        labels = [int(x) for x in (path.parent / "valid-labels.lst").read_text().split()]
        docs = _jsonl(path)
        if len(labels) != len(docs):
            raise TaskDataError(f"piqa: {len(docs)} questions but {len(labels)} labels")
        return [{"goal": d["goal"], "sol1": d["sol1"], "sol2": d["sol2"], "label": y} for d, y in zip(docs, labels)]
    if task == "hellaswag":
        lines = path.read_text(encoding="utf-8").split("\n")
        docs = []
        for i in range(0, len(lines) - 5, 6):
            docs.append({"query": _capitalise_ctx_b(lines[i]), "label": int(lines[i + 1]), "choices": lines[i + 2 : i + 6]})
        return docs
    if task == "winogrande":
        return [{"sentence": d["sentence"], "option1": d["option1"], "option2": d["option2"], "answer": str(d["answer"])}
                for d in _jsonl(path)]
    if task in ("arc_easy", "arc_challenge"):
        docs = []
        for d in _jsonl(path):
            choices = d["question"]["choices"]
            docs.append({"question": d["question"]["stem"], "choices": {"text": [c["text"] for c in choices],
                                                                        "label": [c["label"] for c in choices]},
                         "answerKey": d["answerKey"]})
        return docs
    if task == "openbookqa":
        return [{"question_stem": d["question_stem"], "choices": d["choices"], "answerKey": d["answerKey"]}
                for d in _jsonl(path)]
    raise ValueError(task)


def _capitalise_ctx_b(text: str) -> str:
    head, sep, tail = text.rpartition(". ")
    if sep and tail[:1].islower():
        return head + sep + tail[0].upper() + tail[1:]
    return text


# -- gold answers (also used by lm-eval through doc_to_target) -------------------------------

def gold(task: str, doc: dict) -> int:
    if task in ("boolq", "piqa", "hellaswag"):
        return int(doc["label"])
    if task == "winogrande":
        return int(doc["answer"]) - 1
    return doc["choices"]["label"].index(doc["answerKey"].strip())


def _winogrande_choices(doc: dict) -> list[str]:
    idx = doc["sentence"].index("_")
    return [doc["sentence"][:idx] + doc["option1"], doc["sentence"][:idx] + doc["option2"]]


def _winogrande_target(doc: dict) -> str:
    idx = doc["sentence"].index("_") + 1
    return doc["sentence"][idx:].strip()


def task_config(task: str, data_dir: str | Path) -> dict:
    """An lm-eval task config (dict form) reading our local file."""
    from datasets import Dataset, DatasetDict

    def dataset(**_kwargs):
        return DatasetDict({"test": Dataset.from_list(load_docs(task, data_dir))})

    acc = [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}]
    acc_norm = acc + [{"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True}]
    base = {"task": f"sp_{task}", "custom_dataset": dataset, "test_split": "test", "output_type": "multiple_choice",
            "num_fewshot": 0, "metadata": {"version": 1.0}, "target_delimiter": " "}
    if task == "boolq":
        return {**base, "doc_to_text": "{{passage}}\nQuestion: {{question}}?\nAnswer:", "doc_to_target": "label",
                "doc_to_choice": ["no", "yes"], "metric_list": acc}
    if task == "piqa":
        return {**base, "doc_to_text": "Question: {{goal}}\nAnswer:", "doc_to_target": "label",
                "doc_to_choice": "{{[sol1, sol2]}}", "metric_list": acc_norm}
    if task == "hellaswag":
        return {**base, "doc_to_text": "{{query}}", "doc_to_target": "{{label}}", "doc_to_choice": "choices",
                "metric_list": acc_norm}
    if task == "winogrande":
        # lm-eval's partial scoring: the choices are the contexts, the target the shared continuation.
        return {**base, "doc_to_text": lambda doc: gold("winogrande", doc), "doc_to_target": _winogrande_target,
                "doc_to_choice": _winogrande_choices, "metric_list": acc}
    if task in ("arc_easy", "arc_challenge"):
        return {**base, "doc_to_text": "Question: {{question}}\nAnswer:", "doc_to_target": "{{choices.label.index(answerKey)}}",
                "doc_to_choice": "{{choices.text}}", "metric_list": acc_norm}
    if task == "openbookqa":
        return {**base, "doc_to_text": "question_stem", "doc_to_target": "{{choices.label.index(answerKey.lstrip())}}",
                "doc_to_choice": "{{choices.text}}", "metric_list": acc_norm}
    raise ValueError(task)
