"""`main.py eval MODEL`: WikiText-2 test perplexity, zero-shot accuracy, optional timing."""
from __future__ import annotations

import gc
import json
from pathlib import Path

import torch

from assembly.placement_options import show_placement
from pruning.data import load_windows
from pruning.loading import load_model
from pruning.perplexity import perplexity
from ui.console import console, err_console, progress_bar


def kl_base(args) -> str | None:
    """--kl-base: a model, or `source` (the model a pruned checkpoint's pruning.json names)."""
    if not args.kl_base:
        return None
    if args.kl_base != "source":
        return args.kl_base
    record = Path(args.target) / "pruning.json"
    if not record.exists():
        raise ValueError(f"--kl-base source: {args.target} has no pruning.json to name its source model; "
                         f"give the model instead")
    return json.loads(record.read_text())["source_model"]


def run_eval(args) -> int:
    if args.target.endswith(".gguf"):
        if args.kl_base:
            raise ValueError("--kl-base runs on checkpoints; for a GGUF use llama.cpp's own: llama-perplexity "
                             "--kl-divergence-base")
        return run_eval_gguf(args)
    if args.tasks is None:
        from evaluation.zeroshot_tasks import TASKS

        args.tasks = ",".join(TASKS)
    tasks = [] if args.tasks in ("", "none") else [t.strip() for t in args.tasks.split(",") if t.strip()]
    if tasks:
        from evaluation.zeroshot_tasks import TASKS, task_file

        unknown = [t for t in tasks if t not in TASKS]
        if unknown:
            raise ValueError(f"unknown task(s) {', '.join(unknown)}; tasks: {', '.join(TASKS)}")
        if args.data_dir is None:
            raise ValueError("zero-shot tasks read local files: pass --data-dir DIR (or --tasks none)")
        for task in tasks:
            task_file(task, args.data_dir)  # fail before loading the model
    reference, base = None, kl_base(args)
    if base:  # the reference first, then freed: the two models are never in memory together
        from evaluation.agreement import reference_top_k

        with err_console.status(f"loading the reference {base} ..."):
            ref = load_model(base, dtype=args.dtype, device=args.device, max_memory=args.max_memory,
                             offload_folder=args.offload_folder)
        test = load_windows("wikitext2", "test", ref.tokenizer, args.eval_seqlen, args.data_dir).head(args.eval_windows or None)
        with err_console.status("the reference's next-token distributions ..."):
            reference = reference_top_k(ref.model, test.input_ids, args.batch_size)
        vocab = ref.model.config.vocab_size
        del ref
        gc.collect()
        if torch.cuda.is_available():  # the placement of the next model reads free GPU memory
            torch.cuda.empty_cache()
    with err_console.status(f"loading {args.target} ..."):
        loaded = load_model(args.target, dtype=args.dtype, device=args.device, max_memory=args.max_memory,
                            offload_folder=args.offload_folder, on_placement=show_placement)
    results = {"model": args.target, "params": sum(p.numel() for p in loaded.model.parameters())}
    if not base:
        test = load_windows("wikitext2", "test", loaded.tokenizer, args.eval_seqlen, args.data_dir).head(args.eval_windows or None)
    elif loaded.model.config.vocab_size != vocab:
        raise ValueError(f"--kl-base {base}: its vocabulary ({vocab}) is not {args.target}'s "
                         f"({loaded.model.config.vocab_size}): not the model it was pruned from")
    with progress_bar("WikiText-2 test perplexity") as progress:
        results["wikitext2_test_ppl"] = perplexity(loaded.model, test, batch_size=args.batch_size, progress=progress)
    console.print(f"wikitext2 (test, {len(test)} x {test.seqlen} tokens)  ppl {results['wikitext2_test_ppl']:.3f}")
    if reference is not None:
        from evaluation.agreement import compare

        with err_console.status(f"KL to {base} ..."):
            results["kl_base"] = {"model": base, **compare(loaded.model, test.input_ids, reference, args.batch_size)}
        row = results["kl_base"]
        console.print(f"vs {base}: KL {row['kl']:.4f} per token (top-128 + rest), top-1 agreement "
                      f"{row['top1_agreement']:.2%} ({row['tokens']} positions)")
    if tasks:
        from evaluation.zeroshot import zero_shot

        with err_console.status("zero-shot (lm-eval) ..."):
            shot = zero_shot(loaded.model, loaded.tokenizer, tasks=tasks, data_dir=args.data_dir,
                             limit=args.limit or None, batch_size=args.batch_size)
        results["zero_shot"] = shot
        for task, row in shot["tasks"].items():
            console.print(f"{task:<14} " + "  ".join(f"{k} {v:.4f}" for k, v in row.items()))
        console.print(f"{'average':<14} {shot['average']:.4f}  ({shot['seconds']:.0f} s, limit {args.limit or 'none'})")
    if args.timing:
        from evaluation.timing import time_model

        with err_console.status("timing ..."):
            results["timing"] = time_model(loaded.model)
        for key, row in results["timing"]["prefill"].items():
            console.print(f"prefill {key:<8} {row['median_s'] * 1000:8.1f} ms  ({row['tokens_per_s']:.0f} tok/s)")
        console.print(f"decode          {results['timing']['decode']['tokens_per_s']:.1f} tok/s")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=2, default=str)
    return 0


def run_eval_gguf(args) -> int:
    """A GGUF through llama.cpp: WikiText-2 test perplexity (llama.cpp's own tokenizer, every
    token of each window scored, as for checkpoints), and with --timing its prompt and decode speed."""
    from pathlib import Path

    from deploy.llamacpp_runtime import LlamaCppModel
    from pruning.data import load_text, tokenize_windows

    path = Path(args.target)
    if not path.is_file():
        raise FileNotFoundError(f"{args.target}: no such GGUF file")
    if args.tasks not in (None, "", "none"):
        raise ValueError("zero-shot tasks run on checkpoints (lm-eval through transformers), not on a GGUF: "
                         "pass the checkpoint folder, or --tasks none")
    results = {"model": str(path), "runtime": "llama.cpp", "bytes": path.stat().st_size}
    with LlamaCppModel(path, n_ctx=args.eval_seqlen) as runtime:
        test = tokenize_windows(load_text("wikitext2", "test", args.data_dir), runtime.as_tokenizer(),
                                args.eval_seqlen, "wikitext2", "test").head(args.eval_windows or None)
        windows = test.input_ids.tolist()
        with progress_bar("WikiText-2 test perplexity (llama.cpp)") as progress:
            results["wikitext2_test_ppl"] = runtime.perplexity(windows, progress=progress)
    console.print(f"wikitext2 (test, {len(windows)} x {args.eval_seqlen} tokens, llama.cpp)  "
                  f"ppl {results['wikitext2_test_ppl']:.3f}")
    if args.timing:
        pp = min(512, len(windows[0]))  # llama-bench's pp512 / tg128, each from an empty context
        with LlamaCppModel(path, n_ctx=max(pp, 128) + 1, logits_all=False) as runtime:
            with err_console.status("timing (llama.cpp) ..."):
                speed = runtime.bench(windows[0], pp=pp, tg=128)
        results["timing"] = speed
        console.print(f"pp{pp} {speed[f'pp{pp}']:8.1f} tok/s   tg128 {speed['tg128']:.1f} tok/s  "
                      f"({speed['threads']} threads; llama-bench's names)")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=2, default=str)
    return 0
