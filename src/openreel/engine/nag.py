"""Normalized Attention Guidance (arXiv 2505.21179): a negative prompt on a distilled model, in one pass.

CFG needs a second transformer pass per step and burns distilled weights; NAG instead steers inside
the text cross-attention. The connectors' outputs for the negative prompt are appended to the positive
ones along the sequence, so every per-token operation the transformer applies to its text context
(the LTX-2.0 caption projection, the LTX-2.3 prompt modulation) reaches both halves unchanged. Each
video and audio text cross-attention then attends to the two halves separately and extrapolates:

    z = z+ * s - z- * (s - 1);  z *= min(1, tau * |z+|_1 / |z|_1);  out = alpha * z + (1 - alpha) * z+

The processors stay installed; with no negative context pending they are the stock ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from diffusers.models.attention_dispatch import dispatch_attention_fn

from openreel.engine.recipes import NAG


@dataclass
class NAGState:
    """What the hooks share for one render: the negative context. (Nothing here changes during a
    transformer call: the processors run inside compiled blocks, where a counter would be a new constant,
    and a new graph, at every call.)"""

    nag: NAG | None = None
    negative: tuple[torch.Tensor, torch.Tensor] | None = None  # (text-encoder embeds, attention mask)
    split: int | None = None  # length of the positive half of the text context
    _inside: bool = field(default=False, repr=False)

    @property
    def steering(self) -> bool:
        """The negative context is appended: every text cross-attention steers."""
        return self.nag is not None and self.split is not None

    def clear(self) -> None:
        self.nag, self.negative, self.split = None, None, None


def nag_combine(positive: torch.Tensor, negative: torch.Tensor, nag: NAG) -> torch.Tensor:
    pos, neg = positive.float(), negative.float()
    guided = pos * nag.scale - neg * (nag.scale - 1)
    norm_pos = pos.norm(p=1, dim=-1, keepdim=True)
    norm_guided = guided.norm(p=1, dim=-1, keepdim=True)
    ratio = torch.nan_to_num(norm_guided / norm_pos, nan=10.0, posinf=10.0)
    guided = torch.where(ratio > nag.tau, guided * (nag.tau * norm_pos / (norm_guided + 1e-7)), guided)
    return (guided * nag.alpha + pos * (1 - nag.alpha)).to(positive.dtype)


class NAGAttnProcessor:
    """Wraps a text cross-attention's processor; splits the context in two when NAG is on."""

    def __init__(self, base: Any, state: NAGState) -> None:
        self.base = base
        self.state = state

    def __call__(
        self,
        attn: Any,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        query_rotary_emb: Any = None,
        key_rotary_emb: Any = None,
    ) -> torch.Tensor:
        split, nag = self.state.split, self.state.nag
        if split is None or nag is None or encoder_hidden_states is None:
            return self.base(attn, hidden_states, encoder_hidden_states, attention_mask, query_rotary_emb)
        gate_logits = attn.to_gate_logits(hidden_states) if attn.to_gate_logits is not None else None
        query = attn.norm_q(attn.to_q(hidden_states)).unflatten(2, (attn.heads, -1))
        key = attn.norm_k(attn.to_k(encoder_hidden_states)).unflatten(2, (attn.heads, -1))
        value = attn.to_v(encoder_hidden_states).unflatten(2, (attn.heads, -1))
        # The transformer turned the 2-D mask into an additive bias of shape (batch, 1, keys).
        bias = attention_mask[:, None] if attention_mask is not None else None

        def attend(keys: slice) -> torch.Tensor:
            out = dispatch_attention_fn(
                query,
                key[:, keys],
                value[:, keys],
                attn_mask=bias[..., keys] if bias is not None else None,
                dropout_p=0.0,
                is_causal=False,
                backend=self.base._attention_backend,
                parallel_config=self.base._parallel_config,
            )
            return out.flatten(2, 3).to(query.dtype)

        out = nag_combine(attend(slice(0, split)), attend(slice(split, None)), nag)
        if gate_logits is not None:
            gates = 2.0 * torch.sigmoid(gate_logits)
            out = (out.unflatten(2, (attn.heads, -1)) * gates.unsqueeze(-1)).flatten(2, 3)
        return attn.to_out[1](attn.to_out[0](out))


def install(pipe: Any, state: NAGState) -> None:
    """NAG processors on every block's video and audio text cross-attention, and a hook that appends the
    negative context to the connectors' output while ``state.negative`` is set."""
    for block in pipe.transformer.transformer_blocks:
        for attention in (block.attn2, block.audio_attn2):
            attention.set_processor(NAGAttnProcessor(attention.processor, state))

    def append_negative(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> Any:
        if state.negative is None or state._inside:
            return output
        embeds, mask = state.negative
        state._inside = True
        try:
            video, audio, neg_mask = module(embeds, mask, *args[2:], **kwargs)
        finally:
            state._inside = False
        pos_video, pos_audio, pos_mask = output
        if pos_video.shape[0] != video.shape[0]:
            raise ValueError("NAG takes one positive context per negative one (no CFG batch)")
        state.split = pos_video.shape[1]
        return (
            torch.cat([pos_video, video], dim=1),
            torch.cat([pos_audio, audio], dim=1),
            torch.cat([pos_mask, neg_mask], dim=1),
        )

    pipe.connectors.register_forward_hook(append_negative, with_kwargs=True)
