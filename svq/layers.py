"""Building blocks of the tokenizer: attention, MLPs, batched experts, AdaLN, conditioned blocks.

Shapes use B = batch, L = sequence length, W/D = width, N = tokens, k = conditions per block.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class Attention(nn.Module):
    """Multi-head self-attention with a fused qkv projection (parameter layout of
    `nn.MultiheadAttention`: in-projection W->3W and out-projection W->W, both with bias)."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B, L, W); mask: (L, L) bool, True where attention is allowed. Returns (B, L, W)."""
        q, k, v = self.qkv(x).unflatten(-1, (3, self.heads, -1)).permute(2, 0, 3, 1, 4)
        # q, k, v: (B, heads, L, W/heads)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.proj(out.transpose(1, 2).flatten(2))  # (B, L, W)


class Mlp(nn.Module):
    def __init__(self, width: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class BatchedLinear(nn.Module):
    """n independent Linear layers applied to n token positions in one batched matmul.

    `weight` is (n, in, out) and `bias` (n, out), with `nn.Linear`'s default initialisation.
    The (in, out) layout (the transpose of `nn.Linear`'s) is deliberate: on CPU its backward
    ran 2-2.6x faster than (out, in) (benchmarks/model.py records the expert timings).
    """

    def __init__(self, n: int, in_features: int, out_features: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n, in_features, out_features))
        self.bias = nn.Parameter(torch.empty(n, out_features))
        bound = 1.0 / math.sqrt(in_features)
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, n, in) -> (B, n, out); position i uses layer i."""
        return torch.einsum("bni,nio->bno", x, self.weight) + self.bias


class ExpertMlp(nn.Module):
    """One MLP per token position (the seed's per-query experts), computed as two batched
    matmuls over stacked weights instead of a Python loop over experts."""

    def __init__(self, n: int, width: int, hidden: int):
        super().__init__()
        self.fc1 = BatchedLinear(n, width, hidden)
        self.fc2 = BatchedLinear(n, hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, n, W) -> (B, n, W)."""
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    """Pre-LN transformer block. With `experts > 0` the last `experts` positions each use their
    own MLP (routing by position, no router) while the others share one."""

    def __init__(self, width: int, heads: int, mlp_ratio: float, experts: int = 0):
        super().__init__()
        hidden = int(width * mlp_ratio)
        self.norm1 = nn.LayerNorm(width)
        self.attn = Attention(width, heads)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = Mlp(width, hidden)
        self.experts = ExpertMlp(experts, width, hidden) if experts else None

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B, L, W) -> (B, L, W)."""
        x = x + self.attn(self.norm1(x), mask)
        h = self.norm2(x)
        if self.experts is None:
            return x + self.mlp(h)
        n = self.experts.fc1.weight.shape[0]
        shared, own = h[:, :-n], h[:, -n:]
        return x + torch.cat([self.mlp(shared), self.experts(own)], dim=1)


class AdaLN(nn.Module):
    """Adaptive LayerNorm. `plain` (the seed): (a, b) = Linear(SiLU(c)); a * LN(x) + b.
    `zero` (DiT's adaLN-zero): (a, b, g) from a zero-initialised Linear; (1 + a) * LN(x) + b,
    and the block's residual branch is scaled by the gate g, so every block starts as identity."""

    def __init__(self, width: int, zero: bool = False):
        super().__init__()
        self.zero = zero
        self.norm = nn.LayerNorm(width, eps=1e-6)
        self.modulation = nn.Linear(width, (3 if zero else 2) * width)
        if zero:
            nn.init.zeros_(self.modulation.weight)
            nn.init.zeros_(self.modulation.bias)

    def forward(
        self, x: torch.Tensor, cond: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x: (B, L, D), cond: (B, D) -> (normalised x (B, L, D), gate (B, 1, D) or None)."""
        params = self.modulation(F.silu(cond)).unsqueeze(1)  # (B, 1, 2D or 3D)
        if self.zero:
            a, b, gate = params.chunk(3, dim=-1)
            return (1 + a) * self.norm(x) + b, gate
        a, b = params.chunk(2, dim=-1)
        return a * self.norm(x) + b, None


def _gated(branch: torch.Tensor, gate: torch.Tensor | None) -> torch.Tensor:
    return branch if gate is None else gate * branch


def _halves(conds: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, k, D) -> the conditions driving attention and MLP, (B, D) each: c0 and c1 for k = 2
    (the seed); for other k the first and second halves are averaged (the middle one is in both
    for odd k)."""
    k = conds.shape[1]
    return conds[:, : (k + 1) // 2].mean(1), conds[:, k // 2 :].mean(1)


class CondBlockV2(nn.Module):
    """Conditioned decoder block, variant v2 (the seed's latest code).

    The block's k conditions are prepended to the sequence (their LN'd values enter attention,
    their residual rows start at zero), so the sequence grows by k per block. AdaLN before
    attention is driven by the first condition(s), before the MLP by the last.

    `cond_proj` gives the block its own Linear(D, D) view of its conditions: the reference
    built this layer (`condition_linear`) in every block but never called it; we use it.
    """

    def __init__(
        self, width: int, heads: int, mlp_ratio: float, k: int, zero: bool, cond_proj: bool
    ):
        super().__init__()
        self.cond_proj = nn.Linear(width, width) if cond_proj else None
        self.cond_norm_attn = nn.LayerNorm(width)
        self.cond_norm_mlp = nn.LayerNorm(width)
        self.prefix_norms = nn.ModuleList(nn.LayerNorm(width) for _ in range(k))
        self.norm1 = AdaLN(width, zero)
        self.attn = Attention(width, heads)
        self.norm2 = AdaLN(width, zero)
        self.mlp = Mlp(width, int(width * mlp_ratio))

    def forward(self, x: torch.Tensor, conds: torch.Tensor) -> torch.Tensor:
        """x: (B, L, D), conds: (B, k, D) -> (B, k + L, D)."""
        if self.cond_proj is not None:
            conds = self.cond_proj(conds)
        c_attn, c_mlp = _halves(conds)
        h, gate = self.norm1(x, self.cond_norm_attn(c_attn))
        prefix = torch.stack([norm(conds[:, i]) for i, norm in enumerate(self.prefix_norms)], 1)
        x = torch.cat([x.new_zeros(prefix.shape), x], dim=1)  # (B, k + L, D)
        h = torch.cat([prefix, h], dim=1)
        x = x + _gated(self.attn(h), gate)
        h, gate = self.norm2(x, self.cond_norm_mlp(c_mlp))
        return x + _gated(self.mlp(h), gate)


class CondBlockV1(nn.Module):
    """Conditioned decoder block, variant v1 (the seed's README): a fixed sequence of N
    placeholder slots + positions. Block l adds its k conditions into slots l*k..l*k+k-1, then
    drives AdaLN from LN(W x[slot] + c): slots already shaped by earlier blocks' conditions
    shape how this block's conditions act."""

    def __init__(
        self, width: int, heads: int, mlp_ratio: float, k: int, zero: bool, cond_proj: bool
    ):
        super().__init__()
        self.k = k
        self.cond_proj = nn.Linear(width, width) if cond_proj else None
        self.slot_proj_attn = nn.Linear(width, width)
        self.slot_proj_mlp = nn.Linear(width, width)
        self.cond_norm_attn = nn.LayerNorm(width)
        self.cond_norm_mlp = nn.LayerNorm(width)
        self.norm1 = AdaLN(width, zero)
        self.attn = Attention(width, heads)
        self.norm2 = AdaLN(width, zero)
        self.mlp = Mlp(width, int(width * mlp_ratio))

    def forward(self, x: torch.Tensor, conds: torch.Tensor, index: int) -> torch.Tensor:
        """x: (B, N + P, D), conds: (B, k, D), index: this block's number -> (B, N + P, D)."""
        if self.cond_proj is not None:
            conds = self.cond_proj(conds)
        s, k = index * self.k, self.k
        x = torch.cat([x[:, :s], x[:, s : s + k] + conds, x[:, s + k :]], dim=1)
        c_attn, _ = _halves(self.slot_proj_attn(x[:, s : s + k]) + conds)
        h, gate = self.norm1(x, self.cond_norm_attn(c_attn))
        x = x + _gated(self.attn(h), gate)
        _, c_mlp = _halves(self.slot_proj_mlp(x[:, s : s + k]) + conds)
        h, gate = self.norm2(x, self.cond_norm_mlp(c_mlp))
        return x + _gated(self.mlp(h), gate)


class ResBlock(nn.Module):
    """The residual conv block of the tokenizer's conv parts and of the spatial VQ: GN, SiLU,
    conv3x3, GN, SiLU, dropout, conv3x3, plus a (1x1-projected when the width changes)
    shortcut. (B, in_ch, H, W) -> (B, out_ch, H, W).

    groups, eps: the GroupNorms'; conv1_bias False in the tokenizer (its reference block)."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int | None = None,
        groups: int = 8,
        dropout: float = 0.0,
        eps: float = 1e-5,
        conv1_bias: bool = True,
    ):
        super().__init__()
        out_ch = out_ch or in_ch
        self.norm1 = nn.GroupNorm(groups, in_ch, eps=eps)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=conv1_bias)
        self.norm2 = nn.GroupNorm(groups, out_ch, eps=eps)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.shortcut = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.shortcut(x) + h


class ConvRefiner(nn.Module):
    """The pixel head's small conv refiner: conv k x k to C, GN, one ResNet block, GN, SiLU,
    conv 3x3 to the output channels. (B, 3, H, W) -> (B, 3, H, W), unbounded."""

    def __init__(self, in_channels: int, channels: int, kernel: int):
        super().__init__()
        self.conv_in = nn.Conv2d(in_channels, channels, kernel, padding=kernel // 2)
        self.norm_in = nn.GroupNorm(8, channels)
        self.block = ResBlock(channels, conv1_bias=False)
        self.norm_out = nn.GroupNorm(8, channels)
        self.conv_out = nn.Conv2d(channels, in_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.block(self.norm_in(self.conv_in(x)))
        return self.conv_out(F.silu(self.norm_out(h)))


def bidirectional_encoder(
    width: int, heads: int, depth: int, mlp_ratio: float, dropout: float
) -> nn.TransformerEncoder:
    """`depth` pre-norm GELU transformer blocks with no attention mask (every token sees every
    other): the body of the grid-predicting heads. (B, T, width) -> (B, T, width)."""
    block = nn.TransformerEncoderLayer(
        width, heads, int(width * mlp_ratio), dropout, activation="gelu", batch_first=True,
        norm_first=True,
    )  # fmt: skip
    return nn.TransformerEncoder(block, depth, enable_nested_tensor=False)
