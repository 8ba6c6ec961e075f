"""Prompt encodings: Gemma's outputs cached per prompt, Gemma itself on the GPU only while it encodes.

LTX-2 packs every hidden layer of its text encoder into the prompt embedding (about 0.4 GB per prompt in
bf16 on the real model), so cached entries live in host memory and move to the device on use. Gemma 3
12B is 24 GB in bf16, a third of an 80 GB card that the denoising needs more: with ``offload`` its
weights stay in (pinned) host memory and visit the GPU for the encoding of a prompt that is not cached,
as Lightricks' pipelines load and free their text encoder around ``encode_prompts``. Where the GPU has
no room for all of it (a 48 GB card next to the float8 transformer), it streams through layer by layer.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal

import torch

Encoding = tuple[torch.Tensor, torch.Tensor]  # (embeddings, attention mask)
# What an encoding allocates beside the weights: every hidden state, the logits (about 1.6 GiB for
# Gemma 3 12B and a 1024-token prompt, bench/memory_phases.py), with room to spare.
ENCODING_MARGIN = 4 * 2**30


def placement(free_bytes: int, encoder_bytes: int) -> Literal["visit", "stream"]:
    """Whole, when the GPU has room for the encoder and its encoding; otherwise layer by layer."""
    return "visit" if free_bytes >= encoder_bytes + ENCODING_MARGIN else "stream"


@contextmanager
def visiting(module: torch.nn.Module, device: torch.device) -> Iterator[None]:
    """``module``'s parameters and buffers on ``device`` for the duration, then back on their host tensors
    (no copy back: the host copies never changed)."""
    tensors = [*module.parameters(), *module.buffers()]
    host = [t.data for t in tensors]
    try:
        for tensor, data in zip(tensors, host, strict=True):
            tensor.data = data.to(device, non_blocking=True, copy=True)
        yield
    finally:
        for tensor, data in zip(tensors, host, strict=True):
            tensor.data = data


@contextmanager
def streaming(module: torch.nn.Module, device: torch.device) -> Iterator[None]:
    """Each of ``module``'s layers holds its own weights on ``device`` only while it runs (then its host
    tensors are back): the GPU needs room for one layer, at the cost of moving them for every call."""
    moved: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {}

    def arrive(layer: torch.nn.Module, args: Any) -> None:
        own = [*layer.parameters(recurse=False), *layer.buffers(recurse=False)]
        moved[id(layer)] = [(t, t.data) for t in own]
        for tensor in own:
            tensor.data = tensor.data.to(device, non_blocking=True, copy=True)

    def leave(layer: torch.nn.Module, args: Any, output: Any) -> None:
        for tensor, data in moved.pop(id(layer), []):
            tensor.data = data

    handles = []
    for layer in module.modules():
        if (
            next(layer.parameters(recurse=False), None) is not None
            or next(layer.buffers(recurse=False), None) is not None
        ):
            handles += [layer.register_forward_pre_hook(arrive), layer.register_forward_hook(leave)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
        for pending in moved.values():
            for tensor, data in pending:
                tensor.data = data


class PromptEncoder:
    def __init__(self, pipe: Any, device: torch.device, size: int, offload: bool) -> None:
        self._pipe = pipe
        self._device = device
        self._size = size
        self._offload = offload
        self._entries: OrderedDict[str, Encoding] = OrderedDict()
        self.misses = 0
        if offload:
            encoder = pipe.text_encoder.to("cpu")
            if torch.cuda.is_available():
                for tensor in (*encoder.parameters(), *encoder.buffers()):
                    tensor.data = tensor.data.pin_memory()

    def __call__(self, prompt: str) -> Encoding:
        """The prompt's embeddings and mask on the device, batch 1."""
        cached = self._entries.get(prompt)
        if cached is None:
            self.misses += 1
            cached = self._encode(prompt)
            if self._size:
                self._entries[prompt] = tuple(t.to("cpu") for t in cached)  # type: ignore[assignment]
                while len(self._entries) > self._size:
                    self._entries.popitem(last=False)
        else:
            self._entries.move_to_end(prompt)
        return tuple(t.to(self._device, copy=True) for t in cached)  # type: ignore[return-value]

    @contextmanager
    def on_device(self, module: torch.nn.Module) -> Iterator[None]:
        """``module`` (Gemma, or LTX-2.5's separate prompt enhancer) runnable on the device meanwhile: where
        it already is without offload, else visiting whole or streaming layer by layer (``placement``)."""
        if not self._offload:
            yield
            return
        size = sum(t.numel() * t.element_size() for t in (*module.parameters(), *module.buffers()))
        # What the driver has free, and what PyTorch holds cached but unused (it reuses that first).
        cached = torch.cuda.memory_reserved(self._device) - torch.cuda.memory_allocated(self._device)
        how = placement(torch.cuda.mem_get_info(self._device)[0] + cached, size)
        with (visiting if how == "visit" else streaming)(module, self._device):
            yield

    @torch.inference_mode()
    def _encode(self, prompt: str) -> Encoding:
        encoder = self._pipe.text_encoder
        dtype = next(encoder.parameters()).dtype
        with self.on_device(encoder):
            return self._pipe._get_gemma_prompt_embeds(prompt, device=self._device, dtype=dtype)
