#!/usr/bin/env python
"""Does the demo learn its text, and which settings make it learn faster? Learning curves, side by side.

Trains variants of configs/demo.yaml (each a list of --set overrides on top of the recipe) for several seeds,
`--parallel` runs at a time with `--threads` torch threads each (default 1), and prints the shapes_alignment
curves of G_ema (colour, position, relation, shape at every snapshot; the last snapshot split into one- and
two-object captions) with each run's median sec/kimg, as the Markdown tables of BENCHMARKS.md "demo learning":

    python benchmarks/demo_learning.py --variants recipe,C_it1 --seeds 0,1,2 --out runs/demo-learning
    python benchmarks/demo_learning.py --out runs/demo-learning --report      # tables of what is there
    python benchmarks/demo_learning.py --probe                                # what the text embedding holds

Runs side by side share the cores, so sec/kimg compares only runs of one batch; the curves are per kimg and
do not depend on the speed. `--probe` fits linear and one-hidden-layer classifiers that read each object's
colour from the demo tower's caption embeddings (whitened as model.c_norm=whiten does): the ceiling on what
a generator that reads c linearly can get right. Not part of CI: a seed takes 10-20 minutes on 2 cores.
"""

import argparse
import glob
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
RECIPE = os.path.join(ROOT, "configs", "demo.yaml")

# name -> overrides of configs/demo.yaml. "recipe" is the recipe as shipped (c whitened and fed to every batch norm
# of G, C_it 2, the matching-aware term's wrong caption the batch's nearest); "roll" is it with a random wrong caption
# (the recipe before), "no_cbn" that without conditional batch norm (the recipe before that), and the other cgan
# variants change one more thing on top of no_cbn, or on top of "C_it1" (no_cbn with C_it 1, the recipe before
# that), so that each curve reproduces the one it was measured as (BENCHMARKS.md "demo learning"). StyleGAN2 ignores
# model.cgan_conditional_bn, so its variants need no such care.
ROLL = ["loss.matching_negatives=roll"]
NO_CBN = ROLL + ["model.cgan_conditional_bn=false"]
C_IT1 = NO_CBN + ["contrastive.C_it=1.0"]
VARIANTS = {
    "recipe": [],
    "roll": ROLL,
    "no_cbn": NO_CBN,
    "no_cbn+cosine": NO_CBN + ["optim.lr_schedule=cosine"],
    "embed2": NO_CBN + ["model.c_embed_layers=2"],
    "C_it1": C_IT1,
    "C_it1+c_norm=none": C_IT1 + ["model.c_norm=none"],
    "C_it1+rpgan": C_IT1 + ["loss.kind=rpgan"],
    "C_it1+lr0.005": C_IT1 + ["optim.G_lr=0.005", "optim.D_lr=0.005"],
    "C_it1+matching2": C_IT1 + ["loss.matching_aware=2.0"],
    "C_it1+embed2": C_IT1 + ["model.c_embed_layers=2"],
    "stylegan2": ROLL + ["model.arch=stylegan2"],
    "C_it1+stylegan2+map_lr1": ROLL + ["contrastive.C_it=1.0", "model.arch=stylegan2", "model.mapping_lr_mul=1"],
}
CRITERIA = ("color", "position", "relation", "shape")


def run_dir_of(out: str, variant: str, seed: int) -> str:
    return os.path.join(out, f"{variant}-s{seed}")


def command(variant: str, seed: int, out: str, shards: str, kimg, threads: int = 1) -> list:
    sets = [f"seed={seed}", f"dist.num_threads={threads}", f"data.shards={shards}",
            "schedule.network_snapshot_ticks=1000"]  # a checkpoint at the end only: the curves need none
    if kimg is not None:
        sets.append(f"schedule.total_kimg={kimg}")
    argv = [sys.executable, os.path.join(ROOT, "launchers", "submit.py"), "--local", "--config", RECIPE,
            "--outdir", run_dir_of(out, variant, seed)]
    for item in sets + VARIANTS[variant]:
        argv += ["--set", item]
    return argv


