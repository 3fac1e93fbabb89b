"""`textgan search`: each algorithm's own overhead, and what search buys over best-of-N on a held-out verifier.

Throughput (`python benchmarks/run.py search`): evaluations per second of each algorithm's whole loop (ask,
generator + scorer forward, tell, the pool of best candidates) over a plain batched generator + scorer forward
of the same batch, interleaved. Ratio 1 = the algorithm costs nothing beyond the forward passes (goal >= 0.9).
The model is a freshly initialised demo-size generator and discriminator (configs/demo.yaml's networks: speed
does not depend on training); the scorer is the demo's default, D's contrastive heads + logit.

Quality (the demo model trained by the README command; not part of run.py, since it needs that run):

    python benchmarks/bench_search.py quality runs/00000-demo --prompts 32 --evaluations 1000,10000,100000 \\
        --presets --workers 8 --device cuda --out search-quality.json

For each of N captioned-shapes prompts (the first caption of val scenes 0..N-1): the held-out shapes_alignment
(colour, position, relation, shape) of the best image of plain sampling (seed 0), truncation (StyleGAN2 only),
best-of-N (random), the GA and CMA-ES at each number of evaluations (population 100, full budget: no early
stop), the GA at the four research presets (100k evaluations each), and the GA with the adaptive stop. Prompts
are split over --workers processes with textgan's own part splitting.
"""

import argparse
import json
import os
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path[:0] = [ROOT, HERE]

from harness import Result, interleaved  # noqa: E402

PROMPT = "a large yellow triangle in the center"


def fresh_run(folder: str, config: str = "demo") -> str:
    """A run directory holding a freshly initialised model of configs/<config>.yaml's networks (G, D; the demo's
    text tower, textgan-demo-clip with random weights, so that nothing needs downloaded weights)."""
    import torch

    from textgan.config import load_config, to_yaml
    from textgan.nets import build_networks_from_config
    from textgan.train.checkpoint_dir import COMPLETE, FORMAT, WEIGHTS_FILE

    overrides = [] if config == "demo" else ["text_encoder.model=textgan-demo-clip", "text_encoder.pretrained=null",
                                             "text_encoder.random_weights=true", "contrastive.S_D=1",
                                             "contrastive.C_it=1"]
    cfg = load_config(os.path.join(ROOT, "configs", f"{config}.yaml"), overrides)
    torch.manual_seed(0)
    G, D = build_networks_from_config(cfg, 128)  # textgan-demo-clip embeds in 128 dimensions
    ckpt = os.path.join(folder, "checkpoints", "000000.000")
    os.makedirs(ckpt)
    with open(os.path.join(folder, "config.yaml"), "w") as f:
        f.write(to_yaml(cfg))
    torch.save({"G": G.state_dict(), "D": D.state_dict(), "G_ema": G.state_dict()}, os.path.join(ckpt, WEIGHTS_FILE))
    torch.save({"state": {"cur_nimg": 0, "tick": 0}}, os.path.join(ckpt, "client_state.pt"))
    with open(os.path.join(ckpt, COMPLETE), "w") as f:
        json.dump({"format": FORMAT, "tag": "000000.000", "serial": 1, "finite": True}, f)
    return folder


def run(quick: bool = False) -> list:
    """Ratios for configs/demo.yaml's networks, and for each config named in $TEXTGAN_BENCH_SEARCH_CONFIGS
    (comma-separated, e.g. demo,coco128: a GPU measurement of a real-size generator)."""
    configs = os.environ.get("TEXTGAN_BENCH_SEARCH_CONFIGS", "demo").split(",")
    return [r for config in configs for r in measure(config, quick)]


