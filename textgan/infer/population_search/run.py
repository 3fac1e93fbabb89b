"""Search many prompts: the Python API and what each rank / array task of `textgan search` runs.

    from textgan.infer import load_model, search
    model = load_model("runs/00000-demo")
    run = search(model, ["a large yellow triangle in the center"], algorithm="ga", budget=1000, keep=4)
    run.results[0].kept[0].image                  # uint8 [H, W, 3], the best distinct image
    run.results[0].verifier, run.results[0].baseline.verifier   # held-out score: search vs best-of-N

Prompts can be split across processes: part `index` of `count` takes prompts index, index + count, ...
(a prompt's result does not depend on which part searched it: every prompt starts from the same seeds).
"""

import sys
from dataclasses import dataclass
from typing import List, Optional

from textgan.infer.prompts import check_prompts
from textgan.infer.population_search.settings import SearchSettings


@dataclass
class SearchRun:
    settings: SearchSettings
    scorer: str  # the resolved scorer spec
    verifier: Optional[str]  # the held-out verifier's name, None without one
    prompt_indices: List[int]  # positions of the searched prompts in the full prompt list
    results: list  # PromptSearch per searched prompt


def part_of(count_prompts: int, index: int, count: int) -> List[int]:
    """The prompt positions of part `index` of `count` (round-robin: parts stay balanced)."""
    if not 0 <= index < count:
        raise ValueError(f"part {index} of {count} does not exist")
    return list(range(index, count_prompts, count))


def search(model, prompts, settings: Optional[SearchSettings] = None, *, clip_model=None, clip_weights=None,
           verifier: str = "auto", verifier_clip_model=None, verifier_clip_weights=None, device=None,
           part: tuple = (0, 1), progress: bool = False, **options) -> SearchRun:
    """Search every prompt (or part `part` = (index, count) of them). settings: a SearchSettings, or its fields
    as keyword options (algorithm="cmaes", preset="200x500", scorer="clip", keep=8, ...)."""
    from textgan.infer.population_search.loop import search_prompt
    from textgan.infer.population_search.scorers import build_scorer
    from textgan.infer.population_search.verifiers import build_verifier

    settings = (settings or SearchSettings(**options)).checked()
    prompts = check_prompts(prompts)
    if device is not None:
        model.to(device)
    if settings.trunc_cutoff is not None or settings.psi != 1:
        from textgan.infer.generation import check_truncation

        check_truncation(model, settings.psi, settings.trunc_cutoff, settings.centre)
    scorer, spec = build_scorer(settings.scorer, model, clip_model, clip_weights, views=settings.augmentations)
    settings.check_scorer(spec)
    held_out = build_verifier(verifier, prompts, model, verifier_clip_model, verifier_clip_weights)
    indices = part_of(len(prompts), *part)
    per_prompt = settings.evaluations * (2 if settings.baseline and settings.algorithm != "random" else 1)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=per_prompt * len(indices), unit="eval", unit_scale=True, desc=f"search {settings.algorithm}",
                   file=sys.stderr)
    results = []
    try:
        for done, i in enumerate(indices):
            results.append(search_prompt(model, prompts[i], settings, scorer, verifier=held_out,
                                         baseline=settings.baseline, progress=bar))
            if bar is not None:  # an early stop leaves part of the prompt's budget unspent
                bar.update(per_prompt * (done + 1) - bar.n)
                bar.set_postfix(best=f"{results[-1].best_score:.3g}")
    finally:
        if bar is not None:
            bar.close()
    return SearchRun(settings, spec, None if held_out is None else held_out.name, indices, results)