def train(variants, seeds, out, shards, parallel, kimg, threads=1) -> None:
    sys.path.insert(0, ROOT)
    from textgan.config import load_config
    from textgan.launch.prepare import ensure_shards

    ensure_shards(load_config(RECIPE, [f"data.shards={shards}"]))  # once, before runs that would all build them
    pending = [(v, s) for s in seeds for v in variants]
    running = []
    while pending or running:
        while pending and len(running) < parallel:
            variant, seed = pending.pop(0)
            os.makedirs(run_dir_of(out, variant, seed), exist_ok=True)
            log = open(run_dir_of(out, variant, seed) + ".log", "w")
            print(f"start {variant} seed {seed}", flush=True)
            process = subprocess.Popen(command(variant, seed, out, shards, kimg, threads), stdout=log,
                                       stderr=subprocess.STDOUT, cwd=ROOT)
            running.append((variant, seed, process, log))
        time.sleep(5)
        for item in list(running):
            variant, seed, proc, log = item
            if proc.poll() is not None:
                log.close()
                running.remove(item)
                print(f"done  {variant} seed {seed}: exit {proc.returncode}", flush=True)


def read_run(path: str):
    """(snapshots [(kimg, results)], median sec/kimg) of the newest run inside a --outdir, or None."""
    metric_files = sorted(glob.glob(os.path.join(path, "*", "metric-shapes_alignment.jsonl")))
    if not metric_files:
        return None
    run = os.path.dirname(metric_files[-1])
    by_kimg = {}
    for line in open(metric_files[-1]):
        entry = json.loads(line)
        by_kimg[entry["kimg"]] = entry["results"]
    speeds = []
    if os.path.exists(os.path.join(run, "stats.jsonl")):
        for line in open(os.path.join(run, "stats.jsonl")):
            stat = json.loads(line).get("Timing/sec_per_kimg")
            if stat:
                speeds.append(stat["mean"])
    return sorted(by_kimg.items()), (statistics.median(speeds) if speeds else float("nan"))


def report(out: str) -> str:
    def order(path):  # the variants in VARIANTS order, then by seed
        variant, _, seed = os.path.basename(path).rpartition("-s")
        return (list(VARIANTS).index(variant) if variant in VARIANTS else len(VARIANTS), variant,
                int(seed) if seed.isdigit() else 0)

    runs = {}
    for path in sorted(glob.glob(os.path.join(out, "*-s*")), key=order):
        if os.path.isdir(path):
            found = read_run(path)
            if found:
                runs[os.path.basename(path)] = found
    if not runs:
        return f"no finished snapshots under {out}"
    kimgs = sorted({k for snaps, _ in runs.values() for k, _ in snaps})
    lines = []
    for criterion in CRITERIA:
        lines += [f"{criterion} (G_ema, 256 captions) at kimg:", "",
                  "| run | s/kimg | " + " | ".join(f"{k:g}" for k in kimgs) + " |",
                  "|---|---|" + "---|" * len(kimgs)]
        for name, (snaps, speed) in runs.items():
            values = dict(snaps)
            cells = [f"{values[k][criterion]:.3f}" if k in values and values[k].get(criterion) is not None else ""
                     for k in kimgs]
            lines.append(f"| {name} | {speed:.1f} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["last snapshot by kind of caption (colour / position or relation / shape):", "",
              "| run | kimg | one object | two objects |", "|---|---|---|---|"]
    for name, (snaps, _) in runs.items():
        kimg, last = snaps[-1]
        if "one_object" in last:
            one, two = last["one_object"], last["two_objects"]
            lines.append(f"| {name} | {kimg:g} | {one['color']:.3f} / {one['position']:.3f} / {one['shape']:.3f} | "
                         f"{two['color']:.3f} / {two['relation']:.3f} / {two['shape']:.3f} |")
    return "\n".join(lines)


