"""Population searches over genomes, all behind one ask/tell interface (higher score = better):

    algorithm = make_algorithm("ga", space, population=100, sigma=0.5, seed=0)
    genomes = algorithm.ask()              # [population, dim] float32 on the CPU, already bounded
    algorithm.tell(genomes, scores)        # scores [population]
    algorithm.step_size()                  # the current (adapted) step size, for the record

Every algorithm evaluates exactly `population` new genomes per generation, so equal generations are equal
evaluations, and every one starts from the same prior samples: generation 0 of each is the seeds
`first_seed .. first_seed + population - 1`, which `textgan generate --seeds` draws too.

- random: best-of-N. Generation g evaluates the next `population` seeds; the best of N evaluations is
  the best of seeds first_seed .. first_seed + N - 1 (DALL-E's reranking, FuseDream's first stage).
- ga: the research's population x generations. (mu + lambda) survival (parents and children compete, so
  the best is never lost), tournament selection, uniform crossover and Gaussian mutation whose step size
  each genome carries and adapts itself (log-normal self-adaptation, Schwefel's 1/sqrt(dim) rate).
- cmaes: pycma's CMA-ES (the reference implementation; step size and covariance adapt), started at the
  prior (mean 0, sigma 1); above SEPARABLE_ABOVE dimensions its diagonal variant (sep-CMA), since a full
  covariance over per-layer w+ genomes (thousands of dimensions) costs more than the generator.

Why the GA is written here: EvoTorch, the library that runs populations as torch tensors, imports ray at
import time and requires gymnasium and pandas (hundreds of MB and a cluster runtime, for a command that needs
none); pymoo's GA is numpy-only and its algorithm objects are one-problem-at-a-time. The GA below is ~40
lines of tensor operations. CMA-ES is not written here: pycma does it.
"""

import math

import numpy as np
import torch

SEED_STRIDE = 1_000_000  # --seed k draws prior seeds from k * SEED_STRIDE on (more than any budget)
SEPARABLE_ABOVE = 512
TOURNAMENT = 3
CROSSOVER_RATE = 0.9


class Algorithm:
    name = "?"

    def __init__(self, space, population: int, sigma: float, seed: int):
        self.space, self.population, self.sigma0, self.seed = space, int(population), float(sigma), int(seed)
        self.first_seed = int(seed) * SEED_STRIDE
        self.generation = 0
        self.prior_seeds = None  # set by prior(): the seeds of the genomes it returned last

    def prior(self, count: int) -> torch.Tensor:
        """The next `count` seeded prior genomes (bounded)."""
        start = self.first_seed + self.generation * self.population
        raw = self.space.seeded(range(start, start + count))
        bounded = self.space.bound(raw)
        # seed of each genome, None where bound() clamped it (no longer `textgan generate`'s z of that seed)
        self.prior_seeds = [start + i if same else None for i, same in enumerate((raw == bounded).all(dim=1).tolist())]
        return bounded

    def ask(self) -> torch.Tensor:
        raise NotImplementedError

    def tell(self, genomes: torch.Tensor, scores: torch.Tensor) -> None:
        self.generation += 1

    def step_size(self):
        return None


class RandomSearch(Algorithm):
    name = "random"

    def ask(self) -> torch.Tensor:
        return self.prior(self.population)


