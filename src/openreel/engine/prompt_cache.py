"""Text-encoder outputs cached per prompt, so a re-run, a retry or another seed of the same prompt
skips the text encoder (Gemma 3 12B on the real checkpoints).

LTX-2 packs every hidden layer of the encoder into its prompt embeddings (about 0.4 GB per prompt
in bf16 on the real model), so entries live in CPU memory and move to the device on use.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

import torch

Encode = Callable[..., tuple[Any, ...]]


class PromptCache:
    def __init__(self, encode: Encode, size: int) -> None:
        self._encode = encode
        self._size = size
        self._entries: OrderedDict[Hashable, tuple[Any, ...]] = OrderedDict()
        self.misses = 0

    def __call__(
        self,
        prompt: Any,
        negative_prompt: Any = None,
        do_classifier_free_guidance: bool = True,
        num_videos_per_prompt: int = 1,
        prompt_embeds: Any = None,
        max_sequence_length: int = 1024,
        device: torch.device | None = None,
        **rest: Any,
    ) -> tuple[Any, ...]:
        """``encode_prompt``'s signature; anything but a plain prompt string goes straight through."""
        args = {
            "prompt": prompt,
            "negative_prompt": negative_prompt,
            "do_classifier_free_guidance": do_classifier_free_guidance,
            "num_videos_per_prompt": num_videos_per_prompt,
            "prompt_embeds": prompt_embeds,
            "max_sequence_length": max_sequence_length,
            "device": device,
            **rest,
        }
        cacheable = (
            isinstance(prompt, str)
            and prompt_embeds is None
            and not any(v is not None for v in rest.values())
        )
        if not cacheable or self._size == 0:
            return self._encode(**args)
        key = (
            prompt,
            negative_prompt,
            do_classifier_free_guidance,
            num_videos_per_prompt,
            max_sequence_length,
        )
        cached = self._entries.get(key)
        if cached is None:
            self.misses += 1
            outputs = self._encode(**args)
            cached = tuple(t.to("cpu") if isinstance(t, torch.Tensor) else t for t in outputs)
            self._entries[key] = cached
            while len(self._entries) > self._size:
                self._entries.popitem(last=False)
        self._entries.move_to_end(key)
        # A copy: nothing a pipeline does to its inputs can reach the cache.
        return tuple(t.to(device, copy=True) if isinstance(t, torch.Tensor) else t for t in cached)
