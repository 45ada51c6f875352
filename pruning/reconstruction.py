"""Closed-form reconstruction: after heads or channels go, re-fit what reads them.

Removing attention heads deletes input columns of o_proj; removing MLP channels deletes input
columns of down_proj. The producers (q/k/v, gate/up) are only sliced: the kept heads and channels
compute exactly what they did. The consumer is re-fitted by ridge least squares so that, on
calibration inputs x, its output from the kept columns z = [x_kept; 1] reproduces the dense
projection's output y = W x + b:

    W', b' = argmin  sum ||y - W' x_kept - b'||^2 + lam ||W'||^2      (lam on the weights only)
           = C (A + lam D)^-1      with  A = sum z z^T,  C = sum y z^T

FLAP's bias compensation is the special case that keeps W and fits only b' (the mean of the
removed inputs); Wanda-sp keeps W and b. The damping is relative, lam = damping x mean diag of
A's feature part (1e-2 as in Týr-the-Pruner and SparseGPT).

The statistics come in two forms, both accumulated in fp32 and solved in fp64 on the weights'
own device:
- `InputGram`: the whole G = sum [x;1][x;1]^T, from which the refit of *any* kept set follows
  (A = G[k,k], C = [W b] G[:,k]); what a table of refits for many levels needs;
- `KeptStatistics`: A and C for one known kept set only, which is all an exact refit of one plan
  needs and far smaller at scale (at 70B, down_proj's G is 28672^2 fp32 = 3.3 GB; A and C for a
  half-kept layer 1.3 GB).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

RECONSTRUCTIONS = ("ls", "bias", "off")  # least-squares refit, FLAP's bias, nothing
TARGETS = ("local", "dense")  # what a refit reproduces: W x on the pruned inputs, or the dense model's own output
DEFAULT_DAMPING = 1e-2
GRAM_ROWS = 1024  # token rows converted to fp32 at once (bounds the temporary: 1024 x 28672 x 4 B = 117 MB)
SOLVE_ROWS = 512  # output rows solved at once (an fp64 block of 512 x (k+1): 56 MB at k = 14336)


@dataclass
class ProjectionRefit:
    """A re-fitted consumer projection: the input columns it keeps, and its new weight and bias."""

    kept: torch.Tensor  # (k,) long, sorted input-column indices of the dense projection
    weight: torch.Tensor  # (out, k)
    bias: torch.Tensor  # (out,)

    def to(self, device=None, dtype=None) -> "ProjectionRefit":
        return ProjectionRefit(self.kept.to(device), self.weight.to(device=device, dtype=dtype),
                               self.bias.to(device=device, dtype=dtype))

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.kept, self.weight, self.bias))


@dataclass
class LayerRefit:
    """One decoder layer's re-fitted o_proj and down_proj (None: that projection keeps every input)."""

    o_proj: ProjectionRefit | None = None
    down_proj: ProjectionRefit | None = None

    @property
    def nbytes(self) -> int:
        return sum(p.nbytes for p in (self.o_proj, self.down_proj) if p is not None)


def refits_state(refits: list[LayerRefit]) -> list:
    """Refits as plain tensors (a file torch.load reads with weights_only=True)."""
    def one(p):
        return None if p is None else (p.kept, p.weight, p.bias)

    return [(one(r.o_proj), one(r.down_proj)) for r in refits]


def refits_from_state(state: list) -> list[LayerRefit]:
    def one(p):
        return None if p is None else ProjectionRefit(*p)

    return [LayerRefit(one(o), one(down)) for o, down in state]


def _rows(x: torch.Tensor):
    """An input batch as fp32 chunks of token rows."""
    flat = x.detach().reshape(-1, x.shape[-1])
    for start in range(0, flat.shape[0], GRAM_ROWS):
        yield flat[start : start + GRAM_ROWS].float()


