"""The GPTQ algorithm (Frantar et al. 2022, arXiv:2210.17323) for one linear layer, in float32.

GPTQ rounds a weight's input columns one at a time and spreads each column's rounding error over
the columns not yet rounded, weighted by the inverse *Hessian* H = 2 X^T X of the layer's inputs
X, so that the layer's outputs on calibration inputs move as little as possible. Columns go in
*blocks* of 128 (lazy batch updates); *act-order* rounds columns by decreasing diag(H) first.
Groups are taken in rounding order; when the group size does not divide the input size the last
group is shorter, as in AutoGPTQ (num_groups = ceil(input_size / group_size)).
Knows nothing about models or files: it sees one weight and one Hessian."""

import logging
from dataclasses import dataclass
from typing import Final

import torch

from sluice.quantization.quantized_weight import QuantizedWeight

logger = logging.getLogger(__name__)

BLOCK_SIZE: Final = 128
MAX_DAMP_RETRIES: Final = 5
CLIP_STEPS: Final = 80
CLIP_ERROR_NORM: Final = 2.4


@dataclass(frozen=True, slots=True)
class GptqParams:
    """What `quantize_config.json` records: the grid and how GPTQ walks it."""

    bits: int = 4
    group_size: int = 128
    """Input features per scale/zero group; -1 means one group per output channel."""
    sym: bool = False
    """Zero point fixed at 2**(bits-1) instead of fitted to each group's min and max."""
    desc_act: bool = False
    """Act-order: round input columns by decreasing Hessian diagonal."""
    damp_percent: float = 0.01
    """Added to diag(H) as a fraction of its mean, so that H is safely invertible."""
    clip_search: bool = False
    """Fit each group's grid to a shrunk range where that rounds it better (see `_fit_grid`)."""

    def __post_init__(self) -> None:
        if self.bits not in (4, 8):
            raise ValueError(f"GPTQ bits must be 4 or 8, got {self.bits}")
        if self.group_size == 0 or self.group_size < -1:
            raise ValueError(f"group size must be -1 or positive, got {self.group_size}")
        if not 0 < self.damp_percent < 1:
            raise ValueError(f"damp_percent must be in (0, 1), got {self.damp_percent}")

    def group_size_for(self, input_size: int) -> int:
        return input_size if self.group_size == -1 else self.group_size


@dataclass(frozen=True, slots=True)
class GptqResult:
    """One quantized linear in checkpoint order: w[n, k] = (q[n, k] - z[g, n]) * s[g, n] with
    g = g_idx[k]. Scales are already fp16-exact, as the checkpoint stores them. num_groups is
    ceil(input_size / group_size): the last group may be short."""

    q: torch.Tensor  # [output_size, input_size] int32 in [0, 2**bits)
    scales: torch.Tensor  # [num_groups, output_size] float16
    zeros: torch.Tensor  # [num_groups, output_size] int32 in [0, 2**bits)
    g_idx: torch.Tensor  # [input_size] int32
    bits: int
    group_size: int

    def dequantize(self) -> torch.Tensor:
        """[output_size, input_size] float32."""
        g_idx = self.g_idx.long()
        zeros = self.zeros[g_idx].t().float()
        scales = self.scales[g_idx].t().float()
        return (self.q.float() - zeros) * scales

    def to_quantized_weight(self) -> QuantizedWeight:
        """The runtime form: act-order columns sorted so every group is contiguous (as `gptq`)."""
        in_order = torch.arange(self.q.shape[1]) // self.group_size
        if torch.equal(self.g_idx.long(), in_order):
            return QuantizedWeight(self.q, self.scales, self.zeros, self.bits, self.group_size)
        perm = torch.argsort(self.g_idx.long(), stable=True)
        q = self.q[:, perm].contiguous()
        return QuantizedWeight(q, self.scales, self.zeros, self.bits, self.group_size, perm)


class HessianAccumulator:
    """Running H = 2 X^T X / num_rows over every input row a linear sees."""

    def __init__(self, input_size: int) -> None:
        self.hessian = torch.zeros(input_size, input_size, dtype=torch.float32)
        self.num_rows = 0

    def add(self, inputs: torch.Tensor) -> None:
        """inputs: [..., input_size], any float dtype."""
        rows = inputs.reshape(-1, inputs.shape[-1]).float()  # [num_rows, input_size]
        total = self.num_rows + rows.shape[0]
        # Rescale the mean so far, then add the new rows: stays O(1) in magnitude as rows grow.
        self.hessian.mul_(self.num_rows / total)
        rows = rows * (2.0 / total) ** 0.5
        self.hessian.addmm_(rows.t(), rows)
        self.num_rows = total


