"""A slide's prediction: the attention-MIL bag score combined with the instance evidence.

The bag score alone never hears the verdicts (they teach the instance head), so a slide whose
patches the reviewers confirmed as lesion could stay negative. The prediction is

    P(positive) = sigmoid(bias + w_bag * z(bag probability) + w_evidence * z(evidence))

where the evidence is the mean P(lesion) of the slide's top ``evidence_k(n)`` patches after the
verdicts: a confirmed lesion patch counts 1, a rejected one 0 (artifacts left the bag already),
and ``z`` is a logit standardised over all slides scored by the same model (median and MAD):
every cross-validation fold model has its own scale and offset, so their out-of-fold scores only
become comparable, and a rule fitted on them only applies to the final model, on that common
scale. The weights are a logistic regression (L2, non-negative weights) fitted on the out-of-fold
scores of the labelled slides, the evidence there taken before verdicts (what the model says of
a slide nobody reviewed: once every lesion of the labelled slides is confirmed, evidence with
verdicts would separate them perfectly and the rule would trust the model's evidence far more
than it deserves on unreviewed slides), so how much each part counts is learned on the cohort,
not picked. Verdicts then count where the rule is applied. With too few labelled slides for cross-validation there is nothing to fit on: the two
plain logits count half each. A slide with a confirmed lesion patch is positive whatever the
scores say (at least ``CONFIRMED``). Unlabelled slides follow the same rule.

Each prediction records what drove it: ``verdict`` (a confirmed lesion), ``bag`` or
``instances`` (the part whose term pulls furthest in the direction of the prediction).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

CONFIRMED = 0.95  # the least P(positive) of a slide with a confirmed lesion patch
EPS = 1e-4
L2 = 1.0  # ridge penalty of the fitted rule (on standardised logits)
BAG, INSTANCES, VERDICT = "bag", "instances", "verdict"


def logit(p: np.ndarray | float) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), EPS, 1.0 - EPS)
    return np.log(p) - np.log1p(-p)


def evidence_k(n_patches: int) -> int:
    """Patches averaged for the evidence: 0.5% of the slide's patches, at least 1 (a lesion covers
    0.5-5% of the tissue: the top patches of a lesion slide are lesion, not its average)."""
    return max(1, int(round(0.005 * n_patches)))


def instance_evidence(probability: np.ndarray, verdict_rows: np.ndarray, verdict_labels: np.ndarray) -> float:
    """Mean of the top ``evidence_k`` P(lesion) with verdicts in place (lesion 1, not lesion 0)."""
    p = np.asarray(probability, dtype=np.float64).copy()
    if p.size == 0:
        return 0.0
    if verdict_rows.size:
        p[verdict_rows] = verdict_labels
    k = evidence_k(p.size)
    return float(np.partition(p, p.size - k)[p.size - k :].mean())


def standardised_logits(probability: np.ndarray, reference: np.ndarray | None = None) -> np.ndarray:
    """Logits of one model's scores of all slides, centred on the median of the ``reference``
    scores' logits (default: themselves) and divided by their (normal-consistent) median absolute
    deviation: that model's scale, removed."""
    z = logit(probability)
    ref = logit(reference) if reference is not None else z
    centre = float(np.median(ref))
    scale = 1.4826 * float(np.median(np.abs(ref - centre)))
    if scale < 1e-6:
        scale = float(ref.std()) if ref.std() > 1e-6 else 1.0
    return (z - centre) / scale


@dataclass
class SlideRule:
    bias: float = 0.0
    w_bag: float = 0.5
    w_evidence: float = 0.5
    fitted_on: int = 0  # labelled slides the weights were fitted on (0: the default halves)

    @property
    def standardised(self) -> bool:
        """A fitted rule weighs standardised logits (see the module), the default plain ones."""
        return self.fitted_on > 0

    def as_dict(self) -> dict:
        return asdict(self)

    def inputs(self, bag: np.ndarray, evidence: np.ndarray,
               model_evidence: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """What the rule weighs, from one model's bag probabilities and evidence of all slides;
        ``model_evidence`` (the evidence before verdicts) sets the evidence's scale."""
        if self.standardised:
            return standardised_logits(bag), standardised_logits(evidence, model_evidence)
        return logit(bag), logit(evidence)

    def terms(self, x_bag: np.ndarray, x_evidence: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.w_bag * np.asarray(x_bag), self.w_evidence * np.asarray(x_evidence)

    def predict(self, x_bag: np.ndarray, x_evidence: np.ndarray, confirmed: np.ndarray | None = None) -> np.ndarray:
        """P(positive) from the rule's inputs (see ``inputs``)."""
        t_bag, t_ev = self.terms(x_bag, x_evidence)
        p = 0.5 * (1.0 + np.tanh(0.5 * (self.bias + t_bag + t_ev)))  # the logistic, without overflow far out
        if confirmed is not None:
            p = np.where(confirmed, np.maximum(p, CONFIRMED), p)
        return p

    def drivers(self, x_bag: np.ndarray, x_evidence: np.ndarray, confirmed: np.ndarray) -> list[str]:
        t_bag, t_ev = self.terms(x_bag, x_evidence)
        sign = np.where(self.predict(x_bag, x_evidence) >= 0.5, 1.0, -1.0)
        return [VERDICT if c else (BAG if sb * s >= se * s else INSTANCES)
                for c, sb, se, s in zip(confirmed, t_bag, t_ev, sign)]


def fit_rule(x_bag: np.ndarray, x_evidence: np.ndarray, y: np.ndarray, iterations: int = 50) -> SlideRule:
    """Logistic regression of ``y`` on the two standardised logits (ridge, weights >= 0).

    Newton steps; a weight that comes out negative (that part ranks slides backwards on this
    cohort) is set to 0 and the other refitted. Both classes are needed, else the default rule.
    """
    y = np.asarray(y, dtype=np.float64)
    if y.size < 4 or y.min() == y.max():
        return SlideRule()
    z = np.stack([np.asarray(x_bag, np.float64), np.asarray(x_evidence, np.float64)], axis=1)
    mean, std = z.mean(0), z.std(0)
    std = np.where(std < 1e-6, 1.0, std)
    zs = (z - mean) / std
    active = [0, 1]
    for _ in range(2):
        w = _newton(zs[:, active], y, iterations)
        if (w[1:] >= 0).all():
            break
        active = [a for a, wa in zip(active, w[1:]) if wa >= 0]
        if not active:
            w = _newton(zs[:, []], y, iterations)
            break
    weights = np.zeros(2)
    weights[active] = w[1:]
    raw = weights / std  # back to unstandardised logits
    bias = float(w[0] - (raw * mean).sum())
    return SlideRule(bias, float(raw[0]), float(raw[1]), int(y.size))


def _newton(x: np.ndarray, y: np.ndarray, iterations: int) -> np.ndarray:
    """Ridge logistic regression (the intercept not penalised): [intercept, weights...]."""
    xb = np.concatenate([np.ones((x.shape[0], 1)), x], axis=1)
    w = np.zeros(xb.shape[1])
    penalty = np.full(xb.shape[1], L2)
    penalty[0] = 0.0
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-(xb @ w)))
        grad = xb.T @ (p - y) + penalty * w
        hess = (xb * (p * (1 - p))[:, None]).T @ xb + np.diag(penalty) + 1e-9 * np.eye(xb.shape[1])
        step = np.linalg.solve(hess, grad)
        w -= step
        if float(np.abs(step).max()) < 1e-8 or not math.isfinite(float(w.sum())):
            break
    return w