class GeneticAlgorithm(Algorithm):
    name = "ga"

    def __init__(self, space, population, sigma, seed):
        super().__init__(space, population, sigma, seed)
        self.rng = torch.Generator().manual_seed(int(seed))
        self.tau = 1.0 / math.sqrt(space.dim)
        self.parents = self.parent_scores = self.parent_sigmas = None
        self.child_sigmas = None

    def ask(self) -> torch.Tensor:
        if self.parents is None:
            self.child_sigmas = torch.full([self.population], self.sigma0)
            return self.prior(self.population)
        n, g = self.population, self.rng
        # tournament: the best of TOURNAMENT random survivors, twice per child
        entrants = torch.randint(len(self.parents), [2, n, TOURNAMENT], generator=g)
        winners = torch.gather(entrants, 2, self.parent_scores[entrants].argmax(dim=2, keepdim=True))[..., 0]
        mother, father = self.parents[winners[0]], self.parents[winners[1]]
        crossing = (torch.rand([n, 1], generator=g) < CROSSOVER_RATE)
        from_father = (torch.rand(mother.shape, generator=g) < 0.5) & crossing
        children = torch.where(from_father, father, mother)
        sigmas = torch.sqrt(self.parent_sigmas[winners[0]] * self.parent_sigmas[winners[1]])
        sigmas = sigmas * torch.exp(self.tau * torch.randn([n], generator=g))
        children = children + sigmas[:, None] * torch.randn(children.shape, generator=g)
        self.child_sigmas = sigmas
        return self.space.bound(children)

    def tell(self, genomes, scores):
        scores = scores.float().cpu()
        if self.parents is None:
            pool, pool_scores, pool_sigmas = genomes, scores, self.child_sigmas
        else:
            pool = torch.cat([self.parents, genomes])
            pool_scores = torch.cat([self.parent_scores, scores])
            pool_sigmas = torch.cat([self.parent_sigmas, self.child_sigmas])
        # a NaN score (a broken image) never survives
        order = torch.argsort(torch.nan_to_num(pool_scores, nan=-math.inf), descending=True)[:self.population]
        self.parents, self.parent_scores, self.parent_sigmas = pool[order], pool_scores[order], pool_sigmas[order]
        super().tell(genomes, scores)

    def step_size(self):
        return None if self.parent_sigmas is None else float(self.parent_sigmas.mean())


class CMAES(Algorithm):
    name = "cmaes"

    def __init__(self, space, population, sigma, seed):
        import cma
        from threadpoolctl import ThreadpoolController

        super().__init__(space, population, sigma, seed)
        # pycma's numpy work runs on one BLAS thread: at these sizes OpenBLAS's threads gain nothing, and
        # after each call they spin on the cores the generator's forward pass needs next (measured: the CMA-ES
        # loop ran at 0.37x a plain forward's evaluations/s on 2 CPU cores, 0.81x with one BLAS thread)
        controller = ThreadpoolController()
        self.one_blas_thread = lambda: controller.limit(limits=1, user_api="blas")
        options = {"popsize": self.population, "seed": int(seed) + 1,  # pycma: seed 0 would mean "random"
                   "verbose": -9, "CMA_diagonal": space.dim > SEPARABLE_ABOVE, "maxiter": float("inf"),
                   "tolfun": 0, "tolx": 0, "tolfunhist": 0, "tolflatfitness": float("inf"), "tolstagnation": float("inf")}
        # started at the prior N(0, I): generation 0 is asked for like the others' (the seeds), then told
        self.es = cma.CMAEvolutionStrategy(np.zeros(space.dim), 1.0, options)

    def ask(self) -> torch.Tensor:
        if self.generation == 0:
            with self.one_blas_thread():
                self.es.ask()  # pycma tells only after an ask; generation 0 evaluates the seeds instead
            return self.prior(self.population)
        with self.one_blas_thread():
            asked = np.asarray(self.es.ask(), dtype=np.float64)
        return self.space.bound(torch.from_numpy(asked).float())

    def tell(self, genomes, scores):
        fitness = -torch.nan_to_num(scores.double().cpu(), nan=-1e30).numpy()  # pycma minimizes
        # the bounded genomes are what was evaluated; pycma takes repaired solutions (it clips their
        # Mahalanobis length itself), and generation 0's seeds are points of its start distribution
        with self.one_blas_thread():
            self.es.tell(list(genomes.double().cpu().numpy()), list(fitness))
        super().tell(genomes, scores)

    def step_size(self):
        return float(self.es.sigma)


ALGORITHM_CLASSES = {cls.name: cls for cls in (GeneticAlgorithm, CMAES, RandomSearch)}


def make_algorithm(name: str, space, population: int, sigma: float = 0.5, seed: int = 0) -> Algorithm:
    return ALGORITHM_CLASSES[name](space, population, sigma, seed)
