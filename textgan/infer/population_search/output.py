"""A search's folder: what each part wrote, and what collect() makes of all parts.

    OUTDIR/{id:05d}-{desc}/
        request.json                      the prompts, settings and model: what every part reads
        000-a-large-yellow-tri-best0.png  the kept images of prompt 0, best first (best-of-N's best: -bestofn.png)
        parts/part-000-of-004.json        one per part (rank / array task), written when it has finished
        search.json                       collect(): every prompt, the summaries search vs best-of-N
        grid.png                          collect(): prompts as rows, the kept images as columns
        score_vs_evaluations.png          collect(): mean best score against evaluations, search vs best-of-N

search.json per prompt: the searched score per generation (best so far, best and mean of the generation,
step size), evaluations used and saved, why it stopped, each kept image's score, seed (when it is an
unchanged prior sample), generation and held-out score, the diversity (mean pairwise MS-SSIM) of the kept
images, and the same for best-of-N at the evaluations the search used.
"""

import json
import os
from typing import Optional

import numpy as np

import textgan
from textgan.atomic import write_text_atomic
from textgan.errors import UsageError
from textgan.infer.output import slug

REQUEST_FILE = "request.json"
SEARCH_FILE = "search.json"
GRID_FILE = "grid.png"
PLOT_FILE = "score_vs_evaluations.png"
PARTS = "parts"


def part_file(folder: str, index: int, count: int) -> str:
    return os.path.join(folder, PARTS, f"part-{index:03d}-of-{count:03d}.json")


def kept_name(prompt_index: int, prompt: str, rank: int, baseline: bool = False) -> str:
    return f"{prompt_index:03d}-{slug(prompt)}-{'bestofn' if baseline else 'best'}{rank}.png"


def _result_entry(folder: str, prompt_index: int, result, baseline: bool = False) -> dict:
    from textgan.train.grids import save_png

    kept = []
    for rank, k in enumerate(result.kept):
        if baseline and rank > 0:
            break  # best-of-N: its best image is what the comparison needs
        name = kept_name(prompt_index, result.prompt, rank, baseline)
        save_png(os.path.join(folder, name), k.image)
        kept.append({"rank": rank, "path": name, "score": k.score, "seed": k.seed, "generation": k.generation,
                     "verifier": k.verifier})
    entry = {"algorithm": result.algorithm, "population": result.population, "generations": result.generations,
             "budget": result.budget, "evaluations": result.evaluations,
             "evaluations_saved": result.evaluations_saved, "stop_reason": result.stop_reason,
             "best_score": result.best_score, "seconds": round(result.seconds, 3),
             "evaluations_per_second": result.evaluations / max(result.seconds, 1e-9),
             "verifier": result.verifier, "verifier_kept": result.verifier_kept, "diversity": result.diversity,
             "kept": kept, "history": result.history}
    if result.baseline is not None:
        entry["baseline"] = _result_entry(folder, prompt_index, result.baseline, baseline=True)
    return entry


def write_part(folder: str, run, index: int, count: int) -> str:
    """The kept images of `run` (a SearchRun of part index/count) and its part file; returns the file."""
    entries = []
    for i, result in zip(run.prompt_indices, run.results):
        entries.append(dict(prompt_index=i, prompt=result.prompt, **_result_entry(folder, i, result)))
    path = part_file(folder, index, count)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    write_text_atomic(path, json.dumps({"part": index, "parts": count, "scorer": run.scorer,
                                        "verifier": run.verifier, "prompts": entries}, indent=1) + "\n")
    return path


