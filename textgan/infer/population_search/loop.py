"""One prompt's search: ask, decode, score, tell, until the budget is spent or the score stops improving.

    result = search_prompt(model, prompt, settings, scorer, algorithm="ga", verifier=verifier)
    result.kept[0].image, result.kept[0].score, result.history[-1]["best"], result.stop_reason

The adaptive stop: a prompt stops once its best score has not improved by more than `tolerance` for
`patience` generations (easy prompts stop early; `evaluations_saved` says how much of the budget was left).
The best-of-N baseline is run at exactly the evaluations the search used, so the two are compared at equal
cost (search_prompt(..., baseline=True)).
"""

import math
import time
from dataclasses import dataclass, field
from typing import List, Optional

import numpy as np
import torch
import torch.nn.functional as F

from textgan.infer.population_search.algorithms import make_algorithm
from textgan.infer.population_search.space import LatentSpace
from textgan.train.grids import to_uint8

POOL_PER_KEPT = 16  # niches held per kept image, for the distinct selection at the end
MIN_POOL = 64
OFFERS_PER_KEPT = 2  # each generation offers its best 2 x keep candidates to the pool
THUMBNAIL = 8  # niches compare images at 8 x 8 (cheap: [N, 192] distances)
# Two images whose thumbnails are closer than this fraction of the median distance between the prompt's first
# scored images (prior samples) share a niche: they are near-copies.
NICHE_FRACTION = 0.5


@dataclass
class Kept:
    genome: torch.Tensor = field(repr=False)  # [dim] float32, CPU
    score: float  # the searched score
    generation: int
    seed: Optional[int]  # the prior seed when the genome is an unchanged prior sample (textgan generate --seeds)
    image: Optional[np.ndarray] = field(default=None, repr=False)  # uint8 [H, W, 3], one forward per image
    verifier: Optional[dict] = None
    thumb: Optional[torch.Tensor] = field(default=None, repr=False)  # the image at 8 x 8: its niche in the pool


@dataclass
class PromptSearch:
    prompt: str
    algorithm: str
    population: int
    generations: int  # the budget's
    evaluations: int  # used
    stop_reason: str
    history: list  # per generation: {"generation", "evaluations", "best", "generation_best", "mean", "step_size"}
    kept: List[Kept]
    seconds: float
    verifier: Optional[dict] = None  # held-out score of the best kept image
    verifier_kept: Optional[dict] = None  # its mean over the kept images
    diversity: Optional[float] = None  # mean pairwise MS-SSIM of the kept images (lower = more diverse)
    baseline: Optional["PromptSearch"] = None

    @property
    def budget(self) -> int:
        return self.population * self.generations

    @property
    def evaluations_saved(self) -> int:
        return self.budget - self.evaluations

    @property
    def best_score(self) -> float:
        return self.history[-1]["best"]


class TopPool:
    """The best candidates seen so far, one per niche: a candidate whose image is near (thumbnail distance below
    `radius`) a held one replaces it only when it scores higher, and is dropped otherwise. A converged
    population is many near-copies of one image; without niches they would fill the pool and leave nothing
    distinct to keep (measured on the demo: GA and CMA-ES at 10k evaluations kept 1 distinct image of 4 asked
    for with a pool of the plain best). The radius is set on the first batch: NICHE_FRACTION of the median
    distance between its images (the prompt's prior samples)."""

    def __init__(self, capacity: int, offers: int):
        self.capacity, self.offers = capacity, offers
        self.radius = None
        self.entries: List[Kept] = []  # best first
        self.thumbs = None  # [len(entries), 3 * THUMBNAIL ** 2]

    def add(self, genomes, scores, thumbs, generation: int, seeds) -> None:
        if self.radius is None:
            distances = torch.pdist(thumbs.double())
            self.radius = NICHE_FRACTION * float(distances.median()) if len(distances) else 0.0
        order = torch.argsort(torch.nan_to_num(scores, nan=-math.inf), descending=True)[:self.offers].tolist()
        for i in order:
            score = float(scores[i])
            if math.isnan(score) or (len(self.entries) == self.capacity and score <= self.entries[-1].score):
                break  # sorted: nothing later in this batch gets in either
            seed = None if seeds is None or seeds[i] is None else int(seeds[i])
            candidate = Kept(genomes[i].clone(), score, generation, seed, thumb=thumbs[i])
            if self.entries:
                distance = torch.cdist(thumbs[i][None].double(), self.thumbs.double())[0]
                near = int(distance.argmin())
                if float(distance[near]) < self.radius:
                    if score > self.entries[near].score:
                        self.entries[near] = candidate  # the niche's new best
                        self._resort()
                    continue
            self.entries.append(candidate)
            self._resort()

    def _resort(self) -> None:
        self.entries.sort(key=lambda e: e.score, reverse=True)
        del self.entries[self.capacity:]
        self.thumbs = torch.stack([e.thumb for e in self.entries])

    def best_first(self) -> List[Kept]:
        return list(self.entries)


