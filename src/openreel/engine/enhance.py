"""Prompt enhancement: the resident Gemma rewrites a prompt before it is encoded, as Lightricks' pipelines do
with ``--enhance-prompt`` (ltx_pipelines utils/helpers.py ``generate_enhanced_prompt``; ltx_core
text_encoders/gemma/encoders/base_encoder.py ``enhance_t2v`` / ``enhance_i2v``: the instructions as the
system turn, the user's prompt, and for image-to-video the first frame, its long side at 896 px).

LTX-2.0 and 2.3 enhance with their own Gemma 3 text encoder and Lightricks' instructions, which ship in
``ltx-core`` under the LTX-2 Community License: they are read from an installed ``ltx-core`` (``pip install
--no-deps ltx-core``), not copied here. LTX-2.5 enhances with its separate Gemma 4 ``prompt_enhancer``, whose
instructions diffusers carries. Decoding is diffusers 0.42.1's (pipelines/ltx2/utils.py
``GEMMA3_PROMPT_ENHANCEMENT_CONFIG``: Gemma 3 samples at temperature 0.7, up to 512 tokens;
``GEMMA4_PROMPT_ENHANCEMENT_CONFIG``: Gemma 4 is greedy), seeded with the request's seed as ltx_pipelines
ic_lora.py seeds it, so a seed gives the same prompt every time.
"""

from __future__ import annotations

import importlib.util
import unicodedata
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import PIL.Image
import torch
from diffusers.pipelines.ltx2.prompt_enhancement import (
    _pad_inputs_for_attention_alignment,
    _prepare_enhance_image,
    clean_response,
)
from diffusers.pipelines.ltx2.utils import (
    GEMMA3_PROMPT_ENHANCEMENT_CONFIG,
    GEMMA4_PROMPT_ENHANCEMENT_CONFIG,
    LTX2_5_I2V_DEFAULT_SYSTEM_PROMPT,
    LTX2_5_T2V_DEFAULT_SYSTEM_PROMPT,
    PromptEnhancementConfig,
)

from openreel.engine.recipes import Version

INSTRUCTIONS_PACKAGE = "ltx-core"
_PROMPTS = ("text_encoders", "gemma", "encoders", "prompts")
# ltx-core 1.0.0 names them gemma_*; its later releases gemma3_* (beside gemma4_*).
_GEMMA3_FILES = {
    "t2v": ("gemma_t2v_system_prompt.txt", "gemma3_t2v_system_prompt.txt"),
    "i2v": ("gemma_i2v_system_prompt.txt", "gemma3_i2v_system_prompt.txt"),
}
# Gemma 3's instruction-tuned chat format (google/gemma-3-*-it tokenizer_config.json), for a checkpoint
# whose tokenizer was saved without it: the system turn folds into the first user turn.
GEMMA3_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{%- if messages[0]['role'] == 'system' -%}"
    "{%- if messages[0]['content'] is string -%}"
    "{%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}"
    "{%- else -%}"
    "{%- set first_user_prefix = messages[0]['content'][0]['text'] + '\n\n' -%}"
    "{%- endif -%}"
    "{%- set loop_messages = messages[1:] -%}"
    "{%- else -%}"
    "{%- set first_user_prefix = '' -%}"
    "{%- set loop_messages = messages -%}"
    "{%- endif -%}"
    "{%- for message in loop_messages -%}"
    "{%- set role = 'model' if message['role'] == 'assistant' else message['role'] -%}"
    "{{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else '') }}"
    "{%- if message['content'] is string -%}"
    "{{ message['content'] | trim }}"
    "{%- else -%}"
    "{%- for item in message['content'] -%}"
    "{%- if item['type'] == 'image' -%}{{ '<start_of_image>' }}"
    "{%- elif item['type'] == 'text' -%}{{ item['text'] | trim }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- endif -%}"
    "{{ '<end_of_turn>\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\n' }}{%- endif -%}"
)

OnDevice = Callable[[torch.nn.Module], AbstractContextManager[None]]


class EnhancementUnavailable(RuntimeError):
    pass


@dataclass(frozen=True)
class Instructions:
    t2v: str
    i2v: str


def gemma3_instructions() -> Instructions:
    """Lightricks' instructions for Gemma 3, from the installed ltx-core. Located, never imported: its
    modules need packages (an older torch among them) that openreel does not install."""
    spec = importlib.util.find_spec(INSTRUCTIONS_PACKAGE.replace("-", "_"))
    folder = Path(next(iter(spec.submodule_search_locations or ()), "")) if spec else None
    found: dict[str, str] = {}
    for kind, names in _GEMMA3_FILES.items():
        for name in names:
            path = folder.joinpath(*_PROMPTS, name) if folder else None
            if path is not None and path.is_file():
                found[kind] = path.read_text(encoding="utf-8")
                break
    if len(found) != len(_GEMMA3_FILES):
        raise EnhancementUnavailable(
            "prompt enhancement needs Lightricks' enhancement instructions, which ship in ltx-core: "
            f"pip install --no-deps {INSTRUCTIONS_PACKAGE}==1.0.0 beside the workers"
        )
    return Instructions(found["t2v"], found["i2v"])


