"""Inference with a trained generator, usable from a notebook (no DeepSpeed, no process group).

    from textgan.infer import load_model, generate
    model = load_model("runs/00000-demo")       # run dir, checkpoint dir or `textgan export` file
    samples = generate(model, ["a red circle above a blue square"], seeds=range(8), psi=1.0)
    samples[0].image                            # uint8 [H, W, 3]; .prompt, .seed, .prompt_index

Files: model (loading: G_ema, config, the training text tower, sha256), generation (seeds -> z, per-image
synthesis, truncation), seeds / prompts (command-line input, no torch), output (the result folder: PNGs,
grid, generation.json), generate_cmd (`textgan generate`); population_search/ (`textgan search`: GA / CMA-ES / best-of-N over
latents, scorers, held-out verifiers; its command line is textgan/launch/search_cmd.py).

    run = search(model, prompts, algorithm="ga", budget=1000, keep=4)   # see population_search/run.py
"""

from textgan.infer.prompts import check_prompts, read_prompt_file
from textgan.infer.seeds import parse_seeds

# Loading and generating need torch: imported on first use, so that the command line's parser (which
# uses parse_seeds and read_prompt_file) and `textgan generate --help` stay instant. (The module is
# `generation`, not `generate`: once imported, a submodule named like the function would shadow it here.)
_LAZY = {"load_model": "model", "Model": "model", "resolve_device": "model", "generate": "generation",
         "iter_generate": "generation", "synthesize": "generation", "latent": "generation", "latents": "generation",
         "Sample": "generation", "check_truncation": "generation", "search": "population_search.run",
         "SearchSettings": "population_search.settings"}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"textgan.infer.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'textgan.infer' has no attribute {name!r}")


__all__ = ["check_prompts", "parse_seeds", "read_prompt_file", *_LAZY]