class InputGram:
    """G = sum over token rows of [x;1][x;1]^T, in fp32 on the device the inputs arrive on."""

    def __init__(self, width: int):
        self.width = width
        self.matrix: torch.Tensor | None = None

    def add(self, x: torch.Tensor) -> None:
        n = self.width
        if self.matrix is None:
            self.matrix = torch.zeros(n + 1, n + 1, dtype=torch.float32, device=x.device)
        g = self.matrix
        for rows in _rows(x):
            g[:n, :n].addmm_(rows.T, rows)
            g[:n, n] += rows.sum(dim=0)
            g[n, n] += rows.shape[0]

    def finish(self) -> torch.Tensor:
        """The symmetric (n+1)^2 matrix (the last row and column are the constant input)."""
        g, n = self.matrix, self.width
        g[n, :n] = g[:n, n]
        return g

    def statistics(self, weight: torch.Tensor, bias: torch.Tensor | None, kept: torch.Tensor) -> tuple:
        """(A, C) for a kept set, from the whole Gram."""
        return kept_statistics_from_gram(self.finish(), weight, bias, kept)


class OutputCross:
    """C = sum y [x;1]^T (out x (n+1), fp32) for targets y other than the projection's own output
    (`target=dense`): with the Gram, the refit of any kept set follows (C[:, k])."""

    def __init__(self, width: int):
        self.width = width
        self.matrix: torch.Tensor | None = None

    def add(self, x: torch.Tensor, y: torch.Tensor) -> None:
        n = self.width
        if self.matrix is None:
            self.matrix = torch.zeros(y.shape[-1], n + 1, dtype=torch.float32, device=x.device)
        for rows, out in zip(_rows(x), _rows(y.to(x.device))):
            self.matrix[:, :n].addmm_(out.T, rows)
            self.matrix[:, n] += out.sum(dim=0)


