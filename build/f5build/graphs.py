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
  has no padding at all; ours is equal to it in every bucket). The rotary embedding's cos/sin are a
  constant table for the bucket table's largest frame count, sliced to N in the graph (see
  RotaryTable), instead of x_transformers' per-step Range + Einsum + Cos/Sin.
* VocoderGraph: Vocos.decode with the ISTFT written as a real-valued DFT basis (window folded in)
  + conv_transpose1d overlap-add + window-envelope division: torch.istft does not export. The trim
  follows the head's padding ("center": (F-1)*hop samples, "same": F*hop; see VocoderSpec).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, NamedTuple

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
        if getattr(te, "average_upsampling", False):
            h = average_upsample(h, ~pad.squeeze(-1), valid.squeeze(-1).sum(dim=1))
        cond, uncond = h.chunk(2, dim=0)
        return cond, uncond


def average_upsample(h: torch.Tensor, is_text: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
    """f5-tts' `average_upsample_text_by_mask` (DiT's text_embedding_average_upsampling) without its
    per-row Python loop: row b's T text positions spread over its first F frames, each position held
    for F // T frames and the last F % T positions one frame longer; frames past F, and rows with no
    text, are zero.

    f5-tts builds the frame -> position list by repeating each index; here frame f's position is
    computed directly, so the graph keeps its dynamic batch and frame axes: with B = F // T,
    R = F % T and S = (T - R) * B frames in the short runs, f < S reads position f // B and
    f >= S reads T - R + (f - S) // (B + 1). The text positions are the row's first T (the
    front-end writes the line's ids first, then padding), as f5-tts' mask also assumes.
    """
    n = h.shape[1]
    t = is_text.sum(dim=1, keepdim=True)  # (B, 1) text positions per row
    f = frames.to(t.dtype).unsqueeze(1)  # (B, 1) frames per row
    pos = torch.arange(n, device=h.device).unsqueeze(0)  # (1, N)
    tt = t.clamp(min=1)
    base, rem = f // tt, f % tt
    short = (tt - rem) * base
    src = torch.where(pos < short, pos // base.clamp(min=1), tt - rem + (pos - short) // (base + 1))
    keep = (pos < f) & (t > 0)
    src = src.clamp(0, n - 1).masked_fill(~keep, 0)
    out = torch.gather(h, 1, src.unsqueeze(-1).expand(-1, -1, h.shape[-1]))
    return out.masked_fill(~keep.unsqueeze(-1), 0.0)


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


class RotaryTable(NamedTuple):
    """x_transformers' rotary cos/sin for positions 0..N-1: (N, rot_dim) each, pairs interleaved.

    What `RotaryEmbedding.forward_from_seq_len(N)` gives as angles, `apply_rotary_pos_emb` takes the
    cos and sin of, per layer and per step; here they are the table's first N rows. `rot_dim` and
    `head_dim` are Python ints (static in the trace): rot_dim < head_dim rotates the first channels only.
    """

    cos: torch.Tensor
    sin: torch.Tensor
    rot_dim: int
    head_dim: int


def rotary_table(rotary: nn.Module, frames: int, head_dim: int) -> RotaryTable:
    """cos/sin of x_transformers' rotary angles for positions 0..frames-1, made in float64, stored float32.

    The angles are f5-tts' own: position * the module's float32 `inv_freq` buffer / its interpolation
    factor, each pair of channels sharing one frequency (x_transformers' `(d r)` interleave). f5-tts
    rounds position * inv_freq to float32 before the cos (half an ulp of the angle: 1.2e-4 at
    position 2815); in float64 only the final cast rounds (half an ulp of cos/sin, <= 3e-8), so the
    table is at least as exact as the per-step computation, and nothing of it runs on the device.
    """
    if getattr(rotary, "scale", None) is not None:
        raise ValueError(
            "the DiT's rotary embedding uses xpos scaling (use_xpos=True), whose scale depends on N; "
            "F5-TTS never does and the step graph's rotary table does not support it"
        )
    if frames <= 0:
        raise ValueError(f"rotary table needs a positive frame count, got {frames}")
    inv_freq = rotary.inv_freq.detach().to(device="cpu", dtype=torch.float64)
    pos = torch.arange(frames, dtype=torch.float64)
    angles = torch.outer(pos, inv_freq) / float(rotary.interpolation_factor)
    angles = torch.stack((angles, angles), dim=-1).reshape(frames, -1)
    rot_dim = int(angles.shape[-1])
    if rot_dim > head_dim:
        raise ValueError(f"rotary embedding of {rot_dim} channels for attention heads of {head_dim}")
    return RotaryTable(angles.cos().to(torch.float32), angles.sin().to(torch.float32), rot_dim, int(head_dim))


def apply_rotary_table(t: torch.Tensor, rope: RotaryTable) -> torch.Tensor:
    """x_transformers' apply_rotary_pos_emb(t, freqs, 1.0) with freqs.cos()/freqs.sin() read from `rope`.

    t (B, heads, N, d); the first rot_dim channels are rotated (partial rotary as GPT-J), the rest kept.
    Same products in the same order as x_transformers (its `* scale` is a multiply by 1.0), so equal
    cos/sin give bit-equal results.
    """
    from x_transformers.x_transformers import rotate_half

    if rope.rot_dim == rope.head_dim:
        return t * rope.cos + rotate_half(t) * rope.sin
    head, tail = t[..., : rope.rot_dim], t[..., rope.rot_dim :]
    return torch.cat((head * rope.cos + rotate_half(head) * rope.sin, tail), dim=-1)


class StepGraph(nn.Module):
    """One CFG-guided Euler step: (x, cond, text_cond, text_uncond, mask, t, dt, cfg) -> x_next.

    `max_frames` is the largest N the graph is ever run at (the bucket table's largest frame count):
    the rotary cos/sin are a constant (max_frames, rot_dim) table sliced to N per call (in ONNX a
    Slice of the initializer with the end read from x's shape), not computed per step. N beyond
    the table cannot occur: the runtime's bucket table is the one exported with (requests longer
    than its largest bucket are chunked or refused with NoBucketError); the eager module refuses it.
    Runs under `export_attention(dit)`, whose processor applies the table.
    """

    def __init__(self, dit: nn.Module, max_frames: int) -> None:
        super().__init__()
        self.dit = dit
        self.max_frames = int(max_frames)
        attn = dit.transformer_blocks[0].attn
        table = rotary_table(dit.rotary_embed, self.max_frames, attn.inner_dim // attn.heads)
        self.rot_dim, self.head_dim = table.rot_dim, table.head_dim
        self.register_buffer("rope_cos", table.cos)  # named initializers of the ONNX graph
        self.register_buffer("rope_sin", table.sin)

    def rope(self, n: int) -> RotaryTable:
        return RotaryTable(self.rope_cos[:n], self.rope_sin[:n], self.rot_dim, self.head_dim)

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
        if not torch.jit.is_tracing():  # python checks; the trace sees N as a tensor
            if x.shape[1] > self.max_frames:
                raise ValueError(
                    f"step graph called with {x.shape[1]} frames; its rotary table holds {self.max_frames} "
                    "(the bucket table's largest frame count): re-export with larger buckets"
                )
            if not all(isinstance(b.attn.processor, ExportAttnProcessor) for b in dit.transformer_blocks):
                raise RuntimeError("StepGraph must run inside export_attention(dit) (its rotary table needs it)")
        temb = dit.time_embed(t)
        x_c = dit.input_embed(x, cond, text_cond, drop_audio_cond=False, audio_mask=mask)
        x_u = dit.input_embed(x, cond, text_uncond, drop_audio_cond=True, audio_mask=mask)
        h = torch.cat((x_c, x_u), dim=0)
        t2 = torch.cat((temb, temb), dim=0)
        m2 = torch.cat((mask, mask), dim=0)
        rope = self.rope(x.shape[1])
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
    over half of the step's time in ONNX Runtime). The rotary embedding comes as StepGraph's
    RotaryTable (precomputed cos/sin); x_transformers' (freqs, xpos_scale) is still accepted.
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
            pn = self.pe_attn_head
            if isinstance(rope, RotaryTable):
                rot_q = rot_k = lambda y: apply_rotary_table(y, rope)
            else:
                freqs, xpos_scale = rope
                q_scale, k_scale = (xpos_scale, xpos_scale**-1.0) if xpos_scale is not None else (1.0, 1.0)
                rot_q = lambda y: apply_rotary_pos_emb(y, freqs, q_scale)  # noqa: E731
                rot_k = lambda y: apply_rotary_pos_emb(y, freqs, k_scale)  # noqa: E731
            if pn is None:
                q, k = rot_q(q), rot_k(k)
            else:
                q = torch.cat((rot_q(q[:, :pn]), q[:, pn:]), dim=1)
                k = torch.cat((rot_k(k[:, :pn]), k[:, pn:]), dim=1)
        # The plain pattern TensorRT fuses into one MHA kernel (f5build.attention_pattern checks it):
        # MatMul -> additive key mask -> Softmax -> MatMul, nothing else on a (B, heads, N, N) tensor.
        # The scale goes on q before the first MatMul, as TensorRT's docs ask ("Fused Attention":
        # Q or K multiplied by the attention scale before the first BMM; NVIDIA/TensorRT#4167 for
        # the 10.x restrictions); it also saves a pass over the largest tensor of the step and keeps
        # the FP16 products inside the score matmul small. The mask is one Add of a (B, 1, 1, N)
        # 0 / -inf bias (docs: "an add mask offsetting Q * K^T"): exact for padding, since every row
        # has at least one real key.
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