@dataclass(frozen=True, slots=True)
class _Grid:
    """One group's scale and zero point per output channel."""

    scale: torch.Tensor  # [output_size, 1] float32, fp16-exact
    zero: torch.Tensor  # [output_size, 1] float32 holding integers

    def quantize(self, columns: torch.Tensor, max_q: int) -> torch.Tensor:
        """[output_size, k] -> integers in [0, max_q] (float32)."""
        return torch.clamp(torch.round(columns / self.scale) + self.zero, 0, max_q)

    def dequantize(self, q: torch.Tensor) -> torch.Tensor:
        return (q - self.zero) * self.scale


def _fit_grid(weight: torch.Tensor, params: GptqParams) -> _Grid:
    """Min/max grid over weight [output_size, columns], as AutoGPTQ's Quantizer.

    The range always includes 0 so that the zero point is representable. Symmetric grids span
    [-m, m] with m = max |w| (AutoGPTQ keeps [0, max] for an all-positive group, clipping half of
    it; we don't). With `params.clip_search`, each row's range is shrunk by the factor among 1.00,
    0.99, ..., 0.21 that rounds the row with the least sum of |error|^2.4 (AutoGPTQ's mse
    option): clipping a few outliers buys a finer grid for the rest."""
    bits, sym = params.bits, params.sym
    w_min = weight.min(dim=1, keepdim=True).values.clamp(max=0)
    w_max = weight.max(dim=1, keepdim=True).values.clamp(min=0)
    if sym:
        w_max = torch.maximum(-w_min, w_max)
        w_min = -w_max
    grid = _grid_for_range(w_min, w_max, bits, sym)
    if not params.clip_search:
        return grid
    best = _rounding_error(weight, grid, bits)
    for step in range(1, CLIP_STEPS):
        shrink = 1 - step / 100
        candidate = _grid_for_range(w_min * shrink, w_max * shrink, bits, sym)
        error = _rounding_error(weight, candidate, bits)
        better = error < best
        best = torch.where(better, error, best)
        grid = _Grid(
            torch.where(better, candidate.scale, grid.scale),
            torch.where(better, candidate.zero, grid.zero),
        )
    return grid


def _grid_for_range(w_min: torch.Tensor, w_max: torch.Tensor, bits: int, sym: bool) -> _Grid:
    """The grid spanning [w_min, w_max] per row. Scales are rounded to fp16 here so that the
    error feedback sees the grid the checkpoint will hold."""
    max_q = 2**bits - 1
    empty = (w_min == 0) & (w_max == 0)  # an all-zero group: any grid works, avoid 0 / 0
    w_min = torch.where(empty, -1.0, w_min)
    w_max = torch.where(empty, 1.0, w_max)
    scale = ((w_max - w_min) / max_q).half().float()
    scale = torch.where(scale == 0, torch.finfo(torch.float16).tiny, scale)
    if sym:
        zero = torch.full_like(scale, float(2 ** (bits - 1)))
    else:
        zero = torch.clamp(torch.round(-w_min / scale), 0, max_q)
    return _Grid(scale, zero)


def _rounding_error(weight: torch.Tensor, grid: _Grid, bits: int) -> torch.Tensor:
    """Per row: sum of |rounded - weight|^2.4, [output_size, 1]."""
    rounded = grid.dequantize(grid.quantize(weight, 2**bits - 1))
    return (rounded - weight).abs().pow(CLIP_ERROR_NORM).sum(dim=1, keepdim=True)


def _inverse_hessian_factor(hessian: torch.Tensor, damp_percent: float) -> torch.Tensor:
    """Upper Cholesky factor of H^-1 (the paper's Cholesky reformulation), damping more on
    failure: a calibration set that barely excites some inputs makes H nearly singular."""
    mean_diag = torch.mean(torch.diag(hessian))
    damp = damp_percent
    for _ in range(MAX_DAMP_RETRIES):
        damped = hessian + damp * mean_diag * torch.eye(hessian.shape[0])
        factor, info = torch.linalg.cholesky_ex(damped)
        if int(info) == 0:
            inverse = torch.cholesky_inverse(factor)
            upper, info = torch.linalg.cholesky_ex(inverse, upper=True)
            if int(info) == 0:
                return upper
        logger.warning("Hessian not positive definite at damp %.3f; retrying with more", damp)
        damp *= 10
    raise ValueError(f"Hessian is not positive definite even with damp_percent {damp}")


