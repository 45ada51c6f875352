"""Zero-shot accuracy with lm-eval on an in-memory (possibly pruned, heterogeneous) model.

Offline (the default here): our task configs over local files (evaluation/zeroshot_tasks.py).
`online=True` uses lm-eval's own task names (needs the hub)."""
from __future__ import annotations

import time
from pathlib import Path

import torch

from pruning.placement import input_device
from evaluation.zeroshot_tasks import TASKS, task_config


def zero_shot(model, tokenizer, tasks: list[str] | tuple[str, ...] = TASKS, data_dir: str | Path | None = None,
              limit: int | None = None, batch_size: int = 8, online: bool = False) -> dict:
    """Returns {"tasks": {task: {"acc": .., "acc_norm": .., "acc_stderr": .., "acc_norm_stderr": ..}},
    "documents": {task: documents scored}, "average": .., "limit": .., "seconds": ..}.

    The average is the paper's: mean over tasks of acc_norm where lm-eval reports it, else acc. The
    standard errors are lm-eval's closed form for a mean (sample standard deviation / sqrt(n)), which
    it computes once `bootstrap_iters` is above 0 (no bootstrap is drawn for a mean)."""
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        raise ValueError(f"unknown task(s) {unknown}; tasks: {', '.join(TASKS)}")
    if not online and data_dir is None:
        raise ValueError("zero-shot evaluation offline needs --data-dir (boolq/, piqa/, hellaswag/, ... under it)")
    device = str(input_device(model))
    lm = HFLM(pretrained=model, tokenizer=tokenizer, device=device, batch_size=batch_size)
    # HFLM takes a passed model's device from `model.device` (its first parameter): meta when the
    # embeddings are offloaded. Inputs belong where the embeddings compute.
    lm._device = torch.device(device)
    started = time.perf_counter()
    if online:
        specs, manager = list(tasks), TaskManager()
    else:
        specs, manager = [task_config(t, data_dir) for t in tasks], TaskManager(include_defaults=False)
    out = lm_eval.simple_evaluate(model=lm, tasks=specs, task_manager=manager, limit=limit, log_samples=False,
                                  bootstrap_iters=1)
    results, documents = {}, {}
    for task in tasks:
        name = task if online else f"sp_{task}"
        row = out["results"][name]
        results[task] = {k.split(",")[0]: v for k, v in row.items()
                         if k.split(",")[0] in ("acc", "acc_norm", "acc_stderr", "acc_norm_stderr")
                         and isinstance(v, (int, float))}
        documents[task] = (out.get("n-samples") or {}).get(name, {}).get("effective")
    return {"tasks": results, "documents": documents, "average": paper_average(results), "limit": limit,
            "seconds": time.perf_counter() - started}


def task_score(result: dict) -> float:
    """The paper's per-task number: acc_norm where lm-eval reports it, else acc."""
    return result.get("acc_norm", result.get("acc"))


def task_stderr(result: dict) -> float | None:
    """The standard error of `task_score` (None from results stored before it was kept)."""
    return result.get("acc_norm_stderr" if "acc_norm" in result else "acc_stderr")


def paper_average(tasks: dict[str, dict]) -> float:
    return sum(task_score(r) for r in tasks.values()) / len(tasks)