def printable(text: str) -> str:
    """Generated text as it can be stored and shown: no control characters but newlines and tabs (the tiny
    Gemma's random weights write any byte)."""
    return "".join(c for c in text if c in "\n\t" or unicodedata.category(c) not in ("Cc", "Cs"))


def gemma3_processor(tokenizer: Any, encoder: Any) -> Any:
    """The processor a Gemma 3 checkpoint saved without one would have: its tokenizer and an image processor
    sized for its vision tower."""
    from transformers import Gemma3Processor
    from transformers.models.gemma3.image_processing_pil_gemma3 import Gemma3ImageProcessorPil

    side = int(encoder.config.vision_config.image_size)
    # Gemma 3's preprocessor_config.json: its SigLIP tower's square input, scaled to [-1, 1], bilinear.
    pixels = Gemma3ImageProcessorPil(
        size={"height": side, "width": side}, image_mean=[0.5] * 3, image_std=[0.5] * 3, resample=2
    )
    return Gemma3Processor(
        image_processor=pixels, tokenizer=tokenizer, image_seq_length=int(encoder.config.mm_tokens_per_image)
    )


class PromptEnhancer:
    """Rewrites prompts with the checkpoint's enhancer; ``error`` says why it cannot (then calls raise)."""

    def __init__(self, pipe: Any, device: torch.device, version: Version, on_device: OnDevice) -> None:
        self._device = device
        self._on_device = on_device
        dedicated = getattr(pipe, "prompt_enhancer", None)
        self._model: Any = dedicated if dedicated is not None else pipe.text_encoder
        self._config: PromptEnhancementConfig = (
            GEMMA4_PROMPT_ENHANCEMENT_CONFIG if dedicated is not None else GEMMA3_PROMPT_ENHANCEMENT_CONFIG
        )
        self.error: str | None = None
        self._instructions = Instructions(LTX2_5_T2V_DEFAULT_SYSTEM_PROMPT, LTX2_5_I2V_DEFAULT_SYSTEM_PROMPT)
        self._processor: Any = getattr(pipe, "processor", None)
        self._template: str | None = None
        try:
            if dedicated is None:
                if version == "2.5":
                    raise EnhancementUnavailable(
                        "this LTX-2.5 checkpoint has no prompt_enhancer (its text encoder is not trained to "
                        "rewrite prompts)"
                    )
                self._instructions = gemma3_instructions()
                if self._processor is None:
                    self._processor = gemma3_processor(pipe.tokenizer, self._model)
                if not getattr(self._processor.tokenizer, "chat_template", None):
                    self._template = GEMMA3_CHAT_TEMPLATE
            elif self._processor is None:
                raise EnhancementUnavailable("this checkpoint's prompt_enhancer comes without its processor")
        except EnhancementUnavailable as exc:
            self.error = str(exc)
        except AttributeError as exc:
            self.error = f"this checkpoint's tokenizer lacks Gemma's image tokens ({exc})"
        except ImportError as exc:  # an older transformers, without Gemma 3's PIL image processor
            self.error = f"this worker's transformers cannot build Gemma 3's processor ({exc})"

    def rewrite(self, prompt: str, seed: int, image: PIL.Image.Image | None) -> str:
        """The rewritten prompt (read with the first frame, when given); a blank rewrite keeps ``prompt``."""
        if self.error is not None:
            raise EnhancementUnavailable(self.error)
        instructions = self._instructions
        user: Any = f"user prompt: {prompt}"
        if image is not None:
            user = [{"type": "image"}, {"type": "text", "text": f"User Raw Input Prompt: {prompt}."}]
            image = _prepare_enhance_image(image)
        messages = [
            {"role": "system", "content": instructions.t2v if image is None else instructions.i2v},
            {"role": "user", "content": user},
        ]
        tokenizer = self._processor.tokenizer
        text = tokenizer.apply_chat_template(
            messages, chat_template=self._template, tokenize=False, add_generation_prompt=True
        )
        inputs = self._processor(text=text, images=image, return_tensors="pt").to(self._device)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        inputs = _pad_inputs_for_attention_alignment(inputs, pad_token_id=pad)
        forked = [self._device] if self._device.type == "cuda" else []
        with self._on_device(self._model), torch.inference_mode(), torch.random.fork_rng(devices=forked):
            torch.manual_seed(seed)
            out = self._model.generate(
                **inputs, max_new_tokens=self._config.max_new_tokens, **self._config.generation_kwargs
            )
        new_tokens = out[0][inputs["input_ids"].shape[1] :]
        rewritten = printable(clean_response(tokenizer.decode(new_tokens, skip_special_tokens=True))).strip()
        return rewritten or prompt
