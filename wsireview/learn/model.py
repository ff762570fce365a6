"""Gated-attention MIL (Ilse et al. 2018) with an instance classifier on the same hidden layer.

Each patch feature becomes a hidden vector h; gated attention gives it a weight within its
slide; the weighted mean of h is the slide's representation, classified by one head, while a
second head classifies every patch on its own (the instance head, P(lesion) of the patch).

With ``instance_hidden`` > 0 the instance head has a hidden layer of its own instead of sharing
h: the many verdicts of later rounds then shape the instance head without pulling the slide
head's representation away from what the slide labels taught it (on the demo cohorts, sharing
it cost the bag score up to a third of its slide AUC after the first reviewed queue). The
verdicts reach the slide prediction through the instance evidence instead
(``wsireview.learn.slide_rule``); the attention still learns from them directly. Bags are
processed as padded batches with a mask so several slides share one matrix multiply.
"""

from __future__ import annotations

import torch
from torch import nn


class SeededDropout(nn.Module):
    """``nn.Dropout`` drawing its masks from its own generator instead of torch's global one.

    Cross-validation trains its folds in parallel threads; with the global generator the masks
    would depend on how the threads interleave, and a seed would no longer fix the model.
    """

    def __init__(self, p: float, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.p = p
        self.generator = generator

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = torch.empty_like(x).bernoulli_(1.0 - self.p, generator=self.generator)
        return x * keep / (1.0 - self.p)


class GatedAttentionMIL(nn.Module):
    def __init__(self, in_dim: int, hidden: int = 64, attention: int = 32, dropout: float = 0.1,
                 generator: torch.Generator | None = None, instance_hidden: int = 0):
        super().__init__()
        self.embed = nn.Sequential(nn.Linear(in_dim, hidden), nn.Tanh(), SeededDropout(dropout, generator))
        self.attention_v = nn.Linear(hidden, attention)
        self.attention_u = nn.Linear(hidden, attention)
        self.attention_w = nn.Linear(attention, 1)
        self.slide_head = nn.Linear(hidden, 1)
        self.instance_head = nn.Linear(instance_hidden or hidden, 1)
        self.instance_embed = (nn.Sequential(nn.Linear(in_dim, instance_hidden), nn.Tanh(),
                                             SeededDropout(dropout, generator)) if instance_hidden else None)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """``x`` (B, N, D) padded bags, ``mask`` (B, N) True for real patches.

        Returns slide logits (B), attention weights (B, N; softmax within each bag, 0 on padding),
        raw attention logits (B, N) and instance logits (B, N).
        """
        h = self.embed(x)
        gate = torch.tanh(self.attention_v(h)) * torch.sigmoid(self.attention_u(h))
        a_logits = self.attention_w(gate).squeeze(-1)
        a_logits = a_logits.masked_fill(~mask, float("-inf"))
        weights = torch.softmax(a_logits, dim=1)
        pooled = torch.bmm(weights.unsqueeze(1), h).squeeze(1)
        return {
            "slide_logit": self.slide_head(pooled).squeeze(-1),
            "attention": weights,
            "attention_logit": a_logits,
            "instance_logit": self.instance_head(self.instance_embed(x) if self.instance_embed is not None
                                                 else h).squeeze(-1),
        }


def pad_bags(features: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack bags of different sizes into (B, N_max, D) with a (B, N_max) mask."""
    n_max = max(f.shape[0] for f in features)
    dim = features[0].shape[1]
    x = features[0].new_zeros((len(features), n_max, dim))
    mask = torch.zeros((len(features), n_max), dtype=torch.bool)
    for i, f in enumerate(features):
        x[i, : f.shape[0]] = f
        mask[i, : f.shape[0]] = True
    return x, mask
