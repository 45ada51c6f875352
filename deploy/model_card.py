"""The model card (`README.md`) written into every pruned checkpoint folder: what a user uploads
with `huggingface-cli upload DIR` as it is.

Hub YAML metadata first (`base_model`, `library_name`, `tags`, `pipeline_tag`), then the budget and
the per-layer plan, the measured numbers (test perplexity with its windows, zero-shot with its
document limit and standard errors, speed-ups beside the ideal), how to load it (transformers,
llama.cpp, vLLM) and the command that made it. Every number is read from what the run wrote
(`pruning.json`'s record and finalize's / prune's measurements), never retyped.
"""
from __future__ import annotations

import shlex
import sys
from pathlib import Path

import yaml

CARD_FILE = "README.md"


def reproduce_command(argv: list[str] | None = None) -> str:
    """The command line this process was started with, quoted for a shell."""
    argv = sys.argv if argv is None else argv
    program = "python main.py" if argv and argv[0].endswith("main.py") else "self-pruner"
    return " ".join([program, *map(shlex.quote, argv[1:])])


def model_card(record: dict, measured: dict | None = None, command: str = "", name: str = "") -> str:
    """record: pruning.json's content; measured: finalize's or prune's results (ppl, params, zero_shot,
    timing, test_windows, test_seqlen), any of them absent."""
    from pruning.loading import hub_id

    measured = measured or {}
    base = record.get("source_model") or record.get("source") or "unknown"
    hub = hub_id(str(base))
    budget = record.get("budget") or {}
    params = (record.get("params") or {}).get("total")
    front = {"base_model": hub, "library_name": "transformers",
             "pipeline_tag": "text-generation",
             "tags": ["pruned", "structured-pruning", "self-pruner", *([record["family"]] if record.get("family") else [])]}
    front = {k: v for k, v in front.items() if v is not None}
    title = name or f"{Path(hub or str(base)).name} pruned with Self-Pruner"
    lines = ["---", yaml.safe_dump(front, sort_keys=False).strip(), "---", "", f"# {title}", "",
             f"`{hub or base}` with whole attention heads and MLP channels removed (structured pruning, no retraining) by "
             "Self-Pruner" + (
                 f": {params:,} parameters" + (f" of {budget['dense_params']:,}" if budget.get("dense_params") else "")
                 + (f" (budget {budget['description']})" if budget.get("description") else "") if params else "") + ".",
             ""]
    lines += _measured_lines(measured)
    lines += _plan_lines(record)
    lines += _loading_lines()
    if command:
        lines += ["## How it was made", "", "```", command, "```", ""]
        settings = record.get("settings") or {}
        if settings:
            lines += ["Pruning settings: " + ", ".join(f"{k} {v}" for k, v in settings.items()) + ".", ""]
    versions = record.get("versions") or {}
    if versions:
        lines += ["Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()) + ".", ""]
    return "\n".join(lines)


def write_model_card(out_dir: str | Path, record: dict, measured: dict | None = None, command: str = "") -> Path:
    path = Path(out_dir) / CARD_FILE
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text(model_card(record, measured, command))
    tmp.replace(path)
    return path


def _measured_lines(measured: dict) -> list[str]:
    from evaluation.zeroshot import task_score, task_stderr

    lines = []
    ppl = measured.get("ppl") or {}
    if ppl:
        windows = measured.get("test_windows")
        scope = f"{windows} windows x {measured.get('test_seqlen')} tokens" if windows else "test split"
        counts = measured.get("params") or {}
        lines += [f"## WikiText-2 test perplexity ({scope})", "", "| model | parameters | perplexity |", "|---|---:|---:|"]
        lines += [f"| {name} | {counts[name]:,} | {value:.2f} |" if name in counts else f"| {name} | | {value:.2f} |"
                  for name, value in ppl.items()]
        lines.append("")
    zero = measured.get("zero_shot") or {}
    if zero:
        first = next(iter(zero.values()))
        tasks, limit = list(first["tasks"]), first.get("limit")
        lines += ["## Zero-shot accuracy (lm-eval; acc_norm where reported, else acc)", "",
                  (f"First {limit} documents per task" if limit else "Every document of each task")
                  + "; ± one standard error.", "",
                  "| model | " + " | ".join(tasks) + " | average |", "|---|" + "---:|" * (len(tasks) + 1)]
        for name, row in zero.items():
            cells = [f"{task_score(r):.3f}" + (f" ± {task_stderr(r):.3f}" if task_stderr(r) is not None else "")
                     for r in row["tasks"].values()]
            lines.append(f"| {name} | " + " | ".join(cells) + f" | {row['average']:.3f} |")
        lines.append("")
    timing = measured.get("timing") or {}
    if timing.get("speedup"):
        speed = timing["speedup"]
        device = (timing.get("dense") or {}).get("device", "")
        lines += [f"## Speed against the dense model ({device}, PyTorch eager)", "",
                  f"| setting | speed-up (ideal {speed['ideal']:.2f}x) |", "|---|---:|"]
        lines += [f"| {key} | {value:.2f}x |" for key, value in speed.items() if key != "ideal"]
        lines.append("")
    return lines


def _plan_lines(record: dict) -> list[str]:
    plan = record.get("plan") or []
    rates = (record.get("genome") or {}).get("rates") or []
    if not plan:
        return []
    lines = ["## Per-layer plan", "", "Units removed per layer (attention units: query heads per KV group, or KV "
             "groups; MLP units: channel blocks) and the layer's pruning rate.", "",
             "| layer | attention units removed | MLP units removed | rate |", "|---:|---:|---:|---:|"]
    for i, (attn, mlp) in enumerate(plan):
        rate = f"{rates[i]:.3f}" if i < len(rates) and len(rates) == len(plan) else ""
        lines.append(f"| {i} | {attn} | {mlp} | {rate} |")
    return lines + [""]


def _loading_lines() -> list[str]:
    return ["## How to load it", "",
            "transformers (each layer keeps its own head count and MLP width, so the folder ships its modeling code):",
            "", "```python", "from transformers import AutoModelForCausalLM, AutoTokenizer",
            'model = AutoModelForCausalLM.from_pretrained("THIS_FOLDER_OR_REPO", trust_remote_code=True)',
            'tokenizer = AutoTokenizer.from_pretrained("THIS_FOLDER_OR_REPO")', "```", "",
            "llama.cpp: `python main.py export THIS_FOLDER` writes `THIS_FOLDER-f16.gguf` (llama.cpp's `deci` "
            "architecture, per-layer head counts), then `llama-server -m THIS_FOLDER-f16.gguf`.", "",
            "vLLM: `python main.py export THIS_FOLDER --format decilm`, then `vllm serve THIS_FOLDER-decilm "
            "--trust-remote-code` (removed query heads are stored as exact zeros in that format; not tested in "
            "vLLM by us).", ""]