def kept_statistics_from_gram(gram: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                              kept: torch.Tensor, cross: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """A = G[k,k] and C = [W b] G[:,k] (k: the kept columns and the constant), in fp64; G's rows are
    read in blocks so that no fp64 copy of the whole Gram is made (at 70B that alone is 6.6 GB).
    With `cross` (an OutputCross matrix: other targets than W x), C = cross[:, k]."""
    n = weight.shape[1]
    device = weight.device
    kz = torch.cat([kept, torch.tensor([n])]).to(gram.device)
    a = gram.index_select(0, kz).index_select(1, kz).to(device=device, dtype=torch.float64)
    if cross is not None:
        return a, cross.index_select(1, kz.to(cross.device)).to(device=device, dtype=torch.float64)
    w = _augmented(weight, bias)
    c = torch.zeros(w.shape[0], kz.numel(), dtype=torch.float64, device=device)
    for start in range(0, n + 1, GRAM_ROWS):  # G's rows in blocks, brought to the weight's device one at a time
        rows = gram[start : start + GRAM_ROWS].index_select(1, kz).to(device=device, dtype=torch.float64)
        c.addmm_(w[:, start : start + GRAM_ROWS], rows)
    return a, c


def _augmented(weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """[W b] in fp64 (the dense projection, acting on [x;1])."""
    w = weight.detach().to(torch.float64)
    b = torch.zeros(w.shape[0], dtype=torch.float64, device=w.device) if bias is None else bias.detach().to(w.device, torch.float64)
    return torch.cat([w, b.unsqueeze(1)], dim=1)


class KeptStatistics:
    """A = sum z z^T and C = sum y z^T for one kept set, z = [x_kept; 1], y the dense projection's
    own output on x (as the model computed it), accumulated in fp32."""

    def __init__(self, kept: torch.Tensor):
        self.kept = kept
        self.a: torch.Tensor | None = None
        self.c: torch.Tensor | None = None

    def add(self, x: torch.Tensor, y: torch.Tensor, *_) -> None:
        k = self.kept.numel()
        if self.a is None:
            self.a = torch.zeros(k + 1, k + 1, dtype=torch.float32, device=x.device)
            self.c = torch.zeros(y.shape[-1], k + 1, dtype=torch.float32, device=x.device)
            self._kept = self.kept.to(x.device)
        # the kept columns are picked before conversion: the fp32 temporary is k columns wide, not n
        kept_x = x.detach().reshape(-1, x.shape[-1]).index_select(1, self._kept)
        for z, out in zip(_rows(kept_x), _rows(y.to(x.device))):
            self.a[:k, :k].addmm_(z.T, z)
            self.a[:k, k] += z.sum(dim=0)
            self.a[k, k] += z.shape[0]
            self.c[:, :k].addmm_(out.T, z)
            self.c[:, k] += out.sum(dim=0)

    def finish(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(A, C), handed over: this object keeps no reference to them."""
        k = self.kept.numel()
        a, c = self.a, self.c
        a[k, :k] = a[:k, k]
        self.a = self.c = None
        return a, c


def solve_refit(a: torch.Tensor, c: torch.Tensor, kept: torch.Tensor, damping: float,
                device: torch.device | None = None, dtype: torch.dtype | None = None) -> ProjectionRefit:
    """W', b' = C (A + lam D)^-1 in fp64 by Cholesky.

    `a` is consumed: when it is already fp64 on `device` it is damped and factored in place, else
    an fp64 copy is made on `device` row block by row block (A itself may wait in CPU RAM: the
    exact refit parks it there). The factor is computed and used through its transposed view: A is
    symmetric, and that view is the column-major layout cuSOLVER/LAPACK work in, so neither the
    factorization nor the triangular solves copy it (torch.cholesky_solve always would: +1.5 GiB at
    70B). C, on any device, is solved SOLVE_ROWS outputs at a time: the device holds the factor, one
    fp64 block (at 70B for a half-kept down_proj 1.53 + 0.06 GiB); on a GPU the result waits in CPU RAM
    until the factor is freed."""
    device = torch.device(device or c.device)
    k = a.shape[0] - 1
    factor = fp64_on(a, device)
    del a
    scale = float(torch.diagonal(factor)[:k].mean()) if k else 0.0
    factor.diagonal()[:k] += damping * (scale if scale > 0 else 1.0)  # the constant's entry (token count) undamped
    lower = factor.mT  # the same symmetric matrix, column-major: factored in place into L
    info = torch.empty((), dtype=torch.int32, device=device)
    torch.linalg.cholesky_ex(lower, out=(lower, info))
    if int(info) != 0:
        raise FloatingPointError(f"the reconstruction's system is not positive definite (damping {damping}): the "
                                 "calibration inputs are degenerate or not finite; raise --reconstruct-damping")
    out_dtype = dtype or torch.float32
    # on a GPU the solved rows wait in CPU RAM until the factor is freed (0.22 GiB at 70B less at the peak)
    result_device = torch.device("cpu") if device.type == "cuda" else device
    weight = torch.empty(c.shape[0], k, dtype=out_dtype, device=result_device, pin_memory=device.type == "cuda")
    bias = torch.empty(c.shape[0], dtype=out_dtype, device=device)
    for start in range(0, c.shape[0], SOLVE_ROWS):
        rows = c[start : start + SOLVE_ROWS].to(device)  # moved in C's own dtype, converted on the device
        block = torch.empty(rows.shape, dtype=torch.float64, device=device).mT  # (k+1, rows), column-major
        block.copy_(rows.mT)
        del rows
        # X A = C with A = L L^T symmetric: L Y = C^T, then L^T X^T = Y
        torch.linalg.solve_triangular(lower, block, upper=False, out=block)
        torch.linalg.solve_triangular(lower.mT, block, upper=True, out=block)
        if not torch.isfinite(block).all():
            raise FloatingPointError("the reconstruction produced non-finite weights (calibration inputs not finite)")
        weight[start : start + SOLVE_ROWS].copy_(block[:k].mT.to(out_dtype).contiguous())
        bias[start : start + SOLVE_ROWS] = block[k]
    del factor, lower, block
    return ProjectionRefit(kept.to(device="cpu", dtype=torch.long), weight.to(device), bias)


def fp64_on(t: torch.Tensor, device) -> torch.Tensor:
    """t in fp64 on `device`; returned as is when it already is, else converted GRAM_ROWS rows at a
    time (no full-size temporary beside the result on the device)."""
    device = torch.device(device)
    if t.dtype == torch.float64 and t.device == device:
        return t
    out = torch.empty(t.shape, dtype=torch.float64, device=device)
    for start in range(0, t.shape[0], GRAM_ROWS):  # moved in t's own dtype, converted on the device
        out[start : start + GRAM_ROWS].copy_(t[start : start + GRAM_ROWS].to(device))
    return out