def score_genomes(space, scorer, genomes: torch.Tensor) -> tuple:
    """([N] scores, [N, 3 * THUMBNAIL ** 2] thumbnails on the CPU), `space.batch` images per forward."""
    scores, thumbs = [], []
    for part in genomes.split(space.batch):
        images = space.decode(part)
        scores.append(scorer(images).float().cpu())
        thumbs.append(F.adaptive_avg_pool2d(images, THUMBNAIL).flatten(1).float().cpu())
    return torch.cat(scores), torch.cat(thumbs)


def select_distinct(space, pool: TopPool, keep: int, distinct: float) -> List[Kept]:
    """The best `keep` pool entries whose images' MS-SSIM with every image already kept is below `distinct`
    (distinct=1: only identical images are dropped). The pool is compared on one batched decode; only the
    kept ones are then rendered one forward per image (their reproducible pixels)."""
    from textgan.metrics.diversity import msssim

    candidates = pool.best_first()
    if not candidates:
        return []
    pixels = to_uint8(space.decode(torch.stack([c.genome for c in candidates])))
    chosen: List[int] = []
    for i in range(len(candidates)):
        if chosen:
            if distinct >= 1.0:
                duplicate = any(np.array_equal(pixels[i], pixels[j]) for j in chosen)
            else:
                mine = torch.from_numpy(pixels[i]).permute(2, 0, 1)[None].expand(len(chosen), -1, -1, -1)
                others = torch.from_numpy(pixels[chosen]).permute(0, 3, 1, 2)
                duplicate = bool((msssim(mine, others) >= distinct).any())
            if duplicate:
                continue
        chosen.append(i)
        if len(chosen) == keep:
            break
    kept = [candidates[i] for i in chosen]
    for k, image in zip(kept, to_uint8(space.render(torch.stack([k.genome for k in kept])))):
        k.image = image
    return kept


def search_prompt(model, prompt: str, settings, scorer, algorithm: Optional[str] = None, verifier=None,
                  generations: Optional[int] = None, patience: Optional[int] = None, baseline: bool = False,
                  progress=None) -> PromptSearch:
    """Search one prompt with `settings` (a checked SearchSettings). algorithm / generations / patience override
    the settings' (the baseline: "random", the search's generations, no early stop). progress: a tqdm bar
    advanced by the evaluations, or None."""
    algorithm = algorithm or settings.algorithm
    generations = settings.generations if generations is None else generations
    patience = settings.patience if patience is None else patience
    space = LatentSpace(model, prompt, settings.space, settings.psi, settings.trunc_cutoff, settings.centre,
                        settings.batch)
    scorer.prepare(prompt)
    search = make_algorithm(algorithm, space, settings.population, settings.sigma, settings.seed)
    pool = TopPool(max(MIN_POOL, POOL_PER_KEPT * settings.keep), OFFERS_PER_KEPT * settings.keep)
    history, best, stale, evaluations = [], -math.inf, 0, 0
    stop = "budget"
    start = time.perf_counter()
    for generation in range(generations):
        search.prior_seeds = None
        genomes = search.ask()
        seeds = search.prior_seeds  # per genome, when ask() drew prior samples (None where bound() clamped one)
        scores, thumbs = score_genomes(space, scorer, genomes)
        search.tell(genomes, scores)
        pool.add(genomes, scores, thumbs, generation, seeds)
        evaluations += len(genomes)
        finite = scores[torch.isfinite(scores)]
        generation_best = float(finite.max()) if len(finite) else -math.inf
        if generation_best > best + settings.tolerance or generation == 0:
            stale = 0
        else:
            stale += 1
        best = max(best, generation_best)
        history.append({"generation": generation, "evaluations": evaluations, "best": best,
                        "generation_best": generation_best,
                        "mean": float(finite.mean()) if len(finite) else None,
                        "step_size": search.step_size()})
        if progress is not None:
            progress.update(len(genomes))
        if patience and stale >= patience and generation + 1 < generations:
            stop = f"no improvement > {settings.tolerance:g} in {patience} generations"
            break
    kept = select_distinct(space, pool, settings.keep, settings.distinct)
    result = PromptSearch(prompt, algorithm, settings.population, generations, evaluations, stop, history, kept,
                          time.perf_counter() - start)
    if verifier is not None and kept:
        scored = verifier.score([k.image for k in kept], prompt)
        for k, v in zip(kept, scored):
            k.verifier = v
        result.verifier, result.verifier_kept = scored[0], verifier.summary(scored)
    if len(kept) >= 2:
        from textgan.metrics.diversity import pairwise_msssim

        result.diversity = pairwise_msssim(np.stack([k.image for k in kept]).transpose(0, 3, 1, 2))
    if baseline and algorithm != "random":
        result.baseline = search_prompt(model, prompt, settings, scorer, algorithm="random", verifier=verifier,
                                        generations=len(history), patience=0, progress=progress)
    return result
