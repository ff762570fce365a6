"""Every slide's prediction from a round's models (see ``wsireview.learn.slide_rule`` for the rule).

The rule is fitted on the out-of-fold scores of the labelled slides (what cross-validation
predicted for each slide while it was held out, each fold model's scores standardised over all
the slides it scored), then applied to the final model's scores of every slide, labelled or
not. The cross-validated slide AUC reported for the version is that of the rule on the
out-of-fold scores; ``bag_auc`` that of the bag score alone, on the same common scale.
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
    bag_auc: float | None = None


def _verdicts(bag: BagData) -> tuple[np.ndarray, np.ndarray]:
    """Rows and labels of the bag's verdicts (not the look-alikes' soft labels)."""
    rows = np.flatnonzero((~torch.isnan(bag.inst) & (bag.inst_w >= 1.0)).numpy())
    return rows, bag.inst.numpy()[rows].astype(np.float64)


def predict_slides(data: list[BagData], preds: list[Prediction], cv: CVResult,
                   targets: dict[int, int]) -> SlidePredictions:
    verdicts = [_verdicts(b) for b in data]
    confirmed = np.array([bool((labels == 1).any()) for _, labels in verdicts])

    none = (np.zeros(0, np.int64), np.zeros(0))

    def evidence(instance: list[np.ndarray], with_verdicts: bool = True) -> np.ndarray:
        return np.array([instance_evidence(p, *(v if with_verdicts else none)) for p, v in zip(instance, verdicts)])

    rule, cv_auc, cv_acc, bag_auc = SlideRule(), None, None, None
    if cv.held_out:
        # Out of fold, on a common scale: each fold model's scores standardised over every slide.
        # The rule is fitted on the evidence before verdicts, and measured with them.
        fitted = SlideRule(fitted_on=1)
        oof = np.full((len(data), 3), np.nan)
        for held, slide_p, instance in zip(cv.held_out, cv.member_slide, cv.members):
            model_ev = evidence(instance, with_verdicts=False)
            x_bag, x_model_ev = fitted.inputs(slide_p, model_ev)
            _, x_ev = fitted.inputs(slide_p, evidence(instance), model_ev)
            oof[held, 0], oof[held, 1], oof[held, 2] = x_bag[held], x_model_ev[held], x_ev[held]
        labelled = [i for i in range(len(data)) if data[i].slide_id in targets and not np.isnan(oof[i, 0])]
        y = np.array([targets[data[i].slide_id] for i in labelled])
        rule = fit_rule(oof[labelled, 0], oof[labelled, 1], y)
        if rule.standardised:
            p = rule.predict(oof[labelled, 0], oof[labelled, 2], confirmed[labelled])
            cv_auc, cv_acc, bag_auc = roc_auc(y, p), accuracy(y, p), roc_auc(y, oof[labelled, 0])
    bag = np.array([p.slide_probability for p in preds])
    instance = [p.instance_probability for p in preds]
    ev = evidence(instance)
    x_bag, x_ev = rule.inputs(bag, ev, evidence(instance, with_verdicts=False))
    prob = rule.predict(x_bag, x_ev, confirmed)
    drivers = rule.drivers(x_bag, x_ev, confirmed)
    out = {b.slide_id: SlideScore(float(prob[i]), float(bag[i]), float(ev[i]), drivers[i], bool(confirmed[i]))
           for i, b in enumerate(data)}
    return SlidePredictions(out, rule, cv_auc, cv_acc, bag_auc)
