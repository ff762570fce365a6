"""Every slide's prediction from a round's models (see ``wsireview.learn.slide_rule`` for the rule).

The rule is fitted on the out-of-fold scores of the labelled slides (what cross-validation
predicted for each slide while it was held out), then applied to the final model's scores of
every slide, labelled or not. The cross-validated slide AUC reported for the version is that of
the rule on the out-of-fold scores.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from wsireview.learn.metrics import accuracy, roc_auc
from wsireview.learn.slide_rule import SlideRule, fit_rule, instance_evidence
from wsireview.learn.train import BagData, CVResult, Prediction


@dataclass
class SlideScore:
    probability: float  # the combined prediction
    bag_probability: float  # the attention-MIL slide head alone
    evidence: float  # top instance P(lesion), verdicts in place
    driver: str  # bag, instances or verdict
    confirmed: bool  # a reviewer confirmed a lesion patch on this slide


@dataclass
class SlidePredictions:
    predictions: dict[int, SlideScore]
    rule: SlideRule
    cv_auc: float | None
    cv_accuracy: float | None


def _verdicts(bag: BagData) -> tuple[np.ndarray, np.ndarray]:
    """Rows and labels of the bag's verdicts (not the look-alikes' soft labels)."""
    rows = np.flatnonzero((~torch.isnan(bag.inst) & (bag.inst_w >= 1.0)).numpy())
    return rows, bag.inst.numpy()[rows].astype(np.float64)


def predict_slides(data: list[BagData], preds: list[Prediction], cv: CVResult,
                   targets: dict[int, int]) -> SlidePredictions:
    verdicts = {b.slide_id: _verdicts(b) for b in data}
    confirmed = {sid: bool((labels == 1).any()) for sid, (_, labels) in verdicts.items()}

    def evidence(sid: int, probability: np.ndarray) -> float:
        return instance_evidence(probability, *verdicts[sid])

    rule, cv_auc, cv_acc = SlideRule(), None, None
    labelled = [b.slide_id for b in data if b.slide_id in cv.oof_slide]
    if labelled:
        bag = np.array([cv.oof_slide[s] for s in labelled])
        ev = np.array([evidence(s, cv.oof_instance[s]) for s in labelled])
        y = np.array([targets[s] for s in labelled])
        rule = fit_rule(bag, ev, y)
        p = rule.predict(bag, ev, np.array([confirmed[s] for s in labelled]))
        cv_auc, cv_acc = roc_auc(y, p), accuracy(y, p)
    ids = [b.slide_id for b in data]
    bag = np.array([p.slide_probability for p in preds])
    ev = np.array([evidence(sid, p.instance_probability) for sid, p in zip(ids, preds)])
    conf = np.array([confirmed[sid] for sid in ids])
    prob = rule.predict(bag, ev, conf)
    drivers = rule.drivers(bag, ev, conf)
    out = {sid: SlideScore(float(prob[i]), float(bag[i]), float(ev[i]), drivers[i], bool(conf[i]))
           for i, sid in enumerate(ids)}
    return SlidePredictions(out, rule, cv_auc, cv_acc)
