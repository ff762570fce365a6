"""How hard a demo cohort is: how obvious its lesions are, and what else looks suspicious.

``easy`` is the original generator (bold lesions of crowded, large, dark, pleomorphic nuclei;
nothing else in the tissue resembles them): a model separates its patches before any verdict, so
it cannot show what the verdicts add. ``medium`` and ``hard`` draw milder lesions (fewer, smaller,
paler atypical nuclei mixed with the normal ones) and put **mimics** on every slide, lesion or
normal: clusters of inflammatory cells (crowded small dark round nuclei), inflamed stroma
(scattered lymphocytes) and crushed tissue (smeared hematoxylin), which draw a model's attention
and are not lesion. Inflammation is commoner on lesion slides, as around real tumours, so slide
labels alone teach a model to take it for lesion: the reviewers' verdicts must correct that. The
ground truth lists the mimics as not lesion.
"""

from __future__ import annotations

from dataclasses import dataclass

INFLAMMATORY, CRUSHED, INFLAMED_STROMA = "inflammatory", "crushed", "inflamed stroma"
MIMIC_KINDS = (INFLAMMATORY, CRUSHED, INFLAMED_STROMA)


@dataclass(frozen=True)
class LesionStyle:
    """How a lesion is drawn. The defaults are the easy (original) lesion, number for number."""

    cell_keep: float = 0.8  # share of the 14 px lattice cells that hold an atypical nucleus
    size: tuple[float, float] = (5.8, 3.4)  # long semi-axis: base + span * uniform (px)
    roundness: tuple[float, float] = (0.65, 0.3)  # short / long semi-axis: base + span * uniform
    irregular2: tuple[float, float] = (0.08, 0.14)  # 2-lobe outline amplitude: base + span * uniform
    irregular3: tuple[float, float] = (0.05, 0.12)  # 3-lobe outline amplitude: base + span * uniform
    darkness: tuple[float, float] = (0.8, 0.35)  # hematoxylin density: base + span * uniform
    eosin_loss: float = 0.45  # share of the stroma's eosin the lesion removes
    diffuse_haem: float = 0.10  # hematoxylin added across the lesion (basophilic cytoplasm)
    keeps_normal_nuclei: bool = False  # normal cells remain among the atypical ones


@dataclass(frozen=True)
class Difficulty:
    name: str
    lesion: LesionStyle
    lesion_share: tuple[float, float]  # lesion share of the tissue on a lesion slide (uniform range)
    lesion_regions: tuple[int, int]  # regions per lesion slide: integers in [low, high)
    min_lesion_diameter: float  # level-0 px
    # Mimics per slide, integers in [low, high). Inflammation is commoner on lesion slides (as around
    # real tumours), so a model that learns from slide labels alone takes it for lesion evidence.
    inflammatory_on_lesion_slides: tuple[int, int] = (0, 0)
    inflammatory_on_normal_slides: tuple[int, int] = (0, 0)
    crushed: tuple[int, int] = (0, 0)
    mimic_diameter: tuple[float, float] = (0.0, 0.0)  # level-0 px, uniform range
    # Share of the tissue where the stroma is inflamed (scattered lymphocytes), likewise commoner on
    # lesion slides.
    inflamed_stroma_on_lesion_slides: float = 0.0
    inflamed_stroma_on_normal_slides: float = 0.0

    @property
    def has_mimics(self) -> bool:
        return max(self.inflammatory_on_lesion_slides[1], self.inflammatory_on_normal_slides[1], self.crushed[1],
                   self.inflamed_stroma_on_lesion_slides, self.inflamed_stroma_on_normal_slides) > 0


DIFFICULTIES: dict[str, Difficulty] = {
    "easy": Difficulty(
        "easy", LesionStyle(), lesion_share=(0.006, 0.018), lesion_regions=(1, 4), min_lesion_diameter=130.0,
    ),
    "medium": Difficulty(
        "medium",
        LesionStyle(cell_keep=0.5, size=(4.8, 2.4), roundness=(0.7, 0.25), irregular2=(0.05, 0.1),
                    irregular3=(0.03, 0.08), darkness=(0.68, 0.28), eosin_loss=0.25, diffuse_haem=0.05,
                    keeps_normal_nuclei=True),
        lesion_share=(0.012, 0.025), lesion_regions=(2, 4), min_lesion_diameter=260.0,
        inflammatory_on_lesion_slides=(2, 4), inflammatory_on_normal_slides=(0, 2), crushed=(1, 3),
        mimic_diameter=(230.0, 420.0), inflamed_stroma_on_lesion_slides=0.3, inflamed_stroma_on_normal_slides=0.06,
    ),
    "hard": Difficulty(
        "hard",
        LesionStyle(cell_keep=0.4, size=(4.6, 2.0), roundness=(0.72, 0.22), irregular2=(0.04, 0.08),
                    irregular3=(0.02, 0.06), darkness=(0.65, 0.25), eosin_loss=0.2, diffuse_haem=0.04,
                    keeps_normal_nuclei=True),
        lesion_share=(0.01, 0.02), lesion_regions=(2, 5), min_lesion_diameter=230.0,
        inflammatory_on_lesion_slides=(3, 6), inflammatory_on_normal_slides=(0, 2), crushed=(2, 4),
        mimic_diameter=(230.0, 420.0), inflamed_stroma_on_lesion_slides=0.35, inflamed_stroma_on_normal_slides=0.08,
    ),
}
DEFAULT_DIFFICULTY = "easy"


def difficulty(name: str) -> Difficulty:
    """The named difficulty; a one-line error naming the choices otherwise."""
    try:
        return DIFFICULTIES[name]
    except KeyError:
        raise ValueError(f"difficulty must be one of {', '.join(DIFFICULTIES)}, not {name!r}") from None
