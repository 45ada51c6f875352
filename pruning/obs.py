"""Hessian-aware selection (`--metric obs`): remove what the refit can best make up for.

For a linear layer re-fitted by least squares on inputs with Gram G = sum [x;1][x;1]^T, removing
a block B of input columns (and optimally updating the rest) costs (Optimal Brain Surgeon)

    dE(B) = tr( W_B (Hinv_BB)^-1 W_B^T ),      Hinv = (G + lam D)^-1,

and after the removal W <- W - W_B (Hinv_BB)^-1 Hinv_B,: and Hinv <- Hinv - Hinv_:,B (Hinv_BB)^-1 Hinv_B,:
(ZipLM, SlimGPT, Týr-the-Pruner's local pruner). The greedy order of removals becomes importance
*scores* (the step at which a head or channel went: lower = removed first), so the ordinary
selection (pruning/selection.py) reproduces the greedy choice at every level:
- query heads (`--gqa query`): one step removes the cheapest remaining head of every KV group, group
  after group, so a level of `a` units is exactly the first `a` steps in each group;
- KV groups (`--gqa group`, and MHA): one step removes the cheapest whole group;
- MLP channels: one step removes the `step` cheapest channels at once (ZipLM's batched greedy), up
  to the largest rate the space allows.
The constant input (the bias column) is never removed. Solved in fp64 on the Gram's device.
"""
from __future__ import annotations

import torch

from pruning.reconstruction import _augmented


def _inverse(gram: torch.Tensor, damping: float) -> torch.Tensor:
    h = gram.to(torch.float64).clone()
    n = h.shape[0] - 1
    scale = float(torch.diagonal(h)[:n].mean()) or 1.0
    h.diagonal()[:n] += damping * scale
    return torch.cholesky_inverse(torch.linalg.cholesky(h))


def _remove(w: torch.Tensor, hinv: torch.Tensor, block: torch.Tensor) -> None:
    """The OBS update for removing input columns `block` (in place)."""
    inv_bb = torch.linalg.inv(hinv[block][:, block])
    rows = hinv[block]  # (|B|, n+1)
    w -= (w[:, block] @ inv_bb) @ rows
    hinv -= hinv[:, block] @ inv_bb @ rows
    w[:, block] = 0.0


def _block_cost(w: torch.Tensor, hinv: torch.Tensor, block: torch.Tensor) -> float:
    w_b = w[:, block]
    return float(torch.trace(w_b @ torch.linalg.solve(hinv[block][:, block], w_b.T)))


def head_scores(gram: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, num_kv_heads: int,
                queries_per_group: int, head_dim: int, query_mode: bool, damping: float) -> torch.Tensor:
    """Scores of the o_proj input heads (num_heads,), lower = removed earlier."""
    device = gram.device
    w = _augmented(weight, bias).to(device)
    hinv = _inverse(gram, damping)
    heads = num_kv_heads * queries_per_group
    columns = [torch.arange(h * head_dim, (h + 1) * head_dim, device=device) for h in range(heads)]
    scores = torch.full((heads,), float(heads + 1), dtype=torch.float64)
    if query_mode:
        alive = [list(range(g * queries_per_group, (g + 1) * queries_per_group)) for g in range(num_kv_heads)]
        for step in range(queries_per_group - 1):  # every group keeps one head
            for g in range(num_kv_heads):
                head = min(alive[g], key=lambda h: _block_cost(w, hinv, columns[h]))
                _remove(w, hinv, columns[head])
                alive[g].remove(head)
                scores[head] = step + g / num_kv_heads / 2
    else:
        alive = list(range(num_kv_heads))
        group_columns = [torch.cat(columns[g * queries_per_group:(g + 1) * queries_per_group]) for g in alive]
        for step in range(num_kv_heads - 1):
            group = min(alive, key=lambda g: _block_cost(w, hinv, group_columns[g]))
            _remove(w, hinv, group_columns[group])
            alive.remove(group)
            scores[group * queries_per_group:(group + 1) * queries_per_group] = step
    return scores.float()


def channel_scores(gram: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, step: int,
                   max_removed: int, damping: float) -> torch.Tensor:
    """Scores of the down_proj input channels (intermediate,), lower = removed earlier."""
    device = gram.device
    w = _augmented(weight, bias).to(device)
    hinv = _inverse(gram, damping)
    n = w.shape[1] - 1
    scores = torch.full((n,), float(n + 1), dtype=torch.float64)
    alive = torch.ones(n, dtype=torch.bool, device=device)
    removed = 0
    while removed < max_removed:
        take = min(step, max_removed - removed)
        cost = (w[:, :n] ** 2).sum(dim=0) / torch.diagonal(hinv)[:n].clamp_min(1e-300)
        cost[~alive] = float("inf")
        block = cost.argsort()[:take]
        _remove(w, hinv, block)
        alive[block] = False
        scores[block.cpu()] = removed + torch.arange(take, dtype=torch.float64)
        removed += take
    return scores.float()
