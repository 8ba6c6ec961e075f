"""The distilled LoRA, fused into the dev weights while a distilled stage runs and taken out exactly.

Lightricks ship the dev weights with a LoRA that turns them into the distilled model (the fast ids, and
the refine stage of every recipe). Running it unfused costs a low-rank product on every linear layer at
every step; fusing costs nothing per step. Fusing then subtracting in bf16 would drift a little on
every round trip, so the first fusing copies the dev weights it replaces to host memory, and restoring
puts them back bit for bit. The delta is ``strength * B @ A`` with no alpha scaling, as ltx-core's
``fuse_loras.py`` computes it; on float8 weights it is added to the upcast weight and quantized again,
as its ``_fuse_delta_with_cast_fp8`` does.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from openreel.engine.fp8 import Fp8Linear

# diffusers names a LoRA's target ``<component>.<module path>.lora_A.weight``.
_SUFFIXES = (".lora_A.weight", ".lora_B.weight")


@dataclass
class _Target:
    component: str
    path: str
    down: torch.Tensor  # A: (rank, in)
    up: torch.Tensor  # B: (out, rank)
    original: tuple[torch.Tensor, ...] | None = None  # the dev weight's tensors, in host memory once fused
    fused: bool = False


def _linear(component: torch.nn.Module, path: str) -> torch.nn.Module:
    """The layer holding the weight; PEFT-wrapped layers (the reference adapter) hold it in ``base_layer``."""
    module = component.get_submodule(path)
    return getattr(module, "base_layer", module)


def _stored(module: torch.nn.Module) -> tuple[torch.Tensor, ...]:
    """The tensors that hold a layer's weight: the weight, or float8 values and their scales."""
    if isinstance(module, Fp8Linear):
        return module.weight_fp8, module.weight_scale
    weight = module.weight
    assert isinstance(weight, torch.Tensor)
    return (weight.data,)


def _shape(module: torch.nn.Module) -> tuple[int, int]:
    return int(getattr(module, "out_features")), int(getattr(module, "in_features"))  # noqa: B009


def _float(module: torch.nn.Module) -> torch.Tensor:
    return module.dequantized(torch.float32) if isinstance(module, Fp8Linear) else _stored(module)[0].float()


def _set_weight(module: torch.nn.Module, value: torch.Tensor) -> None:
    if isinstance(module, Fp8Linear):
        module.set_weight(value)
    else:
        _stored(module)[0].copy_(value)


class FusedLora:
    """A LoRA over some of a pipeline's components, either fused (``fused``) or not applied at all."""

    def __init__(
        self, components: dict[str, torch.nn.Module], targets: list[_Target], strength: float
    ) -> None:
        self._components = components
        self._targets = targets
        self.strength = strength

    @property
    def fused(self) -> bool:
        return all(target.fused for target in self._targets)

    @classmethod
    def load(cls, pipe: Any, path: Path, strength: float = 1.0) -> FusedLora:
        """Read a LoRA in Lightricks' or diffusers' key format against ``pipe``'s components; a key naming no
        layer of this checkpoint, or a layer of another shape, is an error (the LoRA is another model's)."""
        state: dict[str, torch.Tensor] = pipe.lora_state_dict(str(path))
        prefixes = sorted({k[: -len(s)] for k in state for s in _SUFFIXES if k.endswith(s)})
        if not prefixes:
            raise ValueError(f"{path.name} holds no LoRA weights (lora_A/lora_B)")
        pin = torch.cuda.is_available()
        components: dict[str, torch.nn.Module] = {}
        targets = []
        for prefix in prefixes:
            component_name, _, module_path = prefix.partition(".")
            component = getattr(pipe, component_name, None)
            if not isinstance(component, torch.nn.Module):
                raise ValueError(f"{path.name} targets {component_name!r}, which this pipeline does not have")
            try:
                layer = _linear(component, module_path)
            except AttributeError:
                raise ValueError(
                    f"{path.name} targets {prefix}, which this checkpoint does not have"
                ) from None
            down, up = state[prefix + _SUFFIXES[0]], state[prefix + _SUFFIXES[1]]
            if (up.shape[0], down.shape[1]) != _shape(layer):
                raise ValueError(
                    f"{path.name} does not fit {prefix}: {tuple(up.shape)} x {tuple(down.shape)}"
                )
            if pin:
                down, up = down.pin_memory(), up.pin_memory()
            targets.append(_Target(component_name, module_path, down, up))
            components[component_name] = component
        return cls(components, targets, strength)

    def _layers(self) -> Iterator[tuple[_Target, torch.nn.Module]]:
        for target in self._targets:
            yield target, _linear(self._components[target.component], target.path)

    @torch.no_grad()
    def fuse(self) -> None:
        """Dev weights plus the LoRA's delta, summed in float32 and rounded once. Layer by layer, each
        marked when done: an error half way (out of memory) leaves every layer either fused or dev."""
        for target, layer in self._layers():
            if target.fused:
                continue
            stored = _stored(layer)
            if target.original is None:
                copies = tuple(t.to("cpu", copy=True) for t in stored)
                target.original = tuple(c.pin_memory() for c in copies) if stored[0].is_cuda else copies
            device = stored[0].device
            # Moved, then converted on the device: a host-to-device copy that converts runs on the CPU.
            delta = target.up.to(device, non_blocking=True).float() @ target.down.to(device).float()
            _set_weight(layer, _float(layer).add_(delta, alpha=self.strength))
            target.fused = True

    @torch.no_grad()
    def restore(self) -> None:
        """The dev weights, exactly as loaded."""
        for target, layer in self._layers():
            if not target.fused:
                continue
            assert target.original is not None
            for tensor, original in zip(_stored(layer), target.original, strict=True):
                tensor.copy_(original, non_blocking=True)
            target.fused = False
