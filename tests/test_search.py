"""textgan search and textgan.infer.search: a population search over a generator's latents, checked by values.

What this file proves, on freshly initialised tiny nets (16 px, z_dim 16; no training) saved as run directories
with a complete checkpoint (G and D) and as an export file (G only), text tower textgan-demo-clip with random
weights:
- pixels: a kept genome that is an unchanged prior sample renders exactly `textgan generate --seeds` of its
  seed (and a clamped prior sample is not passed off as one); identical searches give identical results;
  the batched decode and the one-image-per-forward render differ by at most one grey level;
- the algorithms: best-of-N is the argmax of the scorer over the very seeds it drew; GA and CMA-ES find a
  planted optimum (an image of a known latent) far better than their first generation and than best-of-N
  at equal evaluations; the GA's step size adapts and CMA-ES's is recorded;
- the adaptive stop: after exactly patience + 1 flat generations, with the evaluations saved accounted;
- the scorers: D's logit and contrastive heads score an image the same alone or in a batch; a weighted sum
  keeps the calibration of its first batch (standardized parts: mean 0);
- the held-out verifier (shapes_alignment on captioned-shapes prompts, none otherwise);
- the command line: every bad input exits 2 naming the fix and writes nothing; a search writes its folder
  (kept PNGs, search.json, grid.png, score_vs_evaluations.png, request.json, its part file); `collect`
  rebuilds search.json, names a missing part, and merges parts searched separately into the same result;
- parts: part i of n takes prompts i, i + n, ...
"""

import contextlib
import io
import json
import os
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from test_generate import ROOT, TINY, readme_block, run_readme_lines, tiny_config, write_export, write_run
from textgan import cli
from textgan.config import load_config
from textgan.errors import UsageError
from textgan.infer import SearchSettings, generate, load_model, search
from textgan.infer.population_search import job, output
from textgan.infer.population_search.loop import search_prompt
from textgan.infer.population_search.run import part_of
from textgan.infer.population_search.scorers import WeightedScorer, build_scorer
from textgan.infer.population_search.settings import parse_scorer
from textgan.infer.population_search.space import LatentSpace, chi_bounds
from textgan.metrics.alignment import score_image
from textgan.train.grids import to_uint8

YELLOW = "a large yellow triangle in the center"
BLUE = "a small blue triangle on the left"
TWO = "a small red circle above a large blue square"  # two objects: position None, relation scored
CAT = "a photo of a cat on a sofa"  # not a captioned-shapes caption
TARGET_SEED = 424242  # the planted optimum's latent: a prior sample far outside the seeds any search here draws


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("search-models")
    with_heads = load_config(None, TINY + ["desc=tiny", "contrastive.C_it=1"])  # D gets contrastive heads
    return {"sg2": str(write_run(root / "00000-tiny", with_heads)),  # StyleGAN2, D with heads (mbstd)
            "cgan": str(write_run(root / "00001-tiny", tiny_config("cgan"))),  # a cgan whose D has no heads
            "export": write_export(root / "cgan.pt", "cgan")}  # G_ema only: no D


@pytest.fixture(scope="module")
def models(files):
    loaded = {name: load_model(files[name], device="cpu") for name in ("sg2", "cgan")}
    assert build_scorer("contrastive", loaded["sg2"])[0].D.contrastive is not None  # heads: C_it > 0
    return loaded


class Planted:
    """A scorer maximal at one image: minus the mean squared pixel distance to it (0 at the target)."""

    def __init__(self, target):
        self.target = target.float().cpu()

    def prepare(self, prompt):
        pass

    def __call__(self, images):
        return -((images.float().cpu() - self.target) ** 2).mean(dim=(1, 2, 3))


class Scripted:
    """Call k gives every image values[k] (the last value from then on): a score that never tells images apart."""

    def __init__(self, values):
        self.values, self.calls = list(values), 0

    def prepare(self, prompt):
        self.calls = 0

    def __call__(self, images):
        value = self.values[min(self.calls, len(self.values) - 1)]
        self.calls += 1
        return torch.full([len(images)], float(value))


def settings(**kwargs):
    return SearchSettings(**{"keep": 1, "distinct": 1.0, **kwargs}).checked()


def uint8(images):
    return to_uint8(images.cpu())


# ---------------------------------------------------------------------- settings and parts (no model)


def test_budgets_and_presets_resolve_to_population_x_generations():
    assert (SearchSettings().checked().population, SearchSettings().checked().generations) == (100, 10)
    s = SearchSettings(population=8, budget=30).checked()
    assert (s.population, s.generations, s.evaluations) == (8, 3, 24)
    assert SearchSettings(**s.to_dict()).checked().to_dict() == s.to_dict()  # what run_part re-checks from request.json
    p = SearchSettings(preset="200x500").checked()
    assert (p.population, p.generations, p.evaluations) == (200, 500, 100_000)
    assert SearchSettings(**p.to_dict()).checked().to_dict() == p.to_dict()
    assert SearchSettings(budget=1000).checked().generations == 10  # the default population of 100


def test_parse_scorer_reads_names_sums_and_weights():
    assert parse_scorer("clip") == {"clip": 1.0}
    assert parse_scorer("contrastive+d") == {"contrastive": 1.0, "d": 1.0}
    assert parse_scorer(" contrastive=1, d=0.5 ") == {"contrastive": 1.0, "d": 0.5}
    assert parse_scorer("contrastive=,d=2") == {"contrastive": 1.0, "d": 2.0}  # a blank weight is 1
    for spec, message in [("clip=abc", "must be a number, got 'abc'"), ("contrastive=,d=x", "the weight of 'd'"),
                          ("clip=0", "must be a finite number > 0"), ("d=-1", "must be a finite number > 0"),
                          ("clip=nan,d=1", "must be a finite number > 0"), ("clip=inf,d=1", "finite number > 0"),
                          ("d,d=2", "'d' is given twice"), ("foo", "unknown scorer 'foo'"), ("", "--scorer is empty")]:
        with pytest.raises(UsageError, match=message):
            parse_scorer(spec)


