"""The unit of work of `textgan search`: one part of a search folder's prompts, in any process.

    folder = create_search_folder(outdir, model, request)   # request.json: prompts, settings, model, parts
    run_part(folder, index, count)                          # a process, a rank or a Slurm array task
    collect(folder)                                         # once every part has written its file

Run in-process for a plain `textgan search`, and as the callable of each task of a Slurm array (submitit
pickles it with its arguments). Under submitit, an array task that runs several ranks (--tasks-per-node)
splits its part again by rank, each rank on its own GPU.
"""

import json
import os

from textgan.atomic import write_text_atomic
from textgan.infer.population_search.output import REQUEST_FILE, read_json, write_part
from textgan.infer.population_search.settings import SearchSettings


def create_search_folder(outdir: str, desc: str, request: dict) -> str:
    """A new numbered folder OUTDIR/{id:05d}-search-{desc} holding request.json."""
    from textgan.infer.output import create_folder_named

    folder = create_folder_named(outdir, f"search-{desc}")
    write_text_atomic(os.path.join(folder, REQUEST_FILE), json.dumps(request, indent=1) + "\n")
    return folder


def ranks():
    """(rank, ranks, local rank) of this process inside its job: submitit's task when under submitit, else (0, 1, 0)."""
    try:
        import submitit

        env = submitit.JobEnvironment()
        return env.global_rank, env.num_tasks, env.local_rank
    except RuntimeError:  # not inside a submitit job
        return 0, 1, 0


def run_part(folder: str, index: int, count: int, device=None, progress: bool = True, model=None) -> str:
    """Search part `index` of `count` of the folder's prompts (split again across this job's ranks); returns the
    part file written. model: the request's model already loaded in this process (else loaded here)."""
    from textgan.infer.model import load_model
    from textgan.infer.population_search.run import search

    request = read_json(os.path.join(folder, REQUEST_FILE), "the search's request")
    rank, size, local_rank = ranks()
    index, count = index * size + rank, count * size
    device = device or request["device"]
    if size > 1 and device in ("auto", "cuda"):
        import torch

        device = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    if model is None:
        model = load_model(request["model"], device=device)
    options = request["options"]
    run = search(model, request["prompts"], SearchSettings(**request["settings"]), part=(index, count),
                 progress=progress, **options)
    return write_part(folder, run, index, count)
