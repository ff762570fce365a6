"""A round's settings as one value: what `retrain`, `evaluate` and the app run, stored with its version.

A model version keeps the spec it was trained with (``model_versions.params["spec"]``), so the
next round, from the command line or from the app, starts from the same encoder, positive label,
budget, strategy, seed and training parameters unless it is told otherwise.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


from wsireview.catalog import Catalog, ModelVersion
from wsireview.catalog.queries import latest_model_version
from wsireview.features.encoders import DEFAULT_ENCODER
from wsireview.learn.train import TrainParams


@dataclass(frozen=True)
class RoundSpec:
    encoder: str = DEFAULT_ENCODER
    positive: str = "lesion"  # the positive slide label; every other label is negative
    budget: int = 50  # patches queued for review
    strategy: str = "mix"
    seed: int = 0
    epochs: int | None = None  # train exactly this many epochs (None: early stopping decides)
    double_read: float = 0.0  # share of the queue that two different reviewers judge, blind to each other
    train: TrainParams = field(default_factory=TrainParams)

    def as_dict(self) -> dict[str, Any]:
        return {**{f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "train"},
                "train": self.train.as_dict()}

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> "RoundSpec":
        """The spec a version stored; keys this code does not know (or no longer knows) are ignored."""
        names = {f.name for f in dataclasses.fields(TrainParams)}
        train = TrainParams(**{k: v for k, v in (doc.get("train") or {}).items() if k in names})
        own = {f.name for f in dataclasses.fields(cls)} - {"train"}
        return cls(**{k: v for k, v in doc.items() if k in own}, train=train)

    def replace(self, **changes: Any) -> "RoundSpec":
        """A copy with ``changes``; ``None`` values mean "keep" (how the command line passes options)."""
        # A name both levels have (seed) is the spec's: train_params() hands it down to training.
        own_names = {f.name for f in dataclasses.fields(self)} - {"train"}
        train_names = {f.name for f in dataclasses.fields(TrainParams)} - own_names
        own = {k: v for k, v in changes.items() if v is not None and k not in train_names}
        train = {k: v for k, v in changes.items() if v is not None and k in train_names}
        spec = dataclasses.replace(self, **own)
        if train:
            spec = dataclasses.replace(spec, train=dataclasses.replace(spec.train, **train))
        return spec

    def train_params(self) -> TrainParams:
        """The training parameters of this round, with its seed and epoch cap applied."""
        params = dataclasses.replace(self.train, seed=self.seed)
        if self.epochs is not None:
            params.max_epochs = self.epochs
            params.min_epochs = min(params.min_epochs, self.epochs)
        return params


def version_spec(version: ModelVersion) -> RoundSpec:
    """The spec a version was trained with; versions from before specs were stored get theirs
    rebuilt from what they recorded (encoder, positive label, strategy, budget, training params)."""
    params = version.params or {}
    if "spec" in params:
        return RoundSpec.from_dict(params["spec"])
    return RoundSpec.from_dict({
        "encoder": version.encoder, "positive": version.positive_label,
        "budget": params.get("budget", 50), "strategy": params.get("strategy", "mix"),
        "seed": (params.get("train") or {}).get("seed", 0), "epochs": params.get("epochs_requested"),
        "train": params.get("train") or {},
    })


def latest_spec(catalog: Catalog) -> RoundSpec | None:
    """The spec of the newest ready model version (None before the first round)."""
    version = latest_model_version(catalog)
    return version_spec(version) if version is not None else None
