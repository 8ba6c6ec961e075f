"""An extension's sound held fixed at the start of its render, as its frames are.

diffusers' LTX-2 pipelines give every audio token one timestep, so a clip's sound cannot enter them as a
condition. The transformer takes a timestep per audio token all the same (it embeds them token by token,
as it does the video's), so the engine pins the lead's tokens itself: before every transformer call they
are set to the clip's own sound, encoded, at timestep 0, while the sigma the prompt and the cross-modal
attention see stays the step's; after each stage they are put back clean (the sampler moved them). That
is what Lightricks' prefix conditioning does to the audio latent (``video_extend_lora.yaml``: clean,
timestep 0); the tokens pinned are those wholly inside the lead.

The sound is encoded as ltx-core does (``ltx_core/model/audio_vae/ops.py`` ``AudioProcessor`` and
``audio_vae.py`` ``encode_audio``): resampled to the audio VAE's rate, a magnitude STFT (Hann window of
1024, the encoder's ``n_fft`` default, hop of the VAE's ``mel_hop_length``, centred, reflect-padded), a
Slaney mel filter bank over 0 to half the rate, the log clamped at 1e-5, then the encoder's mean.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from transformers.audio_utils import mel_filter_bank

from openreel.engine.join import resampled

N_FFT = 1024  # ltx_core/model/audio_vae/audio_vae.py AudioEncoder(n_fft=1024)


def log_mel(wave: torch.Tensor, rate: int, mel_bins: int, hop: int) -> torch.Tensor:
    """(channels, samples) at ``rate`` -> log-mel (1, channels, frames, mel_bins), as torchaudio's
    MelSpectrogram(power=1, mel_scale="slaney", norm="slaney") and ltx-core's log compute it."""
    window = torch.hann_window(N_FFT, device=wave.device, dtype=wave.dtype)
    spectrum = torch.stft(
        wave,
        N_FFT,
        hop_length=hop,
        win_length=N_FFT,
        window=window,
        center=True,
        pad_mode="reflect",
        return_complex=True,
    ).abs()
    bank = mel_filter_bank(N_FFT // 2 + 1, mel_bins, 0.0, rate / 2, rate, norm="slaney", mel_scale="slaney")
    mel = torch.matmul(spectrum.transpose(-1, -2), torch.from_numpy(bank).to(spectrum))
    return torch.log(torch.clamp(mel, min=1e-5)).unsqueeze(0)


class AudioLead:
    """The clip's sound over the lead, encoded and ready to pin in a pipeline's audio tokens."""

    def __init__(self, pipe: Any, sound: np.ndarray, sound_rate: int, seconds: float, device: str) -> None:
        vae = pipe.audio_vae
        config = vae.config
        wave = resampled(sound, sound_rate, config.sample_rate, config.in_channels)
        mel = log_mel(
            torch.from_numpy(wave).to(device), config.sample_rate, config.mel_bins, config.mel_hop_length
        )
        raw = vae.encode(mel.to(vae.dtype)).latent_dist.mode().float()
        per_second = (
            pipe.audio_sampling_rate / pipe.audio_hop_length / pipe.audio_vae_temporal_compression_ratio
        )
        # Only tokens wholly inside the lead: its sound ends where the new sound starts.
        self.tokens = min(int(seconds * per_second), raw.shape[2])
        self.raw = raw[:, :, : self.tokens]  # as the pipeline returns latents: (1, C, L, M), denormalized
        packed = pipe._pack_audio_latents(self.raw)
        self.clean = pipe._normalize_audio_latents(packed, vae.latents_mean, vae.latents_std)

    def pin(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        """A transformer call's arguments with the lead's tokens clean and at timestep 0."""
        hidden = kwargs["audio_hidden_states"].clone()
        hidden[:, : self.tokens] = self.clean.to(hidden)
        timestep = kwargs["audio_timestep"]
        per_token = timestep.reshape(-1, 1).expand(-1, hidden.shape[1]).clone()
        per_token[:, : self.tokens] = 0
        # audio_sigma, which the prompt modulation and the cross-modal attention take, stays the step's.
        return {**kwargs, "audio_hidden_states": hidden, "audio_timestep": per_token}

    def restore(self, audio: torch.Tensor) -> torch.Tensor:
        """A stage's audio latents (1, C, L, M) with the lead's put back as encoded."""
        audio = audio.clone()
        audio[:, :, : self.tokens] = self.raw.to(audio)
        return audio
