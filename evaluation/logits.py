"""Next-token logits of a model over token windows, in chunks of rows (the LM head over a 128k
vocabulary for a whole batch would not fit): what the sampled fitness and `eval --kl-base` read."""
from __future__ import annotations

from typing import Iterator

import torch

from pruning.adapter import DecoderAdapter
from pruning.perplexity import lm_head_chunk
from pruning.placement import input_device


@torch.inference_mode()
def next_token_logits(model, ids: torch.Tensor, batch_size: int = 4,
                      chunk_tokens: int | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(fp32 logits for a chunk of positions, the tokens that follow them), window after window, in
    row order: position t of a window predicts token t + 1."""
    adapter = DecoderAdapter(model)
    device = input_device(model)
    head = adapter.lm_head()
    chunk = chunk_tokens or lm_head_chunk(model.config.vocab_size)
    for start in range(0, ids.shape[0], batch_size):
        batch = ids[start : start + batch_size].to(device)
        hidden = adapter.decoder(input_ids=batch, use_cache=False).last_hidden_state
        hidden = hidden[:, :-1].reshape(-1, hidden.shape[-1])
        targets = batch[:, 1:].reshape(-1)
        for s in range(0, hidden.shape[0], chunk):
            logits = head(hidden[s : s + chunk]).float()
            yield logits, targets[s : s + chunk].to(logits.device)