def measure(config: str, quick: bool) -> list:
    import torch

    from textgan.infer.model import load_model
    from textgan.infer.population_search.loop import search_prompt
    from textgan.infer.population_search.scorers import build_scorer
    from textgan.infer.population_search.settings import SearchSettings
    from textgan.infer.population_search.space import LatentSpace

    # steady state: enough generations that the one-off final selection of the kept images is a small part
    population, generations = (100, 5) if quick else (500, 40)
    with tempfile.TemporaryDirectory() as tmp:
        model = load_model(fresh_run(tmp, config), device="auto")
        scorer, spec = build_scorer("contrastive+d", model)
        space = LatentSpace(model, PROMPT, batch=population)
        scorer.prepare(PROMPT)
        genomes = torch.randn(population, space.dim)

        def plain() -> float:
            start = time.perf_counter()
            for _ in range(generations):
                scorer(space.decode(genomes))
            return population * generations / (time.perf_counter() - start)

        results = []
        for algorithm in ("random", "ga", "cmaes"):
            settings = SearchSettings(algorithm=algorithm, population=population, generations=generations,
                                      batch=population, patience=0, keep=4, baseline=False).checked()

            def searched() -> float:
                result = search_prompt(model, PROMPT, settings, scorer)
                return result.evaluations / result.seconds

            base, cand = interleaved(plain, searched, repeats=2 if quick else 3)
            results.append(Result(
                name=f"search/{config}/{algorithm}", what=f"evaluations/s of the {algorithm} search loop (population "
                f"{population}, {generations} generations, incl. keeping 4 distinct images) over a plain batched "
                f"G + scorer forward of the same batch", baseline="plain forward", candidate=algorithm,
                baseline_value=base, candidate_value=cand, unit="evaluations/s",
                notes=[] if algorithm != "random" else [
                    f"{config}: configs/{config}.yaml's networks ({model.arch}, {model.resolution} px), freshly "
                    f"initialised; scorer {spec}; device {model.device}; the goal is a ratio >= 0.9 (an algorithm's "
                    "own overhead <= 10%)"]))
        return results


# ------------------------------------------------------------------------------------------------ quality