def probe(shards: str, captions_limit: int = 12000, seed: int = 0) -> str:
    """Held-out accuracy of classifiers that read an object's colour from the whitened caption embedding."""
    sys.path.insert(0, ROOT)
    import torch

    from textgan.config import load_config
    from textgan.data.loading.samples import SkipCounter, read_shard
    from textgan.data.manifest import load_manifest
    from textgan.data.sources.shapes import PALETTE
    from textgan.metrics.alignment import parse_caption
    from textgan.nets.condition_norm import ConditionNorm
    from textgan.train.text import embed_texts, load_text_tower

    cfg = load_config(RECIPE, [f"data.shards={shards}"])
    tower = load_text_tower(cfg.text_encoder, torch.device("cpu"))
    captions = []  # every caption of the first samples, from the shards' json records (no image decoding)
    for shard in load_manifest(shards)["shards"]:
        for raw in read_shard(os.path.join(shards, shard["name"]), shard["samples"], SkipCounter()):
            captions += json.loads(raw["json"])["captions"]
        if len(captions) >= captions_limit:
            break
    captions = captions[:captions_limit]
    with torch.no_grad():
        c = torch.cat([embed_texts(tower, captions[i:i + 500]) for i in range(0, len(captions), 500)])
    norm = ConditionNorm(c.shape[1], "whiten")
    norm.fit(c[:4096])  # as many captions as a run fits it from
    x = norm(c).float()
    names = list(PALETTE)
    parsed = [parse_caption(text) for text in captions]
    two = torch.tensor([p["relation"] is not None for p in parsed])
    first = torch.tensor([names.index(p["objects"][0]["color"]) for p in parsed])
    second = torch.tensor([names.index(p["objects"][-1]["color"]) for p in parsed])

    def accuracy(features, labels, hidden):
        torch.manual_seed(seed)
        n = len(features)
        train = int(0.8 * n)
        layers = [torch.nn.Linear(features.shape[1], hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, len(names))] \
            if hidden else [torch.nn.Linear(features.shape[1], len(names))]
        net = torch.nn.Sequential(*layers)
        opt = torch.optim.Adam(net.parameters(), 3e-3)
        for _ in range(1500):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(features[:train]), labels[:train]).backward()
            opt.step()
        with torch.no_grad():
            return (net(features[train:]).argmax(1) == labels[train:]).float().mean().item()

    rows = [("one object: its colour", ~two, first), ("two objects: the first named object's colour", two, first),
            ("two objects: the second named object's colour", two, second)]
    lines = [f"{len(captions)} training captions, {int(two.sum())} with two objects; held-out 20%:", "",
             "| what is read | linear | MLP (512 hidden) |", "|---|---|---|"]
    for label, mask, labels in rows:
        lines.append(f"| {label} | {accuracy(x[mask], labels[mask], 0):.3f} | {accuracy(x[mask], labels[mask], 512):.3f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", default="recipe", help=f"comma-separated, of: {', '.join(VARIANTS)}")
    parser.add_argument("--seeds", default="0", help="comma-separated seeds")
    parser.add_argument("--out", default=os.path.join(ROOT, "runs", "demo-learning"), help="where the runs go")
    parser.add_argument("--shards", default=os.path.join(ROOT, "data", "shapes32"),
                        help="the demo shards (the recipe builds them there on first use)")
    parser.add_argument("--parallel", type=int, default=2, help="runs at a time")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run (2 for one run alone)")
    parser.add_argument("--kimg", type=float, default=None, help="schedule.total_kimg (default: the recipe's)")
    parser.add_argument("--report", action="store_true", help="only print the tables of the runs in --out")
    parser.add_argument("--probe", action="store_true", help="only print what the caption embedding holds")
    args = parser.parse_args(argv)
    if args.probe:
        print(probe(args.shards))
        return 0
    if not args.report:
        variants = args.variants.split(",")
        unknown = [v for v in variants if v not in VARIANTS]
        if unknown:
            parser.error(f"unknown variant(s) {unknown}; choose from {', '.join(VARIANTS)}")
        train(variants, [int(s) for s in args.seeds.split(",")], args.out, args.shards, args.parallel, args.kimg,
              args.threads)
    print(report(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
