"""How far a (pruned) model's next-token distribution is from a reference (dense) model's, as
llama.cpp's perplexity tool states it with --kl-divergence: the mean KL divergence per token and
the share of positions where both models' most likely next token is the same (top-1 agreement).

The reference pass runs first and keeps, per position, its top-K log-probs and their token ids
(K = 128, the search's own KL: the rest of each distribution is one bucket), so the two models are
never in memory together: `reference_top_k` on the dense model, free it, `compare` on the pruned one.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from evaluation.fidelity import TOP_K, coarse_kl
from evaluation.logits import next_token_logits


@torch.inference_mode()
def reference_top_k(model, ids: torch.Tensor, batch_size: int = 4, top_k: int = TOP_K) -> tuple[torch.Tensor, torch.Tensor]:
    """(log-probs, token ids) of the reference's top-K at every position, on the CPU, in row order."""
    values, indices = [], []
    for logits, _ in next_token_logits(model, ids, batch_size):
        top = F.log_softmax(logits, -1).topk(top_k, dim=-1)
        values.append(top.values.cpu())
        indices.append(top.indices.cpu())
    return torch.cat(values), torch.cat(indices)


@torch.inference_mode()
def compare(model, ids: torch.Tensor, reference: tuple[torch.Tensor, torch.Tensor], batch_size: int = 4) -> dict:
    """{"kl": mean KL(reference || model) per token, "top1_agreement": share, "tokens": positions}."""
    ref_logp, ref_ids = reference
    kl, agree, start = 0.0, 0, 0
    for logits, _ in next_token_logits(model, ids, batch_size):
        rows = logits.shape[0]
        p_log = ref_logp[start : start + rows].to(logits.device)
        listed = ref_ids[start : start + rows].to(logits.device)
        q_log = F.log_softmax(logits, -1).gather(1, listed)
        kl += coarse_kl(p_log, q_log).sum().item()
        agree += (logits.argmax(-1) == listed[:, 0]).sum().item()
        start += rows
    if start != ref_logp.shape[0]:
        raise ValueError(f"the reference covers {ref_logp.shape[0]} positions, the model {start}: not the same windows")
    return {"kl": kl / start, "top1_agreement": agree / start, "tokens": start}