def conditions(evaluations: list, presets: bool, has_styles: bool, scorers: list) -> list:
    """[(label, settings fields or a special kind)] in table order."""
    rows = [("plain sample (seed 0)", {"kind": "plain"})]
    if has_styles:
        rows.append(("truncated sample (psi 0.7, seed 0)", {"kind": "plain", "psi": 0.7}))
    for scorer in scorers:
        tag = "" if scorer == scorers[0] else f" [{scorer}]"
        for n in evaluations:
            population = min(100, n)
            for algorithm in ("random", "ga", "cmaes"):
                rows.append((f"{algorithm} @ {n}{tag}", {"algorithm": algorithm, "population": population,
                                                         "generations": n // population, "patience": 0,
                                                         "scorer": scorer}))
    if presets:
        from textgan.infer.population_search.settings import PRESETS

        for preset in PRESETS:
            for algorithm in ("ga", "cmaes"):
                rows.append((f"{algorithm} preset {preset}", {"algorithm": algorithm, "preset": preset, "patience": 0,
                                                              "scorer": scorers[0]}))
        budget = max(evaluations)
        rows.append((f"ga @ {budget}, adaptive stop (patience 10)", {
            "algorithm": "ga", "population": 100, "generations": budget // 100, "patience": 10, "scorer": scorers[0]}))
    return rows


def quality_worker(args) -> list:
    """Every condition for the prompts of one part: [{"label", "prompt_index", "score", "verifier", ...}]."""
    model_path, prompts, part, count, device, rows, records_file = args
    import torch

    from textgan.infer.generation import generate
    from textgan.infer.model import load_model
    from textgan.infer.population_search.loop import search_prompt
    from textgan.infer.population_search.run import part_of
    from textgan.infer.population_search.scorers import build_scorer
    from textgan.infer.population_search.settings import SearchSettings
    from textgan.infer.population_search.verifiers import ShapesVerifier

    torch.set_num_threads(max(1, (os.cpu_count() or 2) // count))
    model = load_model(model_path, device=device)
    scorers = {}  # spec -> scorer, built once per worker
    verifier = ShapesVerifier()
    out = []
    for i in part_of(len(prompts), part, count):
        prompt = prompts[i]
        for label, fields in rows:
            start = time.perf_counter()
            if fields.get("kind") == "plain":
                sample = generate(model, [prompt], seeds=[0], psi=fields.get("psi", 1.0))[0]
                out.append({"label": label, "prompt_index": i, "verifier": verifier.score([sample.image], prompt)[0],
                            "score": None, "evaluations": 1, "seconds": time.perf_counter() - start, "diversity": None})
                continue
            if fields["scorer"] not in scorers:
                scorers[fields["scorer"]] = build_scorer(fields["scorer"], model)[0]
            settings = SearchSettings(keep=4, baseline=False, batch=1000, **fields).checked()
            result = search_prompt(model, prompt, settings, scorers[fields["scorer"]], verifier=verifier)
            out.append({"label": label, "prompt_index": i, "verifier": result.verifier, "score": result.best_score,
                        "evaluations": result.evaluations, "seconds": result.seconds, "diversity": result.diversity,
                        "stop_reason": result.stop_reason})
        if records_file:  # appended per prompt: a run cut short still leaves what it measured
            with open(records_file, "a") as f:
                f.write("".join(json.dumps(r) + "\n" for r in out if r["prompt_index"] == i))
        print(f"part {part}: prompt {i} done", file=sys.stderr, flush=True)
    return out


def summarize(rows: list, records: list) -> list:
    import numpy as np

    table = []
    for label, _ in rows:
        mine = [r for r in records if r["label"] == label]
        if not mine:
            continue

        def mean(key, sub=None):
            values = [(r[key] if sub is None else (r[key] or {}).get(sub)) for r in mine]
            values = [v for v in values if v is not None]
            return float(np.mean(values)) if values else None

        table.append({"condition": label, "prompts": len(mine), "color": mean("verifier", "color"),
                      "position": mean("verifier", "position"), "relation": mean("verifier", "relation"),
                      "shape": mean("verifier", "shape"), "overall": mean("verifier", "overall"),
                      "searched_score": mean("score"), "diversity": mean("diversity"),
                      "evaluations": mean("evaluations"), "seconds": mean("seconds")})
    return table


def markdown(table: list) -> str:
    def f(v, digits=3):
        return "-" if v is None else f"{v:.{digits}f}"

    lines = ["| condition | colour | position | relation | shape | overall | searched score | diversity (MS-SSIM) "
             "| evaluations / prompt | s / prompt |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in table:
        lines.append(f"| {r['condition']} | {f(r['color'])} | {f(r['position'])} | {f(r['relation'])} | "
                     f"{f(r['shape'])} | {f(r['overall'])} | {f(r['searched_score'])} | {f(r['diversity'])} | "
                     f"{r['evaluations']:.0f} | {f(r['seconds'], 2)} |")
    return "\n".join(lines)


def quality_main(argv) -> int:
    p = argparse.ArgumentParser(prog="bench_search.py quality")
    p.add_argument("model")
    p.add_argument("--prompts", type=int, default=32)
    p.add_argument("--evaluations", default="1000,10000")
    p.add_argument("--presets", action="store_true")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--device", default="auto")
    p.add_argument("--scorers", default="contrastive+d", help="scorers to compare, separated by ';'")
    p.add_argument("--out", default=None)
    p.add_argument("--records", default=None, help="append each prompt's records to this JSON-lines file")
    p.add_argument("--from-records", default=None, help="only summarize an earlier run's --records file")
    args = p.parse_args(argv)
    from textgan.data.sources.shapes import shapes_records
    from textgan.infer.model import load_model

    prompts = [r.captions[0] for r in shapes_records(args.prompts, seed=0, split="val")]
    evaluations = [int(x) for x in args.evaluations.split(",")]
    has_styles = load_model(args.model, device="cpu").has_styles
    rows = conditions(evaluations, args.presets, has_styles, args.scorers.split(";"))
    jobs = [(args.model, prompts, part, args.workers, args.device, rows, args.records) for part in range(args.workers)]
    start = time.perf_counter()
    if args.from_records:
        with open(args.from_records) as f:
            records = [json.loads(line) for line in f if line.strip()]
        prompts = sorted({r["prompt_index"] for r in records})
    elif args.workers == 1:
        records = quality_worker(jobs[0])
    else:
        import multiprocessing

        with multiprocessing.get_context("spawn").Pool(args.workers) as pool:
            records = [r for part in pool.map(quality_worker, jobs) for r in part]
    table = summarize(rows, records)
    text = markdown(table)
    print(text)
    print(f"{len(prompts)} prompts, {time.perf_counter() - start:.0f} s, device {args.device}, workers {args.workers}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"prompts": prompts, "table": table, "records": records, "command": sys.argv}, f, indent=1)
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["quality"]:
        sys.exit(quality_main(sys.argv[2:]))
    print(__doc__)
    sys.exit(2)
