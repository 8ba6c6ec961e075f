"""A tiny random-weight LTX-2 (video + audio) that runs on a CPU in about a second.

It exists so the real loading and rendering code path (``LTX2Pipeline.from_pretrained`` on a
diffusers directory) can be exercised offline, in tests and on machines without a GPU. Its output
is noise from random weights. The configuration keeps the real model's 32x spatial / 8x temporal
video compression and the real audio timing (16 kHz mel hop 160, vocoder upsampling 160), because
diffusers' own test sizes make token counts explode or the audio far too short. It has the real
checkpoints' layout: dev weights (a scheduler that shifts dynamically), a distilled LoRA beside them
and the x2 latent upsampler, so the recipes run on it as on Lightricks/LTX-2. Unlike the real model,
its video decoder is causal: the first decoded frame depends on the first latent frame alone, so tests
can hold a first-frame render to the VAE round trip of the image (the real, non-causal decoder lets
frame 0 also see the frames after it). Its transformer has two blocks: the per-layer cost is what a CPU
pays for, and two already carry every kind of layer. LTX-2.0's STG perturbs block 29, which a two-block
model lacks, so its quality renders report their guidance as CFG and modality alone; the tests of STG
build it with 30 blocks. Every value here was measured to work with diffusers 0.42.1 / transformers 5.23
(see shared notes, engine.md section 6).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from openreel.engine.weights import OPENREEL_CONFIG, UPSAMPLER_DIR

TINY_DISTILLED_LORA = "tiny-distilled-lora.safetensors"

if TYPE_CHECKING:
    import torch
    from diffusers import AutoencoderKLLTX2Video, LTX2Pipeline
    from diffusers.pipelines.ltx2.latent_upsampler import LTX2LatentUpsamplerModel
    from transformers import GemmaTokenizer

TINY_SEED = 0
TINY_LAYERS = 2
_SPECIAL_TOKENS = ("<pad>", "<eos>", "<bos>", "<unk>", "<mask>")
_TURN_TOKENS = ("<start_of_turn>", "<end_of_turn>")
# Gemma 3's image tokens (its tokenizer's boi, eoi and image tokens), which prompt enhancement's processor
# places around a first frame.
_IMAGE_TOKENS = {
    "boi_token": "<start_of_image>",
    "eoi_token": "<end_of_image>",
    "image_token": "<image_soft_token>",
}
# In every finished checkpoint; the rename in save_tiny_checkpoint makes it appear with the rest.
_MARKER = "model_index.json"


def build_tokenizer() -> GemmaTokenizer:
    """Gemma tokenizer made in code: Gemma 3's special, turn and image tokens plus the 256 byte-fallback
    pieces, with Gemma 3's chat format (prompt enhancement's).

    Byte fallback makes every UTF-8 prompt tokenize to real, prompt-dependent ids without a download.
    """
    from transformers import GemmaTokenizer

    from openreel.engine.enhance import GEMMA3_CHAT_TEMPLATE

    vocab = {tok: i for i, tok in enumerate((*_SPECIAL_TOKENS, *_TURN_TOKENS, *_IMAGE_TOKENS.values()))}
    for byte in range(256):
        vocab[f"<0x{byte:02X}>"] = len(vocab)
    tokenizer = GemmaTokenizer(vocab=vocab, merges=[], extra_special_tokens=_IMAGE_TOKENS)
    tokenizer.add_tokens(list(_TURN_TOKENS), special_tokens=True)
    tokenizer.chat_template = GEMMA3_CHAT_TEMPLATE
    return tokenizer


def build_tiny_pipeline(num_layers: int = TINY_LAYERS) -> LTX2Pipeline:
    """All eight components at toy width, seeded so every build has identical weights.

    The seed is applied inside a forked RNG so building does not disturb the caller's torch RNG.
    """
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TINY_SEED)
        return _build_components(num_layers)


def build_tiny_upsampler() -> LTX2LatentUpsamplerModel:
    """The x2 latent upsampler at toy width, for the two-stage (1080p) recipe; seeded like the rest."""
    import torch
    from diffusers.pipelines.ltx2.latent_upsampler import LTX2LatentUpsamplerModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TINY_SEED)
        return LTX2LatentUpsamplerModel(
            in_channels=4,
            mid_channels=32,  # GroupNorm(32, mid_channels)
            num_blocks_per_stage=1,
            dims=3,
            spatial_upsample=True,
            temporal_upsample=False,
            rational_spatial_scale=2.0,
            use_rational_resampler=True,
        )


def build_tiny_vae(**overrides: Any) -> AutoencoderKLLTX2Video:
    """The tiny video VAE: the real model's 32x spatial / 8x temporal compression at toy width (three
    spatio-temporal blocks, patch size 4), with a causal decoder. Unseeded: build it inside a seeded RNG."""
    from diffusers import AutoencoderKLLTX2Video

    config: dict[str, Any] = {
        "latent_channels": 4,
        "block_out_channels": (8, 8, 8),
        "decoder_block_out_channels": (8, 8, 8),
        "layers_per_block": (1, 1, 1, 1),
        "decoder_layers_per_block": (1, 1, 1, 1),
        "spatio_temporal_scaling": (True, True, True),
        "decoder_spatio_temporal_scaling": (True, True, True),
        "decoder_inject_noise": (False, False, False, False),
        "downsample_type": ("spatiotemporal", "spatiotemporal", "spatiotemporal"),
        "down_block_types": ("LTX2VideoDownBlock3D",) * 3,
        "upsample_type": ("spatiotemporal", "spatiotemporal", "spatiotemporal"),
        "upsample_residual": (False, False, False),
        "upsample_factor": (1, 1, 1),
        "timestep_conditioning": False,
        "patch_size": 4,
        "patch_size_t": 1,
        "encoder_causal": True,
        "decoder_causal": True,
    }
    vae = AutoencoderKLLTX2Video(**{**config, **overrides})
    vae.use_framewise_encoding = False
    vae.use_framewise_decoding = False
    return vae


def _build_components(num_layers: int) -> LTX2Pipeline:
    from diffusers import (
        AutoencoderKLLTX2Audio,
        FlowMatchEulerDiscreteScheduler,
        LTX2Pipeline,
        LTX2VideoTransformer3DModel,
    )
    from diffusers.pipelines.ltx2 import LTX2TextConnectors
    from diffusers.pipelines.ltx2.vocoder import LTX2Vocoder
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration

    tokenizer = build_tokenizer()
    text_encoder = Gemma3ForConditionalGeneration(
        Gemma3Config(
            text_config={
                "vocab_size": len(tokenizer),
                "hidden_size": 32,
                "intermediate_size": 64,
                "num_hidden_layers": 2,
                "num_attention_heads": 2,
                "num_key_value_heads": 1,
                "head_dim": 8,
                "max_position_embeddings": 512,
                "sliding_window": 64,
            },
            vision_config={
                "hidden_size": 16,
                "intermediate_size": 32,
                "num_hidden_layers": 1,
                "num_attention_heads": 2,
                "image_size": 28,
                "patch_size": 14,
            },
            mm_tokens_per_image=4,
            boi_token_index=tokenizer.boi_token_id,
            eoi_token_index=tokenizer.eoi_token_id,
            image_token_index=tokenizer.image_token_id,
        )
    ).eval()
    # heads x head_dim of each connector must equal the Gemma hidden size (32).
    connectors = LTX2TextConnectors(
        caption_channels=32,
        text_proj_in_factor=3,
        video_connector_num_attention_heads=4,
        video_connector_attention_head_dim=8,
        video_connector_num_layers=1,
        video_connector_num_learnable_registers=None,
        audio_connector_num_attention_heads=4,
        audio_connector_attention_head_dim=8,
        audio_connector_num_layers=1,
        audio_connector_num_learnable_registers=None,
        connector_rope_base_seq_len=32,
        rope_type="split",
        rope_double_precision=False,
    )
    transformer = LTX2VideoTransformer3DModel(
        in_channels=4,
        out_channels=4,
        patch_size=1,
        patch_size_t=1,
        num_attention_heads=2,
        attention_head_dim=8,
        cross_attention_dim=16,
        audio_in_channels=4,
        audio_out_channels=4,
        audio_num_attention_heads=2,
        audio_attention_head_dim=4,
        audio_cross_attention_dim=8,
        num_layers=num_layers,
        qk_norm="rms_norm_across_heads",
        caption_channels=32,
        rope_type="split",
        rope_double_precision=False,
    )
    vae = build_tiny_vae()
    audio_vae = AutoencoderKLLTX2Audio(
        base_channels=4,
        output_channels=2,
        # Two levels below the first, as the real (1, 2, 4): the encoder compresses the mel 4 times in time
        # and bins, the latent grid the pipelines assume (an extension encodes the clip's sound).
        ch_mult=(1, 1, 1),
        num_res_blocks=1,
        attn_resolutions=None,
        in_channels=2,
        resolution=32,
        latent_channels=2,
        norm_type="pixel",
        causality_axis="height",
        mid_block_add_attention=False,
        sample_rate=16000,
        mel_hop_length=160,
        is_causal=True,
        mel_bins=8,
    )
    # Upsampling product 10*4*4 = 160 = mel hop x (16 kHz out / 16 kHz in): audio as long as the video.
    vocoder = LTX2Vocoder(
        in_channels=16,
        hidden_channels=32,
        out_channels=2,
        upsample_kernel_sizes=[20, 8, 8],
        upsample_factors=[10, 4, 4],
        resnet_kernel_sizes=[3],
        resnet_dilations=[[1, 3, 5]],
        output_sampling_rate=16000,
    )
    # The dev checkpoints' scheduler (diffusers' converter): dynamic shift 0.95-2.05, stretched to 0.1.
    scheduler = FlowMatchEulerDiscreteScheduler(
        use_dynamic_shifting=True,
        base_shift=0.95,
        max_shift=2.05,
        base_image_seq_len=1024,
        max_image_seq_len=4096,
        shift_terminal=0.1,
    )
    return LTX2Pipeline(
        scheduler=scheduler,
        vae=vae,
        audio_vae=audio_vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        connectors=connectors,
        transformer=transformer,
        vocoder=vocoder,
    )


def save_tiny_checkpoint(directory: Path, num_layers: int = TINY_LAYERS) -> Path:
    """Write the tiny pipeline as a normal diffusers directory, or reuse one that is already there.

    Built in a temporary sibling and renamed into place, so a crash or a concurrent writer never
    leaves a half-written checkpoint at ``directory``.
    """
    directory = Path(directory)
    if (directory / _MARKER).is_file():
        return directory
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        pipe = build_tiny_pipeline(num_layers)
        pipe.save_pretrained(tmp)
        build_tiny_upsampler().save_pretrained(tmp / UPSAMPLER_DIR)
        save_tiny_lora(tmp / TINY_DISTILLED_LORA, pipe.transformer, ("attn", "ff."), seed=TINY_SEED + 1)
        # Denoised on a quarter of the output grid: full size is slow on a CPU and shows nothing more.
        (tmp / OPENREEL_CONFIG).write_text(json.dumps({"grid_scale": 0.25}))
        try:
            os.replace(tmp, directory)
        except OSError:
            # Lost a race with another writer (target now a non-empty dir): theirs is as good as ours.
            if not (directory / _MARKER).is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return directory


def save_tiny_lora(
    path: Path,
    transformer: torch.nn.Module,
    targets: tuple[str, ...],
    *,
    seed: int,
    rank: int = 4,
    metadata: dict[str, str] | None = None,
) -> Path:
    """A random LoRA over the tiny transformer's linear layers whose names contain one of ``targets``, in
    Lightricks' key format (``diffusion_model.*`` with ``lora_A``/``lora_B``), so it loads through the same
    code as a real one. Its update is non-zero: it visibly changes the output."""
    import torch
    from safetensors.torch import save_file

    path = Path(path)
    generator = torch.Generator().manual_seed(seed)
    weights = {}
    for name, module in transformer.named_modules():
        if (
            isinstance(module, torch.nn.Linear)
            and name.startswith("transformer_blocks.")
            and any(t in name for t in targets)
        ):
            down = torch.randn(rank, module.in_features, generator=generator) * 0.5
            up = torch.randn(module.out_features, rank, generator=generator) * 0.5
            weights[f"diffusion_model.{name}.lora_A.weight"] = down
            weights[f"diffusion_model.{name}.lora_B.weight"] = up
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    save_file(weights, str(tmp), metadata=metadata)
    os.replace(tmp, path)
    return path


def save_tiny_reference_adapter(path: Path, rank: int = 4) -> Path:
    """A random IC-LoRA on the tiny transformer's self-attention, with Lightricks'
    ``reference_downscale_factor`` metadata."""
    return save_tiny_lora(
        path,
        build_tiny_pipeline().transformer,
        (".attn1.",),
        seed=TINY_SEED,
        rank=rank,
        metadata={"reference_downscale_factor": "1"},
    )
