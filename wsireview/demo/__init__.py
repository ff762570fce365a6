"""Synthetic H&E cohort with known lesions: slides, labels and ground truth for a fresh machine."""

from wsireview.demo.cohort import SIZES, DemoCohort, DemoError, DemoSlide, generate_cohort, generate_slide, parse_size
from wsireview.demo.truth import read_mask

__all__ = ["SIZES", "DemoCohort", "DemoError", "DemoSlide", "generate_cohort", "generate_slide", "parse_size", "read_mask"]