def gptq_quantize(weight: torch.Tensor, hessian: torch.Tensor, params: GptqParams) -> GptqResult:
    """Quantize weight [output_size, input_size] given H [input_size, input_size]."""
    input_size = weight.shape[1]
    group_size = params.group_size_for(input_size)
    w = weight.detach().float().clone()
    h = hessian.detach().float().clone()
    dead = torch.diag(h) == 0  # inputs never active in calibration: weight is irrelevant there
    h[dead, dead] = 1
    w[:, dead] = 0
    perm = torch.argsort(torch.diag(h), descending=True) if params.desc_act else None
    if perm is not None:
        w, h = w[:, perm], h[perm][:, perm]
    h_inv = _inverse_hessian_factor(h, params.damp_percent)
    q, scales, zeros = _quantize_columns(w, h_inv, params, group_size)
    g_idx = torch.arange(input_size, dtype=torch.int32) // group_size
    if perm is not None:
        inverse = torch.argsort(perm)
        q, g_idx = q[:, inverse], g_idx[inverse]
    return GptqResult(
        q.to(torch.int32).contiguous(),
        scales.half(),
        zeros.to(torch.int32),
        g_idx.contiguous(),
        params.bits,
        group_size,
    )


def _quantize_columns(
    w: torch.Tensor, h_inv: torch.Tensor, params: GptqParams, group_size: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The column loop over w [output_size, input_size] (already in act-order), modified in place.

    Returns q [output_size, input_size] and scales, zeros [num_groups, output_size]."""
    input_size = w.shape[1]
    max_q = 2**params.bits - 1
    per_channel = group_size == input_size
    # A group must not straddle blocks, so that its grid is fitted to error-corrected columns.
    block_size = BLOCK_SIZE if per_channel or BLOCK_SIZE % group_size == 0 else group_size
    grids = [_fit_grid(w, params)] if per_channel else []
    q = torch.zeros_like(w)
    for start in range(0, input_size, block_size):
        end = min(start + block_size, input_size)
        block = w[:, start:end].clone()
        errors = torch.zeros_like(block)
        h_block = h_inv[start:end, start:end]
        for i in range(end - start):
            if not per_channel and (start + i) % group_size == 0:
                grids.append(_fit_grid(block[:, i : i + group_size], params))
            column = block[:, i : i + 1]  # [output_size, 1]
            q[:, start + i : start + i + 1] = grids[-1].quantize(column, max_q)
            error = (column - grids[-1].dequantize(q[:, start + i : start + i + 1])) / h_block[i, i]
            block[:, i:] -= error * h_block[i, i:].unsqueeze(0)
            errors[:, i : i + 1] = error
        w[:, end:] -= errors @ h_inv[start:end, end:]
    scales = torch.cat([grid.scale.t() for grid in grids])
    zeros = torch.cat([grid.zero.t() for grid in grids])
    return q, scales, zeros


def round_to_nearest(weight: torch.Tensor, params: GptqParams) -> GptqResult:
    """The baseline GPTQ improves on: the same grids, each value rounded on its own."""
    input_size = weight.shape[1]
    group_size = params.group_size_for(input_size)
    w = weight.detach().float()
    max_q = 2**params.bits - 1
    grids = [
        _fit_grid(w[:, start : start + group_size], params)
        for start in range(0, input_size, group_size)
    ]
    q = torch.cat(
        [
            grid.quantize(w[:, index * group_size : (index + 1) * group_size], max_q)
            for index, grid in enumerate(grids)
        ],
        dim=1,
    )
    scales = torch.cat([grid.scale.t() for grid in grids])
    zeros = torch.cat([grid.zero.t() for grid in grids])
    g_idx = torch.arange(input_size, dtype=torch.int32) // group_size
    return GptqResult(
        q.to(torch.int32),
        scales.half(),
        zeros.to(torch.int32),
        g_idx,
        params.bits,
        group_size,
    )


def relative_output_error(
    weight: torch.Tensor, dequantized: torch.Tensor, hessian: torch.Tensor
) -> float:
    """||X (W - Q)^T||^2 / ||X W^T||^2 on the calibration inputs X, read off H = 2 X^T X."""
    weight = weight.detach().float()
    delta = dequantized.float() - weight  # [output_size, input_size]
    error = ((delta @ hessian) * delta).sum()
    signal = ((weight @ hessian) * weight).sum()
    return float(error / signal.clamp(min=torch.finfo(torch.float32).tiny))
