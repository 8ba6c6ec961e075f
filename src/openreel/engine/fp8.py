"""float8 weights for the transformer blocks' attention and feed-forward linears, as upstream quantizes.

ltx-core's fp8 policies (``quantization/fp8_cast.py``) touch only ``transformer_blocks.*`` ``to_q``,
``to_k``, ``to_v``, ``to_out.0``, ``ff.net.0.proj`` and ``ff.net.2``; embedders, projections, AdaLN and
the text encoder keep their precision. Each weight is stored in float8 e4m3 with a scale per output
channel (finer than upstream's plain cast, the same memory). Where the GPU multiplies in float8
(compute capability 9.0 and up) the layer quantizes its input per token and calls ``torch._scaled_mm``;
elsewhere it upcasts the weight per call, which saves memory but not time.
"""

from __future__ import annotations

import re
from typing import Literal

import torch
import torch.nn.functional as F

FP8 = torch.float8_e4m3fn
FP8_MAX = torch.finfo(FP8).max
# Upstream matches state-dict keys by suffix: ".to_q.weight" ... and "ff.net.0.proj.weight" (so audio_ff too).
TARGETS = re.compile(r"^transformer_blocks\.\d+\.(.*\.(to_q|to_k|to_v|to_out\.0)|.*ff\.net\.(0\.proj|2))$")
Matmul = Literal["scaled_mm", "upcast"]
# Tokens quantized per call: bounds the temporaries (a 1080p stage has ~53,000 tokens, and the feed-forward's
# down projection reads 16,384 features per token).
ROWS = 8192


def native_matmul(device: torch.device) -> Matmul:
    """``scaled_mm`` where the GPU multiplies float8 with row-wise scales (Hopper and later)."""
    if device.type == "cuda" and torch.cuda.get_device_capability(device) >= (9, 0):
        return "scaled_mm"
    return "upcast"


def _quantize_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """float8 values and the float32 scale of each row (absmax mapped to the largest float8). Divided in
    the input's precision: float8 keeps 3 mantissa bits, so rounding twice loses nothing."""
    scale = x.abs().amax(dim=-1, keepdim=True).float().clamp_(min=1e-12) / FP8_MAX
    return (x / scale.to(x.dtype)).to(FP8), scale


class Fp8Linear(torch.nn.Module):
    """A linear layer with a float8 weight and a scale per output channel; computes in ``compute_dtype``."""

    weight_fp8: torch.Tensor
    weight_scale: torch.Tensor

    def __init__(self, linear: torch.nn.Linear, matmul: Matmul) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        # torch._scaled_mm multiplies matrices whose inner and outer sizes are multiples of 16.
        aligned = self.in_features % 16 == 0 and self.out_features % 16 == 0
        self.matmul: Matmul = matmul if aligned else "upcast"
        weight = linear.weight.detach()
        self.compute_dtype = weight.dtype
        self.register_buffer("weight_fp8", torch.empty_like(weight, dtype=FP8))
        self.register_buffer("weight_scale", torch.empty(self.out_features, 1, device=weight.device))
        self.bias = linear.bias
        self.set_weight(weight)

    @torch.no_grad()
    def set_weight(self, weight: torch.Tensor) -> None:
        values, scale = _quantize_rows(weight.to(self.weight_fp8.device))
        self.weight_fp8.copy_(values)
        self.weight_scale.copy_(scale)

    def dequantized(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        dtype = dtype or self.compute_dtype
        return self.weight_fp8.to(dtype) * self.weight_scale.to(dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.matmul == "upcast":
            return F.linear(x, self.dequantized().to(x.dtype), self.bias)
        rows = x.reshape(-1, self.in_features)
        out = torch.empty(rows.shape[0], self.out_features, dtype=x.dtype, device=x.device)
        for start in range(0, rows.shape[0], ROWS):
            values, scale = _quantize_rows(rows[start : start + ROWS])
            out[start : start + ROWS] = torch._scaled_mm(
                values, self.weight_fp8.t(), scale_a=scale, scale_b=self.weight_scale.t(), out_dtype=x.dtype
            )
        if self.bias is not None:
            out += self.bias
        return out.reshape(*x.shape[:-1], self.out_features)


def quantize_blocks(transformer: torch.nn.Module, matmul: Matmul) -> int:
    """Swap every targeted linear (or the base layer of a PEFT-wrapped one) for an ``Fp8Linear``; returns
    how many were swapped."""
    swapped = 0
    for name, module in list(transformer.named_modules()):
        if not TARGETS.match(name):
            continue
        if hasattr(module, "base_layer"):
            holder, attr = module, "base_layer"
        else:
            parent_name, _, attr = name.rpartition(".")
            holder = transformer.get_submodule(parent_name)
        layer = getattr(holder, attr)
        if isinstance(layer, torch.nn.Linear):
            setattr(holder, attr, Fp8Linear(layer, matmul))
            swapped += 1
    return swapped