def test_part_of_splits_prompts_round_robin():
    assert part_of(10, 1, 3) == [1, 4, 7]
    assert part_of(10, 0, 3) == [0, 3, 6, 9] and part_of(10, 2, 3) == [2, 5, 8]
    assert sorted(sum((part_of(7, i, 4) for i in range(4)), [])) == list(range(7))
    with pytest.raises(ValueError, match="part 3 of 3 does not exist"):
        part_of(10, 3, 3)


# ---------------------------------------------------------------------- pixels


@pytest.mark.parametrize("algorithm", ["random", "ga"])
def test_a_kept_prior_sample_renders_exactly_what_textgan_generate_makes_of_its_seed(models, algorithm):
    model = models["sg2"]
    run = search(model, [YELLOW], algorithm=algorithm, population=8, generations=3, keep=3, distinct=1.0,
                 scorer="d", verifier="none", baseline=False)
    kept = run.results[0].kept
    space = LatentSpace(model, YELLOW)
    assert len(kept) == 3 and [k.score for k in kept] == sorted((k.score for k in kept), reverse=True)
    for k in kept:
        assert k.image.dtype == np.uint8 and k.image.shape == (16, 16, 3)
        if algorithm == "ga":  # generation 0 draws the seeds; every later genome is a child
            assert (k.seed is None) == (k.generation > 0)
        if k.seed is None:
            continue
        assert 0 <= k.seed < 24 and k.generation == k.seed // 8
        assert torch.equal(k.genome, space.seeded([k.seed])[0])
        assert np.array_equal(k.image, generate(model, [YELLOW], seeds=[k.seed])[0].image), k.seed
    if algorithm == "random":
        assert all(k.seed is not None for k in kept)


