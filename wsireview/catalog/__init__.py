"""The slide catalog: typed tables, engine set-up and migrations, read queries."""

from wsireview.catalog.db import Catalog, open_catalog
from wsireview.catalog.models import (
    ADJUDICATION,
    ARTIFACT,
    FAILED,
    LESION,
    MISSING,
    NOT_LESION,
    READ,
    READY,
    UNSURE,
    VERDICTS,
    Claim,
    FeatureSet,
    ModelVersion,
    Patch,
    ReviewQueueItem,
    Review,
    Slide,
    SlidePrediction,
)

__all__ = [
    "ADJUDICATION", "ARTIFACT", "FAILED", "LESION", "MISSING", "NOT_LESION", "READ", "READY", "UNSURE", "VERDICTS",
    "Catalog", "Claim", "FeatureSet", "ModelVersion", "Patch", "Review", "ReviewQueueItem",
    "Slide", "SlidePrediction", "open_catalog",
]
