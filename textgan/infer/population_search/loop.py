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

from textgan.infer.population_search.algorithms import make_algorithm
from textgan.infer.population_search.space import LatentSpace
from textgan.train.grids import to_uint8

POOL_PER_KEPT = 16  # candidates held per kept image, for the distinct selection at the end
MIN_POOL = 64


@dataclass
class Kept:
    genome: torch.Tensor = field(repr=False)  # [dim] float32, CPU
    score: float  # the searched score
    generation: int
    seed: Optional[int]  # the prior seed when the genome is an unchanged prior sample (textgan generate --seeds)
    image: Optional[np.ndarray] = field(default=None, repr=False)  # uint8 [H, W, 3], one forward per image
    verifier: Optional[dict] = None


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
    """The `capacity` best distinct genomes seen so far (a genome evaluated twice is held once)."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.entries = []  # (score, order, Kept)
        self.seen = set()
        self.count = 0

    def add(self, genomes, scores, generation: int, seeds) -> None:
        for i in torch.argsort(torch.nan_to_num(scores, nan=-math.inf), descending=True)[:self.capacity].tolist():
            score = float(scores[i])
            if math.isnan(score):
                continue
            key = genomes[i].numpy().tobytes()
            if key in self.seen:
                continue
            self.seen.add(key)
            self.count += 1
            seed = None if seeds is None or seeds[i] is None else int(seeds[i])
            self.entries.append((score, -self.count, Kept(genomes[i].clone(), score, generation, seed)))
        self.entries.sort(key=lambda e: (e[0], e[1]), reverse=True)
        del self.entries[self.capacity:]

    def best_first(self) -> List[Kept]:
        return [e[2] for e in self.entries]


def score_genomes(space, scorer, genomes: torch.Tensor) -> torch.Tensor:
    """[N] scores, `space.batch` images per generator + scorer forward."""
    return torch.cat([scorer(space.decode(part)).float().cpu() for part in genomes.split(space.batch)])


def select_distinct(space, pool: TopPool, keep: int, distinct: float) -> List[Kept]:
    """The best `keep` pool entries whose images' MS-SSIM with every image already kept is below `distinct`
    (distinct=1: only identical images are dropped), rendered one forward per image."""
    from textgan.metrics.diversity import msssim

    kept: List[Kept] = []
    for candidate in pool.best_first():
        pixels = to_uint8(space.render(candidate.genome[None]))[0]
        if kept:
            mine = torch.from_numpy(pixels).permute(2, 0, 1)[None]
            others = torch.from_numpy(np.stack([k.image for k in kept])).permute(0, 3, 1, 2)
            if distinct >= 1.0:
                duplicate = any(np.array_equal(pixels, k.image) for k in kept)
            else:
                duplicate = bool((msssim(mine.expand(len(others), -1, -1, -1), others) >= distinct).any())
            if duplicate:
                continue
        candidate.image = pixels
        kept.append(candidate)
        if len(kept) == keep:
            break
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
    pool = TopPool(max(MIN_POOL, POOL_PER_KEPT * settings.keep))
    history, best, stale, evaluations = [], -math.inf, 0, 0
    stop = "budget"
    start = time.perf_counter()
    for generation in range(generations):
        seeds_from = search.first_seed + search.generation * search.population
        genomes = search.ask()
        from_prior = algorithm == "random" or generation == 0
        scores = score_genomes(space, scorer, genomes)
        search.tell(genomes, scores)
        seeds = None
        if from_prior:  # a prior sample whose norm bound() clamped is no longer `textgan generate`'s z of its seed
            seeds = list(range(seeds_from, seeds_from + len(genomes)))
            unchanged = (genomes == space.seeded(seeds)).all(dim=1).tolist()
            seeds = [s if same else None for s, same in zip(seeds, unchanged)]
        pool.add(genomes, scores, generation, seeds)
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
