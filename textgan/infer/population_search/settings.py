"""What a search is asked to do, checked before anything is loaded: budget, algorithm, scorer, stop rule.

Standard library only: `textgan search` rejects a bad option (exit 2, nothing written) before torch is
imported, and the same checks guard the Python API.

Budgets are population x generations. The research behind textgan spends 100,000 evaluations per prompt in
four shapes (PRESETS); `--budget N` with a population takes N // population generations.
"""

from dataclasses import asdict, dataclass
from typing import Optional

from textgan.errors import UsageError

PRESETS = {"100x1000": (100, 1000), "200x500": (200, 500), "500x200": (500, 200), "1000x100": (1000, 100)}
ALGORITHMS = ("ga", "cmaes", "random")
SPACES = ("z", "w+")
# What each scorer name measures (D-based ones need a checkpoint that holds D):
SCORERS = {
    "clip": "cosine between the image and the prompt in a CLIP model's space",
    "augclip": "the CLIP cosine averaged over random DiffAugment views (AugCLIP: robust to adversarial pixels)",
    "d": "the discriminator's text-conditioned logit (realism and match, as D judged them in training)",
    "contrastive": "cosine between D's contrastive heads' image and text embeddings (trained on real pairs)",
    "augd": "d averaged over the same random DiffAugment views",
    "augcontrastive": "contrastive averaged over the same random DiffAugment views",
}
VERIFIERS = ("auto", "shapes_alignment", "clip", "none")
DEFAULT_POPULATION = 100
DEFAULT_GENERATIONS = 10


def parse_scorer(spec: str) -> dict:
    """{name: weight} of `clip`, `contrastive+d` (equal weights) or `contrastive=1,d=0.5`; weights > 0."""
    text = str(spec).strip()
    if not text:
        raise UsageError(f"--scorer is empty; choose from {', '.join(SCORERS)}, or a weighted sum like contrastive=1,d=0.5")
    parts = [p.strip() for p in text.replace("+", ",").split(",")]
    weights = {}
    for part in parts:
        name, _, weight = part.partition("=")
        name = name.strip()
        if name not in SCORERS:
            raise UsageError(f"--scorer {spec!r}: unknown scorer {name!r}; choose from {', '.join(SCORERS)} "
                             "(a weighted sum: contrastive=1,d=0.5)")
        if name in weights:
            raise UsageError(f"--scorer {spec!r}: {name!r} is given twice")
        try:
            value = float(weight) if weight.strip() else 1.0
        except ValueError:
            raise UsageError(f"--scorer {spec!r}: the weight of {name!r} must be a number, got {weight!r}") from None
        if not 0 < value < float("inf"):
            raise UsageError(f"--scorer {spec!r}: the weight of {name!r} must be a finite number > 0, got {value}")
        weights[name] = value
    return weights


@dataclass
class SearchSettings:
    """One search's settings; `checked()` resolves the budget and refuses what cannot work."""

    algorithm: str = "ga"
    preset: Optional[str] = None
    population: Optional[int] = None
    generations: Optional[int] = None
    budget: Optional[int] = None
    scorer: str = "auto"  # resolved against the model by build_scorer (records the resolved spec)
    space: str = "z"
    keep: int = 4
    distinct: float = 0.9  # kept images' pairwise MS-SSIM stays below this
    patience: int = 10  # generations without an improvement > tolerance that stop a prompt (0: never stop early)
    tolerance: float = 0.0
    sigma: float = 0.5  # initial mutation / CMA-ES step size, in units of the prior's standard deviation
    psi: float = 1.0
    trunc_cutoff: Optional[int] = None
    centre: str = "conditional"
    batch: int = 256  # images per generator + scorer forward
    seed: int = 0
    baseline: bool = True  # also run best-of-N at the same evaluations, for the comparison
    augmentations: int = 8  # views per image for augclip

    def checked(self) -> "SearchSettings":
        if self.algorithm not in ALGORITHMS:
            raise UsageError(f"--algorithm {self.algorithm!r}: choose one of {', '.join(ALGORITHMS)}")
        if self.space not in SPACES:
            raise UsageError(f"--space {self.space!r}: choose one of {', '.join(SPACES)}")
        shaped = [name for name, value in (("--population", self.population), ("--generations", self.generations),
                                           ("--budget", self.budget)) if value is not None]
        if self.preset is not None:
            if self.preset not in PRESETS:
                raise UsageError(f"--preset {self.preset!r}: choose one of {', '.join(PRESETS)} "
                                 "(population x generations, 100,000 evaluations each)")
            if shaped and (self.population, self.generations, self.budget) != (*PRESETS[self.preset], None):
                raise UsageError(f"--preset {self.preset} fixes population and generations; drop {', '.join(shaped)}")
            self.population, self.generations = PRESETS[self.preset]
        for name, value in (("--population", self.population), ("--generations", self.generations),
                            ("--budget", self.budget), ("--keep", self.keep), ("--batch", self.batch)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise UsageError(f"{name} {value}: must be a whole number >= 1")
        if self.budget is not None:
            resolved = self.population is not None and self.generations == self.budget // self.population
            if self.generations is not None and not resolved:  # (resolved: checked() ran before)
                raise UsageError("--budget sets the generations (budget // population); drop --generations")
            self.population = self.population or DEFAULT_POPULATION
            if self.budget < self.population:
                raise UsageError(f"--budget {self.budget} is smaller than one generation of --population "
                                 f"{self.population}; raise the budget or lower the population")
            self.generations = self.budget // self.population
        self.population = self.population or DEFAULT_POPULATION
        self.generations = self.generations or DEFAULT_GENERATIONS
        if self.algorithm == "ga" and self.population < 4:
            raise UsageError(f"--population {self.population}: the genetic algorithm needs at least 4 "
                             "(elites, parents and children)")
        if self.algorithm == "cmaes" and self.population < 2:
            raise UsageError(f"--population {self.population}: CMA-ES needs at least 2")
        if not 0.0 < self.distinct <= 1.0:
            raise UsageError(f"--distinct {self.distinct}: an MS-SSIM threshold in (0, 1] (1: only exact "
                             "duplicates are dropped)")
        if self.patience < 0 or self.tolerance < 0:
            raise UsageError("--patience and --tolerance must be >= 0 (--patience 0: never stop early)")
        if not self.sigma > 0:
            raise UsageError(f"--sigma {self.sigma}: the initial step size must be > 0")
        if not 0.0 <= self.psi <= 1.0:
            raise UsageError(f"--trunc {self.psi}: psi must be within [0, 1]")
        if self.augmentations < 1:
            raise UsageError(f"--augmentations {self.augmentations}: must be >= 1")
        if self.scorer != "auto":
            parse_scorer(self.scorer)
        return self

    def check_scorer(self, spec: str) -> None:
        """UsageError when the resolved scorer `spec` cannot work with these settings: a weighted sum calibrates
        on the prompt's first scored batch, which must hold at least 2 images."""
        first = min(int(self.batch), int(self.population))
        if len(parse_scorer(spec)) > 1 and first < 2:
            raise UsageError(f"--scorer {spec}: a weighted sum standardizes its parts on the prompt's first batch, "
                             f"here {first} image (the smaller of --batch and --population); raise both to 2 or more")

    @property
    def evaluations(self) -> int:
        """The budget per prompt, population x generations."""
        return int(self.population) * int(self.generations)

    def to_dict(self) -> dict:
        return asdict(self)