def test_a_clamped_prior_sample_is_not_passed_off_as_its_seed(models):
    """A prior z whose norm lies outside the [0.1%, 99.9%] bounds is clamped by the space. For the cgan (z enters
    G as it is; StyleGAN2's mapping normalizes z, so there the clamp changes no pixel) its image is then no longer
    `textgan generate --seeds s`: the kept entry must not claim seed s, or search.json points to other pixels."""
    model = models["cgan"]
    space = LatentSpace(model, YELLOW)
    prior = space.seeded(range(1000))
    low, high = chi_bounds(16)
    norms = prior.norm(dim=1)
    clamped = torch.nonzero((norms < low) | (norms > high)).flatten().tolist()
    assert clamped  # seed 666 for z_dim 16: about one in 500, as the bounds are meant
    seed = clamped[0]
    genome = space.bound(prior[seed:seed + 1])
    assert not torch.equal(genome, prior[seed:seed + 1])
    scorer = Planted(space.decode(genome))  # the best image of the search is the clamped sample's
    population = 100
    result = search_prompt(model, YELLOW, settings(algorithm="random", population=population,
                                                   generations=seed // population + 1, keep=2), scorer)
    best = result.kept[0]
    assert torch.equal(best.genome, genome[0]) and best.generation == seed // population
    assert best.seed is None  # not `seed`: generate() of that seed makes other pixels
    generated = generate(model, [YELLOW], seeds=[seed], output="float")[0].image
    assert float((space.render(best.genome[None])[0] - generated).abs().max()) > 1e-5
    second = result.kept[1]  # an unchanged prior sample keeps its seed
    assert second.seed is not None and np.array_equal(second.image,
                                                      generate(model, [YELLOW], seeds=[second.seed])[0].image)


@pytest.mark.parametrize("algorithm", ["ga", "cmaes"])
def test_two_identical_searches_give_identical_results(models, algorithm):
    kwargs = dict(algorithm=algorithm, population=8, generations=3, keep=2, scorer="contrastive+d", verifier="auto")
    a, b = (search(models["sg2"], [YELLOW, BLUE], **kwargs) for _ in range(2))
    assert a.scorer == b.scorer == "contrastive+d" and a.verifier == b.verifier == "shapes_alignment"
    for x, y in zip(a.results, b.results):
        for one, other in ((x, y), (x.baseline, y.baseline)):
            assert one.history == other.history and one.stop_reason == other.stop_reason
            assert len(one.kept) == len(other.kept) >= 1
            for k, j in zip(one.kept, other.kept):
                assert (k.score, k.seed, k.generation, k.verifier) == (j.score, j.seed, j.generation, j.verifier)
                assert torch.equal(k.genome, j.genome) and np.array_equal(k.image, j.image)
    assert a.results[0].history != a.results[1].history  # the prompt matters


@pytest.mark.parametrize("name, space, psi", [("sg2", "z", 1.0), ("sg2", "z", 0.5), ("sg2", "w+", 1.0),
                                              ("sg2", "w+", 0.5), ("cgan", "z", 1.0)])
def test_batched_decode_and_per_image_render_differ_by_at_most_one_grey_level(models, name, space, psi):
    model = models[name]
    latent = LatentSpace(model, YELLOW, space=space, psi=psi)
    genomes = latent.seeded(range(24))
    assert genomes.shape == (24, 16 * (model.G.num_ws if space == "w+" else 1))
    batched, exact = latent.decode(genomes), latent.render(genomes)
    assert batched.shape == exact.shape == (24, 3, 16, 16)
    assert float((batched.cpu() - exact).abs().max()) < 1e-4  # float rounding only
    diff = np.abs(uint8(batched).astype(int) - uint8(exact).astype(int))
    assert diff.max() <= 1
    # a seeded genome is the plain sample: in z and in w+ (every layer the same z), generate's pixels
    reference = np.stack([s.image for s in generate(model, [YELLOW], range(24), psi=psi)])
    if space == "z":
        assert np.array_equal(uint8(exact), reference)
    else:
        assert np.abs(uint8(exact).astype(int) - reference.astype(int)).max() <= 1


# ---------------------------------------------------------------------- the algorithms


@pytest.mark.parametrize("name", ["sg2", "cgan"])
def test_best_of_n_is_the_argmax_of_the_scorer_over_the_same_seeds(models, name):
    model, population, generations = models[name], 8, 3
    n = population * generations
    run = search(model, [YELLOW], algorithm="random", population=population, generations=generations, seed=0,
                 scorer="d", keep=1, verifier="none")
    result = run.results[0]
    space = LatentSpace(model, YELLOW)
    genomes = space.seeded(range(n))
    assert torch.equal(space.bound(genomes), genomes)  # no seed here is clamped: these are the searched genomes
    scorer, spec = build_scorer("d", model)
    scorer.prepare(YELLOW)
    direct = torch.cat([scorer(space.decode(g)) for g in genomes.split(population)])  # a generation per forward
    best = result.kept[0]
    assert spec == run.scorer == "d" and result.baseline is None  # random is its own baseline
    assert best.seed == int(direct.argmax()) and best.score == float(direct.max())
    assert best.generation == best.seed // population
    assert result.best_score == float(direct.max()) == result.history[-1]["best"]
    assert [h["generation_best"] for h in result.history] == [float(d.max()) for d in direct.split(population)]
    assert [h["evaluations"] for h in result.history] == [8, 16, 24] and result.evaluations == n
    # scored all at once the numbers agree up to float rounding, so this is the argmax whatever the batching
    torch.testing.assert_close(scorer(space.decode(genomes)), direct, atol=1e-5, rtol=0)


@pytest.fixture(scope="module")
def planted(models):
    """GA, CMA-ES and best-of-N on the same planted optimum: 16 x 25 = 400 evaluations each (~0.3 s each)."""
    model = models["sg2"]
    space = LatentSpace(model, YELLOW)
    target = space.decode(space.seeded([TARGET_SEED])).cpu()
    scorer = Planted(target)
    runs = {algorithm: search_prompt(model, YELLOW, settings(algorithm=algorithm, population=16, generations=25,
                                                              patience=0), scorer)
            for algorithm in ("ga", "cmaes", "random")}
    prior_best = float(scorer(space.decode(space.seeded(range(1000)))).max())  # best of 1000 prior samples
    return runs, uint8(target)[0], prior_best


@pytest.mark.parametrize("algorithm", ["ga", "cmaes"])
def test_ga_and_cmaes_find_a_planted_optimum(planted, algorithm):
    """Measured on this tiny StyleGAN2: with the target here, after 400 evaluations GA (CMA-ES) ends at 1/26
    (1/21) of its first generation's squared distance and at 1/9.8 (1/8.0) of best-of-N's at the same 400
    evaluations, which is also the best of the first 1000 prior samples; its best image is 8.7 (7.9) grey
    levels from the target on average, best-of-N's 28. Over four other targets: 1/12-1/38, 1/8-1/29 and
    5-13 grey levels (best-of-N 24-39). The bounds below leave a factor of ~2 here."""
    runs, target, prior_best = planted
    result, random = runs[algorithm], runs["random"]
    first, best = -result.history[0]["best"], -result.best_score
    assert result.evaluations == random.evaluations == 400 and result.stop_reason == "budget"
    assert result.history[0]["best"] == random.history[0]["best"]  # both start from the same 16 seeds
    assert first > 0.1  # the target is not among the first samples: there is something to find
    assert best < first / 10
    assert best < -random.best_score / 3  # better than best-of-N at equal evaluations
    assert best < -prior_best / 4  # and than best-of-N with 2.5x the evaluations
    assert result.kept[0].score == result.best_score
    pixels = np.abs(result.kept[0].image.astype(int) - target.astype(int)).mean()
    assert pixels < 16, pixels  # grey levels, mean over pixels and channels
    bests = [h["best"] for h in result.history]
    assert bests == sorted(bests)  # the best so far never gets worse


def test_the_ga_adapts_its_step_size_and_cmaes_records_its_own(planted):
    runs, _, _ = planted
    ga = [h["step_size"] for h in runs["ga"].history]
    assert ga[0] == pytest.approx(0.5)  # generation 0: every genome carries the initial sigma
    assert len(set(ga)) > 10  # self-adaptation moves it every generation
    assert ga[-1] < 0.75 * ga[0]  # and closing in on the optimum shrinks it (measured 0.15-0.23 after 25)
    cma = [h["step_size"] for h in runs["cmaes"].history]
    assert all(isinstance(s, float) and s > 0 for s in cma) and len(set(cma)) > 10
    assert all(h["step_size"] is None for h in runs["random"].history)  # best-of-N has none


# ---------------------------------------------------------------------- the adaptive stop


@pytest.mark.parametrize("algorithm", ["random", "ga", "cmaes"])
@pytest.mark.parametrize("patience", [1, 3])
def test_a_flat_score_stops_after_patience_plus_one_generations(models, algorithm, patience):
    s = settings(algorithm=algorithm, population=8, generations=10, patience=patience)
    result = search_prompt(models["sg2"], YELLOW, s, Scripted([0.5]), baseline=True)
    assert len(result.history) == patience + 1  # generation 0 sets the best, then `patience` stale ones
    assert result.evaluations == (patience + 1) * 8 and result.budget == 80
    assert result.evaluations_saved == 80 - result.evaluations
    assert result.stop_reason == f"no improvement > 0 in {patience} generations"
    assert [h["best"] for h in result.history] == [0.5] * (patience + 1)
    if algorithm != "random":  # best-of-N at exactly the evaluations the search used, never stopped early
        assert result.baseline.evaluations == result.evaluations and result.baseline.stop_reason == "budget"
        assert result.baseline.generations == patience + 1 and result.baseline.evaluations_saved == 0


def test_patience_0_spends_the_whole_budget_and_a_stop_at_the_last_generation_is_the_budget(models):
    never = search_prompt(models["sg2"], YELLOW, settings(algorithm="ga", population=8, generations=6, patience=0),
                          Scripted([0.5]))
    assert (never.evaluations, never.evaluations_saved, never.stop_reason) == (48, 0, "budget")
    assert len(never.history) == 6
    last = search_prompt(models["sg2"], YELLOW, settings(algorithm="random", population=8, generations=6, patience=5),
                         Scripted([0.5]))
    assert (last.evaluations, last.stop_reason) == (48, "budget")


def test_an_improvement_resets_the_patience_and_the_tolerance_decides_what_counts(models):
    # best per generation: 1, 1, 2, 2, 2 -> stale 0, 1, 0, 1, 2 -> with patience 2 it stops after 5 generations
    result = search_prompt(models["sg2"], YELLOW, settings(algorithm="random", population=8, generations=10,
                                                           patience=2), Scripted([1, 1, 2]))
    assert [h["best"] for h in result.history] == [1, 1, 2, 2, 2] and result.evaluations == 40
    # a score creeping up by 0.001 a generation: an improvement with tolerance 0, none with tolerance 0.01
    creeping = [1 + 0.001 * g for g in range(10)]
    s = settings(algorithm="random", population=8, generations=10, patience=2)
    assert search_prompt(models["sg2"], YELLOW, s, Scripted(creeping)).stop_reason == "budget"
    s = settings(algorithm="random", population=8, generations=10, patience=2, tolerance=0.01)
    stopped = search_prompt(models["sg2"], YELLOW, s, Scripted(creeping))
    assert stopped.evaluations == 24 and stopped.stop_reason == "no improvement > 0.01 in 2 generations"


# ---------------------------------------------------------------------- scorers


@pytest.mark.parametrize("name, spec", [("sg2", "d"), ("sg2", "contrastive"), ("cgan", "d")])
def test_d_scorers_score_an_image_the_same_alone_or_in_a_batch(models, name, spec):
    model = models[name]
    scorer, _ = build_scorer(spec, model)
    scorer.prepare(YELLOW)
    images = LatentSpace(model, YELLOW).decode(LatentSpace(model, YELLOW).seeded(range(8)))
    together = scorer(images)
    alone = torch.cat([scorer(images[i:i + 1]) for i in range(8)])
    assert together.shape == (8,) and together.dtype == torch.float32 and together.device.type == "cpu"
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=0)
    torch.testing.assert_close(scorer(images.flip(0)), together.flip(0), atol=1e-5, rtol=0)  # nor on the order
    if name == "sg2":  # the images differ, so do their scores (the check above is not about constants)
        assert float(together.max() - together.min()) > 1e-3
    if spec == "contrastive":
        assert float(together.abs().max()) <= 1.0  # a cosine
    scorer.prepare(BLUE)
    assert not torch.allclose(scorer(images), together)  # the prompt matters


def test_a_weighted_scorer_keeps_the_calibration_of_its_first_batch(models):
    model = models["sg2"]
    space = LatentSpace(model, YELLOW)
    images = space.decode(space.seeded(range(16)))
    weighted, spec = build_scorer("contrastive=1,d=1", model)
    assert isinstance(weighted, WeightedScorer) and spec == "contrastive=1,d=1"
    weighted.prepare(YELLOW)
    first = weighted(images)
    assert abs(float(first.mean())) < 1e-5  # two standardized parts: mean 0 on the calibration batch
    parts = {}
    for name in ("contrastive", "d"):
        scorer = build_scorer(name, model)[0]
        scorer.prepare(YELLOW)
        parts[name] = scorer(images)
    expected = sum((v - v.mean()) / v.std() for v in parts.values())
    torch.testing.assert_close(first, expected, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(weighted(images), first, atol=1e-6, rtol=0)  # the same images, the same scores
    torch.testing.assert_close(weighted(images[4:8]), first[4:8], atol=1e-5, rtol=0)  # not recalibrated on 4
    weighted.prepare(YELLOW)  # a new prompt (or the same one again) calibrates anew
    torch.testing.assert_close(weighted(images[:8]).mean(), torch.tensor(0.0), atol=1e-5, rtol=0)
    half, _ = build_scorer("contrastive=1,d=0.5", model)
    half.prepare(YELLOW)
    d = parts["d"]
    torch.testing.assert_close(half(images) - first, -0.5 * (d - d.mean()) / d.std(), atol=1e-4, rtol=1e-4)
    weighted.prepare(YELLOW)
    with pytest.raises(UsageError, match="at least 2 images"):
        weighted(images[:1])


def test_a_weighted_scorer_with_batches_of_one_is_refused_before_searching(models):
    with pytest.raises(UsageError, match="first batch, here 1 image"):
        search(models["sg2"], [YELLOW], algorithm="ga", population=8, generations=1, batch=1)  # auto: contrastive+d
    with pytest.raises(UsageError, match="first batch, here 1 image"):
        search(models["sg2"], [YELLOW], algorithm="random", population=1, generations=2, scorer="contrastive+d")
    # one scorer needs no calibration: batches of one are fine
    run = search(models["sg2"], [YELLOW], algorithm="random", population=4, generations=1, batch=1, scorer="d")
    assert run.results[0].evaluations == 4


# ---------------------------------------------------------------------- held-out verifier


def test_the_shapes_verifier_scores_the_kept_images_of_shapes_prompts(models):
    run = search(models["sg2"], [YELLOW, TWO], algorithm="random", population=8, generations=1, keep=2,
                 distinct=1.0, scorer="d", verifier="auto")
    assert run.verifier == "shapes_alignment"
    for result, prompt in zip(run.results, [YELLOW, TWO]):
        assert len(result.kept) == 2
        for k in result.kept:
            assert set(k.verifier) == {"color", "position", "relation", "shape", "overall"}
            criteria = {key: v for key, v in k.verifier.items() if key != "overall"}
            assert all(v in (0.0, 1.0) for v in criteria.values() if v is not None)
            if prompt == YELLOW:  # one object: a position, no relation
                assert criteria["relation"] is None and criteria["position"] is not None
            else:
                assert criteria["position"] is None and criteria["relation"] is not None
            available = [v for v in criteria.values() if v is not None]
            assert k.verifier["overall"] == pytest.approx(np.mean(available))
            direct = score_image(k.image, prompt)  # the metric itself, on the kept pixels
            assert criteria == {key: None if v is None else float(v) for key, v in direct.items()}
        assert result.verifier == result.kept[0].verifier
        assert result.verifier_kept["n"] == 2
        assert result.verifier_kept["overall"] == pytest.approx(np.mean([k.verifier["overall"] for k in result.kept]))


def test_no_verifier_applies_to_other_prompts(models):
    run = search(models["sg2"], [CAT], algorithm="random", population=4, generations=1, scorer="d", verifier="auto")
    assert run.verifier is None and run.results[0].verifier is None and run.results[0].verifier_kept is None
    assert all(k.verifier is None for k in run.results[0].kept)
    mixed = search(models["sg2"], [YELLOW, CAT], algorithm="random", population=4, generations=1, scorer="d")
    assert mixed.verifier is None  # auto: shapes_alignment only when every prompt is a shapes caption
    with pytest.raises(UsageError, match="scores captioned-shapes captions only"):
        search(models["sg2"], [YELLOW, CAT], algorithm="random", population=4, generations=1, scorer="d",
               verifier="shapes_alignment")


# ---------------------------------------------------------------------- parts


def test_part_1_of_2_searches_prompts_1_and_3_as_a_full_search_does(models):
    prompts = [YELLOW, BLUE, TWO, CAT]
    kwargs = dict(algorithm="random", population=4, generations=2, keep=1, scorer="d", verifier="none")
    part = search(models["sg2"], prompts, part=(1, 2), **kwargs)
    assert part.prompt_indices == [1, 3] and [r.prompt for r in part.results] == [BLUE, CAT]
    full = search(models["sg2"], prompts, **kwargs)
    assert full.prompt_indices == [0, 1, 2, 3]
    for mine, whole in zip(part.results, full.results[1::2]):  # a prompt's result does not depend on its part
        assert mine.history == whole.history and np.array_equal(mine.kept[0].image, whole.kept[0].image)


# ---------------------------------------------------------------------- the command line


def textgan_search(*argv):
    return cli.main(["search", *map(str, argv), "--device", "cpu", "--no-progress"])


def collect_cli(folder):
    return cli.main(["search", "collect", str(folder)])


BAD_INPUTS = [
    (lambda f, t: [t / "nope", "--prompt", YELLOW], "no model at"),
    (lambda f, t: [f["sg2"], "--prompts", t / "comments.txt"], "holds no prompt"),
    (lambda f, t: [f["sg2"]], "no prompt given: pass --prompt TEXT"),
    (lambda f, t: [f["sg2"], "--prompt", YELLOW, "--preset", "7x7"], "--preset '7x7': choose one of 100x1000"),
    (lambda f, t: [f["sg2"], "--prompt", YELLOW, "--scorer", "contrastive=,d=x"],
     "the weight of 'd' must be a number, got 'x'"),
    (lambda f, t: [f["sg2"], "--prompt", YELLOW, "--scorer", "clip=abc"], "the weight of 'clip' must be a number"),
    (lambda f, t: [f["sg2"], "--prompt", YELLOW, "--scorer", "d=0"], "must be a finite number > 0"),
    (lambda f, t: [f["sg2"], "--prompt", YELLOW, "--scorer", "clip=inf,d=1"], "must be a finite number > 0"),
    (lambda f, t: [f["sg2"], "--prompt", YELLOW, "--scorer", "dd"],
     "unknown scorer 'dd'; choose from clip, augclip, d, contrastive"),
    (lambda f, t: [f["export"], "--prompt", YELLOW, "--scorer", "d"],
     "is an exported generator (G_ema only): the d and contrastive scorers need the discriminator"),
    (lambda f, t: [f["export"], "--prompt", YELLOW], "or --scorer clip"),  # auto is contrastive+d for a random CLIP
    (lambda f, t: [f["cgan"], "--prompt", YELLOW, "--scorer", "contrastive"], "its D has no contrastive heads"),
    (lambda f, t: [f["cgan"], "--prompt", YELLOW, "--scorer", "d", "--space", "w+"],
     "--space w+: model.arch=cgan has no styles (ws); use --space z"),
    (lambda f, t: [f["cgan"], "--prompt", YELLOW, "--scorer", "d", "--trunc", "0.7"], "has no styles"),
    (lambda f, t: [f["sg2"], "--prompt", YELLOW, "--population", "8", "--budget", "5"],
     "--budget 5 is smaller than one generation of --population 8; raise the budget or lower the population"),
    (lambda f, t: [f["sg2"], "--prompt", YELLOW, "--budget", "50"], "smaller than one generation of --population 100"),
    (lambda f, t: [f["sg2"], "--prompt", YELLOW, "--preset", "100x1000", "--population", "5"],
     "--preset 100x1000 fixes population and generations; drop --population"),
    (lambda f, t: [f["sg2"], "--prompt", YELLOW, "--budget", "80", "--generations", "3"], "drop --generations"),
    (lambda f, t: [f["sg2"], "--prompt", YELLOW, "--population", "3"], "the genetic algorithm needs at least 4"),
    (lambda f, t: [f["sg2"], "--prompt", YELLOW, "--keep", "0"], "--keep 0: must be a whole number >= 1"),
    (lambda f, t: [f["sg2"], "--prompt", YELLOW, "--distinct", "0"], "an MS-SSIM threshold in (0, 1]"),
    (lambda f, t: [f["sg2"], "--prompt", YELLOW, "--patience", "-1"], "must be >= 0"),
    (lambda f, t: [f["sg2"], "--prompt", YELLOW, "--batch", "1"], "first batch, here 1 image"),
    (lambda f, t: [f["sg2"], "--prompt", CAT, "--verifier", "shapes_alignment"],
     "scores captioned-shapes captions only; 'a photo of a cat on a sofa' is not one"),
    (lambda f, t: [f["sg2"], "--prompt", CAT, "--verifier", "clip"], "--verifier-clip-model NAME"),
    (lambda f, t: [f["sg2"], "--prompt", YELLOW, "--clip-model", "ViT-B-32", "--scorer", "clip"],
     "give its weights too"),
    (lambda f, t: [f["sg2"], "--prompt", YELLOW, "--local"], "drop --local"),
    (lambda f, t: [f["sg2"], "--prompt", YELLOW, "--algorithm", "pso"], "invalid choice: 'pso'"),
]


@pytest.mark.parametrize("make_argv, message", BAD_INPUTS, ids=[m[:40] for _, m in BAD_INPUTS])
def test_bad_input_exits_2_naming_the_fix_and_writes_nothing(files, tmp_path, capsys, make_argv, message):
    (tmp_path / "comments.txt").write_text("# nothing yet\n\n   # still nothing\n")
    before = sorted(os.listdir(tmp_path))
    code = textgan_search(*make_argv(files, tmp_path), "--outdir", tmp_path / "out")
    err = capsys.readouterr().err
    assert code == 2 and message in err, err
    assert err.startswith("usage: textgan search") or err.startswith("textgan search: error: ")
    assert sorted(os.listdir(tmp_path)) == before  # no out/ folder, nothing else


def png(path):
    with Image.open(path) as image:
        assert image.format == "PNG"
        return np.asarray(image.convert("RGB"))


def without_timing(entry):
    """A prompt's entry of search.json without what depends on the clock."""
    entry = {k: v for k, v in entry.items() if k not in ("seconds", "evaluations_per_second")}
    if entry.get("baseline"):
        entry["baseline"] = without_timing(entry["baseline"])
    return entry


@pytest.fixture(scope="module")
def searched(files, models, tmp_path_factory):
    """`textgan search` of two shapes prompts (GA 8 x 3 from --budget 30, keep 2), as its folder and output."""
    root = tmp_path_factory.mktemp("search-cli")
    prompts = root / "prompts.txt"
    prompts.write_text(f"# two prompts\n{YELLOW}\n\n{BLUE}\n")
    outdir = root / "out"
    argv = [files["sg2"], "--prompts", prompts, "--population", "8", "--budget", "30", "--keep", "2",
            "--outdir", outdir]
    out, err = io.StringIO(), io.StringIO()  # capsys is function-scoped: the module fixture captures by hand
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = textgan_search(*argv)
    return {"code": code, "out": out.getvalue(), "err": err.getvalue(), "outdir": outdir,
            "folder": outdir / "00000-search-tiny", "prompts": [YELLOW, BLUE]}


def test_search_writes_its_folder_with_images_record_grid_and_plot(searched, models):
    assert searched["code"] == 0, searched["err"]
    folder = searched["folder"]
    assert sorted(os.listdir(searched["outdir"])) == ["00000-search-tiny"]
    names = [output.kept_name(i, p, r) for i, p in enumerate(searched["prompts"]) for r in (0, 1)]
    names += [output.kept_name(i, p, 0, baseline=True) for i, p in enumerate(searched["prompts"])]
    assert names[0] == "000-a-large-yellow-triangle-in-the-center-best0.png"
    assert sorted(os.listdir(folder)) == sorted(names + ["grid.png", "parts", "request.json", "search.json",
                                                         "score_vs_evaluations.png"])
    assert os.listdir(folder / "parts") == ["part-000-of-001.json"]
    assert "2 prompt(s) searched: ga 8 x 3, scorer contrastive+d, held-out verifier shapes_alignment" in searched["out"]

    request = json.loads((folder / "request.json").read_text())
    assert request["prompts"] == searched["prompts"] and request["parts"] == 1 and request["device"] == "cpu"
    assert [request["settings"][k] for k in ("population", "generations", "budget")] == [8, 3, 30]
    assert request["settings"]["scorer"] == "contrastive+d"  # auto, resolved for a random-weights CLIP
    assert request["model_info"]["kind"] == "checkpoint" and request["model_info"]["resolution"] == 16
    part = json.loads((folder / "parts" / "part-000-of-001.json").read_text())
    assert (part["part"], part["parts"], len(part["prompts"])) == (0, 1, 2)

    record = json.loads((folder / "search.json").read_text())
    assert (record["scorer"], record["verifier"], record["grid"], record["plot"]) == (
        "contrastive+d", "shapes_alignment", "grid.png", "score_vs_evaluations.png")
    assert [e["prompt_index"] for e in record["prompts"]] == [0, 1]
    for entry, prompt in zip(record["prompts"], searched["prompts"]):
        assert entry["prompt"] == prompt and entry["algorithm"] == "ga"
        assert (entry["population"], entry["generations"], entry["budget"]) == (8, 3, 24)
        assert (entry["evaluations"], entry["evaluations_saved"], entry["stop_reason"]) == (24, 0, "budget")
        assert [h["evaluations"] for h in entry["history"]] == [8, 16, 24]
        assert entry["best_score"] == entry["history"][-1]["best"] == entry["kept"][0]["score"]
        assert [k["rank"] for k in entry["kept"]] == [0, 1]
        assert entry["kept"][0]["score"] >= entry["kept"][1]["score"]
        assert set(entry["verifier"]) == {"color", "position", "relation", "shape", "overall"}
        assert 0.0 <= entry["diversity"] <= 1.0  # mean pairwise MS-SSIM of the kept images
        baseline = entry["baseline"]
        assert baseline["algorithm"] == "random" and baseline["evaluations"] == entry["evaluations"]
        assert len(baseline["history"]) == len(entry["history"]) and len(baseline["kept"]) == 1
        assert baseline["kept"][0]["path"].endswith("-bestofn0.png")
        for k in entry["kept"] + baseline["kept"]:
            pixels = png(folder / k["path"])
            assert pixels.shape == (16, 16, 3)
            if k["seed"] is not None:  # a prior sample: the PNG is `textgan generate`'s
                assert np.array_equal(pixels, generate(models["sg2"], [prompt], [k["seed"]])[0].image)
        assert baseline["kept"][0]["seed"] is not None
        assert entry["best_score"] >= baseline["history"][0]["best"]  # the GA starts from best-of-N's first seeds
    summary = record["summary"]
    assert set(summary) == {"search", "best_of_n"}
    assert summary["search"]["prompts"] == summary["best_of_n"]["prompts"] == 2
    assert summary["search"]["evaluations"] == summary["best_of_n"]["evaluations"] == 24
    assert summary["search"]["best_score"] == pytest.approx(np.mean([e["best_score"] for e in record["prompts"]]))
    assert summary["search"]["verifier"]["n"] == 2
    grid = png(folder / "grid.png")
    assert grid.shape[0] > 2 * 16 and grid.shape[1] > 3 * 16  # 2 prompts x (2 kept + best-of-N), captioned
    with Image.open(folder / "score_vs_evaluations.png") as plot:
        assert plot.format == "PNG" and plot.size == (600, 400)


def test_collect_rebuilds_the_record_and_names_a_missing_part(searched, tmp_path, capsys):
    assert searched["code"] == 0, searched["err"]
    folder = tmp_path / "copy"
    shutil.copytree(searched["folder"], folder)
    record = json.loads((folder / "search.json").read_text())
    grid = png(folder / "grid.png")
    for name in ("search.json", "grid.png", "score_vs_evaluations.png"):
        os.remove(folder / name)
    assert collect_cli(folder) == 0
    assert json.loads((folder / "search.json").read_text()) == record
    assert np.array_equal(png(folder / "grid.png"), grid) and (folder / "score_vs_evaluations.png").exists()
    assert "2 prompt(s) searched" in capsys.readouterr().out

    os.remove(folder / "parts" / "part-000-of-001.json")
    os.remove(folder / "search.json")
    assert collect_cli(folder) == 2
    err = capsys.readouterr().err
    assert "part(s) 0 of 1 have not finished" in err and "parts/part-NNN-of-001.json" in err
    assert not (folder / "search.json").exists()
    assert collect_cli(tmp_path / "nothing-here") == 2
    assert "request.json is missing: is this a folder made by `textgan search`?" in capsys.readouterr().err


def test_parts_searched_separately_collect_into_the_same_result(searched, tmp_path, capsys):
    """What an --array search does: each part in its own call (here part 1 first), then collect."""
    assert searched["code"] == 0, searched["err"]
    request = json.loads((searched["folder"] / "request.json").read_text())
    folder = job.create_search_folder(str(tmp_path), "tiny", dict(request, parts=2))
    assert os.path.basename(folder) == "00000-search-tiny"
    assert job.run_part(folder, 1, 2, progress=False) == output.part_file(folder, 1, 2)
    assert collect_cli(folder) == 2
    assert "part(s) 0 of 2 have not finished" in capsys.readouterr().err
    written = json.loads(open(output.part_file(folder, 1, 2)).read())
    assert [e["prompt"] for e in written["prompts"]] == [BLUE]  # part 1 of 2: prompt 1 only
    job.run_part(folder, 0, 2, progress=False)
    assert collect_cli(folder) == 0
    split = json.loads(open(os.path.join(folder, "search.json")).read())
    whole = json.loads((searched["folder"] / "search.json").read_text())
    assert [without_timing(e) for e in split["prompts"]] == [without_timing(e) for e in whole["prompts"]]
    for entry in split["prompts"]:
        for k in entry["kept"] + entry["baseline"]["kept"]:
            assert np.array_equal(png(os.path.join(folder, k["path"])), png(searched["folder"] / k["path"]))


# ------------------------------------------------------------------ augmented scorers, distinct kept images


def test_an_augmented_scorer_judges_every_image_on_the_same_views_wherever_it_sits(models):
    """aug<scorer>: the mean over DiffAugment views drawn once per view for the whole batch, so an image scores
    the same alone, in a batch, or at another position; and the views change the score (it is not the plain one)."""
    model = models["sg2"]
    scorer, spec = build_scorer("augcontrastive", model, views=4)
    plain, _ = build_scorer("contrastive", model)
    scorer.prepare(YELLOW)
    plain.prepare(YELLOW)
    images = LatentSpace(model, YELLOW).decode(LatentSpace(model, YELLOW).seeded(range(6)))
    together = scorer(images)
    alone = torch.cat([scorer(images[i:i + 1]) for i in range(6)])
    reversed_order = scorer(images.flip(0)).flip(0)
    assert spec == "augcontrastive"
    torch.testing.assert_close(alone, together, atol=1e-5, rtol=0)
    torch.testing.assert_close(reversed_order, together, atol=1e-5, rtol=0)
    assert (together - plain(images)).abs().max() > 1e-3


def test_a_converged_search_still_keeps_distinct_images(models):
    """The pool holds one candidate per image niche: a GA that has converged (many generations on one prompt)
    still hands back `keep` images, no two of them with MS-SSIM >= --distinct, the best first."""
    from textgan.metrics.diversity import msssim

    model = models["sg2"]
    settings = SearchSettings(algorithm="ga", population=16, generations=30, keep=3, patience=0, baseline=False,
                              scorer="d").checked()
    scorer, _ = build_scorer("d", model)
    result = search_prompt(model, YELLOW, settings, scorer)
    assert len(result.kept) == 3
    scores = [k.score for k in result.kept]
    assert scores == sorted(scores, reverse=True) and scores[0] == result.best_score
    pixels = torch.from_numpy(np.stack([k.image for k in result.kept])).permute(0, 3, 1, 2)
    for i in range(3):
        for j in range(i + 1, 3):
            assert float(msssim(pixels[i:i + 1], pixels[j:j + 1])[0]) < settings.distinct
    assert result.diversity is not None and result.diversity < settings.distinct


@pytest.mark.slow
@pytest.mark.multiproc
def test_the_readme_search_commands_run_as_printed(tmp_path):
    """In a folder holding the demo's run (configs/demo.yaml's networks, fresh weights standing in for trained
    ones), every line of the README's search block runs as printed, the --array --local one through submitit's
    local executor (2 processes), and `collect` merges its parts."""
    write_run(tmp_path / "runs" / "00000-demo", load_config(os.path.join(ROOT, "configs", "demo.yaml"), ["desc=demo"]))
    lines = readme_block("Searching for the best images")
    assert sum(line.startswith("textgan search ") for line in lines) >= 5
    run_readme_lines(lines, tmp_path)
    folders = sorted(os.listdir(tmp_path / "searches"))
    assert folders == ["00000-search-demo", "00001-search-demo", "00002-search-demo", "00003-search-demo"]
    cmaes = json.loads((tmp_path / "searches" / "00001-search-demo" / "search.json").read_text())
    assert cmaes["settings"]["algorithm"] == "cmaes" and cmaes["settings"]["population"] * \
        cmaes["settings"]["generations"] == 2000
    assert all(1 <= len(p["kept"]) <= 8 for p in cmaes["prompts"])
    weighted = json.loads((tmp_path / "searches" / "00002-search-demo" / "search.json").read_text())
    assert weighted["scorer"] == "augcontrastive=1,augd=0.5"
    array = json.loads((tmp_path / "searches" / "00003-search-demo" / "search.json").read_text())
    assert array["parts"] == 2 and [p["prompt_index"] for p in array["prompts"]] == [0, 1]
    assert sorted(os.listdir(tmp_path / "searches" / "00003-search-demo" / "parts")) == [
        "part-000-of-002.json", "part-001-of-002.json"]


def test_the_search_api_needs_no_deepspeed_or_submitit(files):
    """A notebook searches with the D scorer (read from a checkpoint) without DeepSpeed, submitit or a process group."""
    import subprocess
    import sys

    script = f"""
import sys
from textgan.infer import load_model, search
run = search(load_model({files['cgan']!r}, device="cpu"), ["a red circle above a blue square"], scorer="d",
             population=8, generations=2, keep=2)
print(run.results[0].evaluations, sorted(m for m in sys.modules if m.split(".")[0] in ("deepspeed", "submitit")))
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, PYTHONPATH=ROOT))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "16 []"


def test_a_clip_scorer_and_a_second_clip_verifier_load_local_weights_files(models, tmp_path):
    """--scorer clip / augclip with --clip-model NAME --clip-weights FILE, and --verifier clip with another file:
    the searched score is the cosine in the scorer's model, the held-out one is textgan's CLIP score in the
    verifier's model, recomputed here on the kept pixels."""
    import open_clip

    from textgan.encoders import load_clip
    from textgan.metrics.clip_score import clip_scores

    files = {}
    for name, seed in (("scorer", 1), ("verifier", 2)):  # two different (random) models, saved as weights files
        torch.manual_seed(seed)
        files[name] = str(tmp_path / f"{name}.pt")
        torch.save(open_clip.create_model("textgan-demo-clip").state_dict(), files[name])
    model = models["sg2"]
    run = search(model, [CAT], scorer="augclip", augmentations=2, population=8, generations=2, keep=2,
                 clip_model="textgan-demo-clip", clip_weights=files["scorer"], verifier="clip",
                 verifier_clip_model="textgan-demo-clip", verifier_clip_weights=files["verifier"])
    result = run.results[0]
    assert run.scorer == "augclip" and run.verifier == "clip"
    verifier_tower = load_clip("textgan-demo-clip", files["verifier"])
    pixels = torch.from_numpy(np.stack([k.image for k in result.kept])).permute(0, 3, 1, 2).contiguous()
    expected = clip_scores(verifier_tower, pixels, [CAT] * len(pixels))
    assert [k.verifier["clip"] for k in result.kept] == pytest.approx(list(expected), abs=1e-5)
    assert result.verifier == result.kept[0].verifier
    scorer_tower = load_clip("textgan-demo-clip", files["scorer"])
    assert not torch.equal(next(scorer_tower.parameters()), next(verifier_tower.parameters()))


# ------------------------------------------------------------------ textgan eval --search


def test_a_searched_generator_searches_each_rows_caption_with_a_seed_of_its_own(models):
    """What `textgan eval --search` measures: row i is kept[0] of a search for row i's caption, seeded from z_i,
    so one caption drawn twice gets two searches (two images), each equal to a direct search with that seed."""
    from textgan.infer.population_search.searched_generator import SearchedGenerator

    model = models["sg2"]
    settings = SearchSettings(algorithm="ga", population=8, generations=2, keep=1, baseline=False, patience=0,
                              scorer="d").checked()
    scorer, _ = build_scorer("d", model)
    searched = SearchedGenerator(model, settings, scorer)
    captions = [YELLOW, YELLOW, BLUE]
    z = torch.randn(3, searched.z_dim, generator=torch.Generator().manual_seed(5))
    images = searched(z, searched.encode(captions))
    assert images.shape == (3, 3, 16, 16) and searched.searches == 3 and searched.evaluations == 3 * 16
    assert not torch.equal(images[0], images[1])
    import struct

    for i, caption in enumerate(captions):
        seed = struct.unpack("<I", struct.pack("<f", float(z[i, 0])))[0] % 4096
        direct = search_prompt(model, caption, SearchSettings(**{**settings.to_dict(), "seed": seed}).checked(), scorer)
        assert np.array_equal(to_uint8(images[i:i + 1])[0], direct.kept[0].image)


@pytest.mark.slow
def test_textgan_eval_search_measures_searched_images_by_the_plain_protocol(files, tmp_path, capsys):
    """`textgan eval RUN --metrics shapes_alignment8 --search random --search-budget 16`: the searched images'
    metric goes to RUN/searched-random-16/ with the search's settings, never into the run's own metric files."""
    from textgan import eval_cli
    from textgan.data.building.builder import BuildConfig, build

    val = str(tmp_path / "shapes16-val")
    build(BuildConfig(source="shapes", split="val", out=val, resolution=16, n=32, samples_per_shard=16, workers=1,
                      progress=False))
    run_dir = tmp_path / "run"
    shutil.copytree(files["sg2"], run_dir)
    args = [str(run_dir), "--metrics", "shapes_alignment8", "--reference", val, "--device", "cpu", "--batch-size", "4"]
    assert eval_cli.main(args + ["--search", "random", "--search-budget", "16", "--search-population", "8",
                                 "--search-scorer", "d"]) == 0
    out_dir = run_dir / "searched-random-16"
    record = json.loads((out_dir / "metric-shapes_alignment8.jsonl").read_text().splitlines()[0])
    assert record["metric"] == "shapes_alignment8" and record["results"]["n"] == 8
    settings = json.loads((out_dir / "search.json").read_text())["settings"]
    assert (settings["algorithm"], settings["population"], settings["generations"], settings["scorer"]) == \
        ("random", 8, 2, "d")
    assert not list(run_dir.glob("metric-*.jsonl"))
    assert eval_cli.main(args + ["--search", "sideways"]) == 2
    assert "--search 'sideways': choose one of ga, cmaes, random" in capsys.readouterr().err
