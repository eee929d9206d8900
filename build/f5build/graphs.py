"""The three exported graphs as torch modules over f5-tts' and Vocos' own submodules.

They call the original layers (same weights, same code) and re-implement only the glue that does not
export or that must see the bucket's padding mask:

* TextEncoderGraph: f5-tts' TextEmbedding.forward without `int(seq_len.max().item())` (the legacy
  exporter would bake the length), returning the cond and the "drop text" embeddings in one pass.
  With text_mask_padding (F5TTS v1) the uncond embedding is zero except at the real text positions,
  so it depends on the text length, not only on N: it is computed per request, not per bucket.
* StepGraph: one Euler step of CFM.sample's CFG-guided ODE: cond/uncond batch-concat exactly as
  DiT.forward(cfg_infer=True), one DiT pass, v = v_c + (v_c - v_u) * cfg, x + dt * v. Attention keys
  beyond each row's length are masked, so padding never changes the real frames (f5-tts' own B=1 path
  has no padding at all; ours is equal to it in every bucket).
* VocoderGraph: Vocos.decode with the ISTFT written as a real-valued DFT basis (window folded in)
  + conv_transpose1d overlap-add + window-envelope division: torch.istft does not export. The trim
  follows the head's padding ("center": (F-1)*hop samples, "same": F*hop; see VocoderSpec).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from f5rt.manifest import VocoderSpec

TEXT_INPUTS = ("text_ids", "mask")
TEXT_OUTPUTS = ("text_cond", "text_uncond")
STEP_INPUTS = ("x", "cond", "text_cond", "text_uncond", "mask", "t", "dt", "cfg")
STEP_OUTPUTS = ("x_next",)
VOCODER_INPUTS = ("mel",)
VOCODER_OUTPUTS = ("audio",)


class TextEncoderGraph(nn.Module):
    """text_ids int32 (B, N) with -1 padding, mask bool (B, N) -> (text_cond, text_uncond) (B, N, D)."""

    def __init__(self, dit: nn.Module) -> None:
        super().__init__()
        self.te = dit.text_embed

    def forward(self, text_ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        te = self.te
        ids = (text_ids.long() + 1).masked_fill(~mask, 0)  # 0 = filler; nothing beyond the row's length
        filler = ids == 0
        both = torch.cat((ids, torch.zeros_like(ids)), dim=0)  # cond rows, then drop-text rows
        valid = torch.cat((mask, mask), dim=0).unsqueeze(-1)
        pad = torch.cat((filler, filler), dim=0).unsqueeze(-1)
        h = te.text_embed(both).masked_fill(~valid, 0.0)
        if te.extra_modeling:
            n = text_ids.shape[1]
            h = h + te.freqs_cis[:n, :].unsqueeze(0) * valid.to(h.dtype)
            if te.mask_padding:
                h = h.masked_fill(pad, 0.0)
                for block in te.text_blocks:
                    h = masked_convnext_v2(block, h, valid).masked_fill(pad, 0.0)
            else:
                h = te.text_blocks(h)
        cond, uncond = h.chunk(2, dim=0)
        return cond, uncond


def masked_convnext_v2(block: nn.Module, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """f5-tts' ConvNeXtV2Block with its GRN norm taken over the row's valid frames only.

    GRN divides by the L2 norm over the whole sequence axis, so frames past the request's length
    would change every real frame; summing over `valid` frames gives exactly the unpadded result.
    """
    residual = x
    h = block.dwconv(x.transpose(1, 2)).transpose(1, 2)
    h = block.act(block.pwconv1(block.norm(h)))
    grn = block.grn
    gx = torch.sqrt((h * h * valid.to(h.dtype)).sum(dim=1, keepdim=True))
    nx = gx / (gx.mean(dim=-1, keepdim=True) + 1e-6)
    h = grn.gamma * (h * nx) + grn.beta + h
    return residual + block.pwconv2(h)


class StepGraph(nn.Module):
    """One CFG-guided Euler step: (x, cond, text_cond, text_uncond, mask, t, dt, cfg) -> x_next."""

    def __init__(self, dit: nn.Module) -> None:
        super().__init__()
        self.dit = dit

    def forward(
        self,
        x: torch.Tensor,
        cond: torch.Tensor,
        text_cond: torch.Tensor,
        text_uncond: torch.Tensor,
        mask: torch.Tensor,
        t: torch.Tensor,
        dt: torch.Tensor,
        cfg: torch.Tensor,
    ) -> torch.Tensor:
        dit = self.dit
        temb = dit.time_embed(t)
        x_c = dit.input_embed(x, cond, text_cond, drop_audio_cond=False, audio_mask=mask)
        x_u = dit.input_embed(x, cond, text_uncond, drop_audio_cond=True, audio_mask=mask)
        h = torch.cat((x_c, x_u), dim=0)
        t2 = torch.cat((temb, temb), dim=0)
        m2 = torch.cat((mask, mask), dim=0)
        rope = dit.rotary_embed.forward_from_seq_len(x.shape[1])
        residual = h
        for block in dit.transformer_blocks:
            h = block(h, t2, mask=m2, rope=rope)
        if dit.long_skip_connection is not None:
            h = dit.long_skip_connection(torch.cat((h, residual), dim=-1))
        out = dit.proj_out(dit.norm_out(h, t2))
        v_c, v_u = out.chunk(2, dim=0)
        v = v_c + (v_c - v_u) * cfg[:, None, None]
        return x + dt[:, None, None] * v


class ExportAttnProcessor:
    """f5-tts' AttnProcessor (torch backend) in a form that exports lean and always masks keys.

    Same projections, q/k norms, rotary embedding (partial heads too) and output masking, but the
    key mask is a (B, 1, 1, N) additive bias (0 / -inf) on explicit scores instead of SDPA's boolean
    mask, which the exporter expands to (B, heads, N, N) with NaN guards around it (that alone took
    over half of the step's time in ONNX Runtime).
    """

    def __init__(self, pe_attn_head: int | None) -> None:
        self.pe_attn_head = pe_attn_head

    def __call__(
        self, attn: nn.Module, x: torch.Tensor, mask: torch.Tensor | None = None, rope: Any = None
    ) -> torch.Tensor:
        from x_transformers.x_transformers import apply_rotary_pos_emb

        b = x.shape[0]
        heads = attn.heads
        q, k, v = attn.to_q(x), attn.to_k(x), attn.to_v(x)
        d = k.shape[-1] // heads
        q, k, v = (y.view(b, -1, heads, d).transpose(1, 2) for y in (q, k, v))
        if attn.q_norm is not None:
            q = attn.q_norm(q)
        if attn.k_norm is not None:
            k = attn.k_norm(k)
        if rope is not None:
            freqs, xpos_scale = rope
            q_scale, k_scale = (xpos_scale, xpos_scale**-1.0) if xpos_scale is not None else (1.0, 1.0)
            pn = self.pe_attn_head
            if pn is None:
                q, k = apply_rotary_pos_emb(q, freqs, q_scale), apply_rotary_pos_emb(k, freqs, k_scale)
            else:
                q = torch.cat((apply_rotary_pos_emb(q[:, :pn], freqs, q_scale), q[:, pn:]), dim=1)
                k = torch.cat((apply_rotary_pos_emb(k[:, :pn], freqs, k_scale), k[:, pn:]), dim=1)
        # Scale q, not the (B, heads, N, N) scores: one pass less over the largest tensor of the
        # step, and smaller products inside the score matmul when it runs in FP16.
        scores = torch.matmul(q * (d**-0.5), k.transpose(-1, -2))
        if mask is not None:
            bias = torch.where(mask, 0.0, float("-inf")).to(scores.dtype)
            scores = scores + bias[:, None, None, :]
        out = torch.matmul(scores.softmax(dim=-1), v)
        out = attn.to_out[0](out.transpose(1, 2).reshape(b, -1, heads * d))
        if mask is not None:
            out = out.masked_fill(~mask.unsqueeze(-1), 0.0)
        return out


@contextlib.contextmanager
def export_attention(dit: nn.Module) -> Iterator[None]:
    """Swap every block's attention processor for ExportAttnProcessor while exporting, then restore."""
    attns = [b.attn for b in dit.transformer_blocks]
    saved = [a.processor for a in attns]
    try:
        for a, p in zip(attns, saved, strict=True):
            a.processor = ExportAttnProcessor(p.pe_attn_head)
        yield
    finally:
        for a, p in zip(attns, saved, strict=True):
            a.processor = p


def istft_basis(n_fft: int, window: np.ndarray) -> np.ndarray:
    """(2 * (n_fft//2 + 1), 1, n_fft) kernel mapping [Re X; Im X] to windowed irfft frames.

    irfft: x[n] = 1/N * sum_k c_k (Re X_k cos(2 pi k n / N) - Im X_k sin(2 pi k n / N)),
    c_0 = c_{N/2} = 1, else 2; the imaginary parts of the DC and Nyquist bins are ignored, as irfft does.
    """
    bins = n_fft // 2 + 1
    k = np.arange(bins)[:, None]
    n = np.arange(n_fft)[None, :]
    ang = 2.0 * np.pi * k * n / n_fft
    c = np.full((bins, 1), 2.0)
    c[0] = c[-1] = 1.0
    re = c * np.cos(ang) / n_fft
    im = -c * np.sin(ang) / n_fft
    im[0] = im[-1] = 0.0
    return (np.concatenate([re, im], axis=0) * window[None, :])[:, None, :].astype(np.float32)


def vocoder_spec(vocos: nn.Module) -> VocoderSpec:
    """The frames -> samples rule of a Vocos ISTFT head, as the manifest records it."""
    istft = vocos.head.istft
    return VocoderSpec(padding=str(istft.padding), hop_length=int(istft.hop_length), n_fft=int(istft.n_fft))


class VocoderGraph(nn.Module):
    """mel (B, 100, F) -> audio (B, S): Vocos backbone + head with an exportable ISTFT, equal to Vocos.decode.

    The overlap-add of F windowed frames spans (F-1)*hop + win samples; the head's padding decides the
    trim: "center" is torch.istft(center=True), n_fft//2 off both ends, S = (F-1)*hop (the released
    vocos-mel-24khz); "same" is Vocos' own ISTFT, (win-hop)//2 off both ends, S = F*hop.
    """

    def __init__(self, vocos: nn.Module) -> None:
        super().__init__()
        self.backbone = vocos.backbone
        head = vocos.head
        self.out = head.out
        istft = head.istft
        self.spec = vocoder_spec(vocos)
        self.hop = int(istft.hop_length)
        self.win = int(istft.win_length)
        if self.win != int(istft.n_fft):
            raise ValueError(f"Vocos ISTFT with win_length {self.win} != n_fft {istft.n_fft} is not supported")
        self.trim = self.win // 2 if self.spec.padding == "center" else (self.win - self.hop) // 2
        window = istft.window.double().numpy()
        self.register_buffer("basis", torch.from_numpy(istft_basis(int(istft.n_fft), window)), persistent=False)
        self.register_buffer(
            "win_sq", torch.from_numpy((window**2).astype(np.float32))[None, None, :], persistent=False
        )

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        x = self.out(self.backbone(mel)).transpose(1, 2)
        mag, p = x.chunk(2, dim=1)
        mag = torch.clip(torch.exp(mag), max=1e2)
        spec = torch.cat((mag * torch.cos(p), mag * torch.sin(p)), dim=1)
        frames = F.conv_transpose1d(spec, self.basis, stride=self.hop)  # overlap-add of windowed frames
        ones = torch.ones_like(mel[:1, :1, :])
        envelope = F.conv_transpose1d(ones, self.win_sq, stride=self.hop)
        pad = self.trim
        length = frames.shape[-1]
        y = frames[:, 0, pad : length - pad] / envelope[:, 0, pad : length - pad]
        return y
