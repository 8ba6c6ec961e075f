"""The distilled LoRA, fused into the dev weights while a distilled stage runs and taken out exactly.

Lightricks ship the dev weights with a LoRA that turns them into the distilled model (the fast ids, and
the refine stage of every recipe). Running it unfused costs a low-rank product on every linear layer at
every step; fusing costs nothing per step. Fusing then subtracting in bf16 would drift a little on
every round trip, so the dev weights are kept in host memory and put back bit for bit instead. The
delta is ``strength * B @ A`` with no alpha scaling, as ltx-core's ``fuse_loras.py`` computes it.
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
    original: torch.Tensor  # the dev weight, in host memory


def _linear(component: torch.nn.Module, path: str) -> torch.nn.Module:
    """The layer holding the weight; PEFT-wrapped layers (the reference adapter) hold it in ``base_layer``."""
    module = component.get_submodule(path)
    return getattr(module, "base_layer", module)


def weight_of(module: torch.nn.Module) -> torch.Tensor:
    if isinstance(module, Fp8Linear):
        return module.dequantized()
    weight = module.weight
    assert isinstance(weight, torch.Tensor)
    return weight.detach()


def _device(module: torch.nn.Module) -> torch.device:
    return module.weight_fp8.device if isinstance(module, Fp8Linear) else weight_of(module).device


def set_weight(module: torch.nn.Module, value: torch.Tensor) -> None:
    if isinstance(module, Fp8Linear):
        module.set_weight(value)
    else:
        weight = module.weight
        assert isinstance(weight, torch.Tensor)
        weight.data.copy_(value)


class FusedLora:
    """A LoRA over some of a pipeline's components, either fused (``fused``) or not applied at all."""

    def __init__(
        self, components: dict[str, torch.nn.Module], targets: list[_Target], strength: float
    ) -> None:
        self._components = components
        self._targets = targets
        self.strength = strength
        self.fused = False

    @classmethod
    def load(cls, pipe: Any, path: Path, strength: float = 1.0) -> FusedLora:
        """Read a LoRA in Lightricks' or diffusers' key format against ``pipe``'s components; a key that names
        no layer of this checkpoint is an error (the LoRA belongs to another model)."""
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
            weight = weight_of(layer)
            down, up = state[prefix + _SUFFIXES[0]], state[prefix + _SUFFIXES[1]]
            if (up.shape[0], down.shape[1]) != tuple(weight.shape):
                raise ValueError(
                    f"{path.name} does not fit {prefix}: {tuple(up.shape)} x {tuple(down.shape)}"
                )
            original = weight.to("cpu", copy=True)
            targets.append(
                _Target(
                    component_name,
                    module_path,
                    down.pin_memory() if pin else down,
                    up.pin_memory() if pin else up,
                    original.pin_memory() if pin else original,
                )
            )
            components[component_name] = component
        return cls(components, targets, strength)

    def _layers(self) -> Iterator[tuple[_Target, torch.nn.Module]]:
        for target in self._targets:
            yield target, _linear(self._components[target.component], target.path)

    @torch.no_grad()
    def fuse(self) -> None:
        """Dev weights plus the LoRA's delta, summed in float32 and rounded once."""
        if self.fused:
            return
        for target, layer in self._layers():
            device = _device(layer)
            delta = target.up.to(device, torch.float32) @ target.down.to(device, torch.float32)
            fused = target.original.to(device, torch.float32, non_blocking=True) + self.strength * delta
            set_weight(layer, fused.to(target.original.dtype))
        self.fused = True

    @torch.no_grad()
    def restore(self) -> None:
        """The dev weights, exactly as loaded."""
        if not self.fused:
            return
        for target, layer in self._layers():
            set_weight(layer, target.original.to(_device(layer), non_blocking=True))
        self.fused = False
