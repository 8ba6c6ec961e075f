"""Prompt enhancement on the tiny engine: the resident Gemma rewrites the prompt with Lightricks'
instructions (the tiny Gemma's rewrite is gibberish), the rewrite is what is rendered, and a seed gives
the same rewrite every time."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from openreel.engine import enhance
from openreel.engine.enhance import EnhancementUnavailable, PromptEnhancer, gemma3_instructions, printable


def _noop(step: int, total: int) -> None:
    pass


def _generations(engine: Any, monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Each generate call's inputs, decoded, as the enhancer made them."""
    model = engine.enhancer._model
    tokenizer = engine.enhancer._processor.tokenizer
    calls: list[dict[str, Any]] = []
    generate = model.generate

    def spy(**inputs: Any) -> torch.Tensor:
        text = tokenizer.decode(inputs["input_ids"][0]).replace("\u2581", " ")  # the tiny vocabulary's spaces
        calls.append({"text": text, "image": "pixel_values" in inputs})
        return generate(**inputs)

    monkeypatch.setattr(model, "generate", spy)
    return calls


def test_the_rewrite_is_rendered_and_repeats_for_a_seed(tiny_engine, tiny_plan, monkeypatch) -> None:
    calls = _generations(tiny_engine, monkeypatch)
    plan = tiny_plan(enhance_prompt=True)
    clip = tiny_engine.render(plan, None, None, _noop)
    assert clip.prompt and clip.prompt != plan.prompt
    # Lightricks' text-to-video instructions, then the user's prompt as ltx-core words it.
    assert gemma3_instructions().t2v.strip()[:60] in calls[0]["text"]
    assert f"user prompt: {plan.prompt}" in calls[0]["text"] and not calls[0]["image"]

    again = tiny_engine.render(plan, None, None, _noop)
    assert again.prompt == clip.prompt and np.array_equal(again.frames, clip.frames)
    verbatim = tiny_engine.render(tiny_plan(prompt=clip.prompt), None, None, _noop)
    assert verbatim.prompt is None and np.array_equal(verbatim.frames, clip.frames)
    assert tiny_engine.enhancer.rewrite(plan.prompt, plan.seed + 1, None) != clip.prompt


def test_image_to_video_enhancement_reads_the_first_frame(tiny_engine, tiny_plan, monkeypatch) -> None:
    calls = _generations(tiny_engine, monkeypatch)
    frame = Image.new("RGB", (320, 180), (200, 40, 40))
    clip = tiny_engine.render(tiny_plan(enhance_prompt=True, has_first_frame=True), frame, None, _noop)
    assert clip.prompt
    assert calls[0]["image"] and gemma3_instructions().i2v.strip()[:60] in calls[0]["text"]
    assert "User Raw Input Prompt: a red fox running through fresh snow." in calls[0]["text"]


def test_without_lightricks_instructions_enhancement_is_off_and_says_how_to_add_them(
    tiny_engine, tiny_plan, monkeypatch
) -> None:
    monkeypatch.setattr(enhance.importlib.util, "find_spec", lambda name: None)
    enhancer = PromptEnhancer(tiny_engine.pipe, torch.device("cpu"), "2.0", tiny_engine.prompts.on_device)
    assert enhancer.error is not None and "pip install --no-deps ltx-core" in enhancer.error
    with pytest.raises(EnhancementUnavailable):
        enhancer.rewrite("a fox", 1, None)
    # An LTX-2.5 checkpoint enhances with its own prompt_enhancer (the tiny one has none), never its
    # text encoder.
    lacking = PromptEnhancer(tiny_engine.pipe, torch.device("cpu"), "2.5", tiny_engine.prompts.on_device)
    assert lacking.error is not None and "prompt_enhancer" in lacking.error


def test_generated_text_keeps_only_what_can_be_stored() -> None:
    assert printable("a\x00b\x07c\nd\te\ufffd") == "abc\nd\te\ufffd"