def read_json(path: str, what: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise UsageError(f"{path} is missing: is this a folder made by `textgan search`? ({what})") from None
    except (OSError, ValueError) as e:
        raise UsageError(f"{path} cannot be read ({what}): {e}") from e


def summary(entries: list, side: Optional[str] = None) -> dict:
    """Means over prompts of the searched score, held-out scores of the best images, diversity, evaluations."""
    from textgan.infer.population_search.verifiers import mean_entries

    rows = [e if side is None else e[side] for e in entries if side is None or e.get(side)]
    if not rows:
        return {}
    verifier = [r["verifier"] for r in rows if r.get("verifier")]
    diversity = [r["diversity"] for r in rows if r.get("diversity") is not None]
    return {"prompts": len(rows), "best_score": float(np.mean([r["best_score"] for r in rows])),
            "verifier": mean_entries(verifier) if verifier else None,
            "diversity": float(np.mean(diversity)) if diversity else None,
            "evaluations": float(np.mean([r["evaluations"] for r in rows])),
            "evaluations_saved": float(np.mean([r["evaluations_saved"] for r in rows])),
            "evaluations_per_second": float(np.mean([r["evaluations_per_second"] for r in rows]))}


def collect(folder: str) -> dict:
    """Merge the parts into search.json, grid.png and the plot; UsageError naming the missing parts."""
    request = read_json(os.path.join(folder, REQUEST_FILE), "the search's request")
    count = int(request["parts"])
    missing = [i for i in range(count) if not os.path.exists(part_file(folder, i, count))]
    if missing:
        raise UsageError(f"{folder}: part(s) {', '.join(map(str, missing))} of {count} have not finished (no "
                         f"{PARTS}/part-NNN-of-{count:03d}.json); collect again once they have")
    parts = [read_json(part_file(folder, i, count), "a part's results") for i in range(count)]
    entries = sorted((e for p in parts for e in p["prompts"]), key=lambda e: e["prompt_index"])
    record = dict(request, textgan=textgan.__version__, scorer=parts[0]["scorer"], verifier=parts[0]["verifier"],
                  summary={"search": summary(entries), "best_of_n": summary(entries, "baseline")},
                  prompts=entries, grid=save_grid_of(folder, entries), plot=save_plot(folder, entries))
    write_text_atomic(os.path.join(folder, SEARCH_FILE), json.dumps(record, indent=1) + "\n")
    return record


def save_grid_of(folder: str, entries: list) -> str:
    """Prompts as rows; the kept images, then best-of-N's best, as columns (each captioned with its scores)."""
    import torch
    from PIL import Image

    from textgan.train.grids import save_grid

    columns = max(len(e["kept"]) for e in entries) + (1 if any(e.get("baseline") for e in entries) else 0)
    images, captions = [], []
    size = None
    for e in entries:
        cells = [(k, f"{e['prompt']} #{k['rank']} ({k['score']:.3g})") for k in e["kept"]]
        if e.get("baseline") and e["baseline"]["kept"]:
            k = e["baseline"]["kept"][0]
            cells += [(None, None)] * (columns - 1 - len(cells)) + [(k, f"best-of-N ({k['score']:.3g})")]
        cells += [(None, None)] * (columns - len(cells))
        for k, caption in cells:
            if k is None:
                images.append(None)
                captions.append("")
                continue
            pixels = np.asarray(Image.open(os.path.join(folder, k["path"])).convert("RGB"))
            size = pixels.shape
            images.append(pixels)
            captions.append(caption)
    blank = np.full(size, 255, dtype=np.uint8)
    tensor = torch.from_numpy(np.stack([blank if i is None else i for i in images])).permute(0, 3, 1, 2)
    save_grid(tensor.float() / 127.5 - 1.0, captions, os.path.join(folder, GRID_FILE), ncol=columns)
    return GRID_FILE


def curve(entries: list, side: Optional[str]) -> tuple:
    """(evaluations, mean over prompts of the best score so far); a prompt that stopped early keeps its last best."""
    histories = [(e if side is None else e[side])["history"] for e in entries if side is None or e.get(side)]
    if not histories:
        return [], []
    points = sorted({h["evaluations"] for hist in histories for h in hist})
    means = []
    for x in points:
        values = []
        for hist in histories:
            reached = [h["best"] for h in hist if h["evaluations"] <= x]
            values.append(reached[-1] if reached else hist[0]["best"])
        means.append(float(np.mean(values)))
    return points, means


def save_plot(folder: str, entries: list) -> str:
    import matplotlib

    matplotlib.use("Agg")  # no display on a cluster node
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    x, y = curve(entries, None)
    ax.plot(x, y, label=f"search ({entries[0]['algorithm']})")
    bx, by = curve(entries, "baseline")
    if bx:
        ax.plot(bx, by, "--", label="best-of-N (random)")
    ax.set_xscale("log")
    ax.set_xlabel("evaluations per prompt")
    ax.set_ylabel("searched score (best so far, mean over prompts)")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = os.path.join(folder, PLOT_FILE)
    fig.savefig(path + ".tmp.png")
    plt.close(fig)
    os.replace(path + ".tmp.png", path)
    return PLOT_FILE
