"""A training-time alignment aid: a CTC head on a middle DiT block, dropped at export.

F5-TTS learns where each character is spoken only implicitly: the text enters the DiT as character
embeddings at frames 0..len(text)-1, padded to the mel length, and the attention has to discover the
monotonic map from frames to characters through the flow-matching loss alone. f5-tts' own recipe
gets there with ~300,000 frames per update for hundreds of thousands of updates; a 2-core CPU does
1,200 frames per update, and the embedded model's alignment signals stalled below chance for
20,000 steps (docs/training.md).

This head reads the hidden states after one DiT block (`block`, 1-based) and is trained with CTC to
spell the line's tokens in order over the utterance's frames. Its gradient asks the blocks below to
carry, at every frame, which character is being spoken there: the alignment the velocity prediction
needs. It is a training loss only: the head is a separate module with its own optimizer, never part
of the DiT's state dict, the EMA or the release, so inference, the export and the released layout
stay f5-tts' own. Batches whose text the CFG recipe dropped (20 % of them) add no CTC term: with no
text there is nothing to spell.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class CTCOptions:
    weight: float = 0.0  # 0 = off (f5-tts' loss alone)
    block: int = 3  # the head reads the output of this DiT block (1-based)
    seed: int = 7  # the head's initialisation (a generator of its own: the main RNG stream is untouched)
    # only batch rows whose flow time t (0 = noise, 1 = data) is below this spell the line: where x_t still
    # carries the speech the head can read the characters off the audio (an ASR shortcut) instead of
    # learning where the text goes, which is what sampling from noise needs (docs/training.md)
    max_time: float = 1.0

    def __post_init__(self) -> None:
        if self.weight < 0:
            raise ValueError(f"--train-ctc must be >= 0, got {self.weight}")
        if self.block < 1:
            raise ValueError(f"--train-ctc-block must be >= 1, got {self.block}")
        if not 0 < self.max_time <= 1:
            raise ValueError(f"--train-ctc-max-time must be in (0, 1], got {self.max_time}")


class CTCAlignment:
    """Attaches to a CFM's DiT, records what one forward pass needs, and returns the CTC term.

    Use: `loss = ctc.loss(targets, lens)` right after `cfm(mel, text=..., lens=...)`; it reads the
    hidden states and the drop_text flag that forward pass recorded through hooks (f5-tts' CFM draws
    drop_text inside its forward, so a hook is the only place to see it without changing f5-tts).
    """

    def __init__(
        self, cfm: torch.nn.Module, vocab_size: int, opts: CTCOptions, device: torch.device, lr: float
    ) -> None:
        dit: Any = cfm.transformer
        if opts.block > len(dit.transformer_blocks):
            raise ValueError(f"--train-ctc-block {opts.block}: the DiT has only {len(dit.transformer_blocks)} blocks")
        self.opts = opts
        gen = torch.Generator().manual_seed(opts.seed)
        head = torch.nn.Linear(dit.dim, vocab_size + 1)  # class 0 = CTC blank, token id i -> class i + 1
        with torch.no_grad():
            bound = 1.0 / dit.dim**0.5
            head.weight.copy_(torch.empty_like(head.weight).uniform_(-bound, bound, generator=gen))
            head.bias.zero_()
        self.head = head.to(device)
        self.opt = torch.optim.AdamW(self.head.parameters(), lr=lr, weight_decay=0.01)  # the head's own
        self._hidden: torch.Tensor | None = None
        self._drop_text = False
        self._time: torch.Tensor | None = None
        dit.transformer_blocks[opts.block - 1].register_forward_hook(self._keep_hidden)
        dit.register_forward_pre_hook(self._keep_flags, with_kwargs=True)

    def _keep_hidden(self, _module: torch.nn.Module, _args: Any, output: torch.Tensor) -> None:
        self._hidden = output

    def _keep_flags(self, _module: torch.nn.Module, _args: Any, kwargs: dict[str, Any]) -> None:
        self._drop_text = bool(kwargs.get("drop_text", False))
        self._time = kwargs.get("time")
        self._hidden = None

    def _take_hidden(self, caller: str) -> torch.Tensor:
        """The hidden states the last DiT forward pass recorded, consumed (each pass is read once)."""
        hidden, self._hidden = self._hidden, None
        if hidden is None:
            raise RuntimeError(f"CTCAlignment.{caller}: no DiT forward pass recorded since the last call")
        return hidden

    def state_dict(self) -> dict[str, Any]:
        """The head and its optimizer, for the training state."""
        return {"ctc_head": self.head.state_dict(), "ctc_optimizer": self.opt.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> bool:
        """Resume the head from a training state; False when the state was trained without it."""
        if "ctc_head" not in state:
            return False
        self.head.load_state_dict(state["ctc_head"])
        self.opt.load_state_dict(state["ctc_optimizer"])
        return True

    @torch.no_grad()
    def spell(
        self,
        cfm: torch.nn.Module,
        x: torch.Tensor,
        cond: torch.Tensor,
        text: torch.Tensor,
        time: float,
        from_frame: int = 0,
    ) -> list[int]:
        """The head's greedy reading of one sequence (batch 1) at flow time `time`, of its frames from
        `from_frame` on: per frame the best class, repeats collapsed and blanks dropped, as token ids.
        Runs the DiT in eval mode; the next training step puts it back in train mode."""
        cfm.eval()
        t = torch.full((x.shape[0],), float(time), device=x.device)
        cfm.transformer(x=x, cond=cond, text=text, time=t, drop_audio_cond=False, drop_text=False)
        hidden = self._take_hidden("spell")
        best = self.head(hidden[0, from_frame:]).argmax(-1).tolist()
        out, prev = [], 0
        for c in best:
            if c != prev and c != 0:
                out.append(c - 1)
            prev = c
        return out

    def step(self, grad_clip: float) -> None:
        """The head's update, after the backward pass of the loss its term joined."""
        torch.nn.utils.clip_grad_norm_(self.head.parameters(), grad_clip)
        self.opt.step()

    def loss(self, targets: list[list[int]], lens: torch.Tensor) -> torch.Tensor | None:
        """The CTC term of the last forward pass (mean over the rows it covers of per-token loss), or None
        when that pass dropped the text or no row's flow time is below `max_time`."""
        hidden = self._take_hidden("loss")
        if self._drop_text:
            return None
        rows = torch.arange(hidden.shape[0], device=hidden.device)
        if self.opts.max_time < 1:
            if self._time is None:
                raise RuntimeError("CTCAlignment.loss: the DiT forward pass was not given its flow time")
            rows = rows[self._time.reshape(-1).to(hidden.device) < self.opts.max_time]
            if rows.numel() == 0:
                return None
        keep = rows.tolist()
        logp = F.log_softmax(self.head(hidden[rows]).float(), dim=-1).transpose(0, 1)  # (N, B, classes)
        flat = torch.tensor([t + 1 for i in keep for t in targets[i]], dtype=torch.long)
        target_lens = torch.tensor([len(targets[i]) for i in keep], dtype=torch.long)
        return F.ctc_loss(
            logp,
            flat.to(logp.device),
            lens.to(hidden.device)[rows].to(torch.long),
            target_lens.to(logp.device),
            blank=0,
            zero_infinity=True,
        )
