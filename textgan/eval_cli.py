"""`textgan eval`: measure a trained generator offline with the metrics of textgan.metrics.

    textgan eval runs/00003-demo --metrics fid10k,kid10k,clip_score --reference shards/coco64-val
    textgan eval runs/00003-demo/checkpoints/000048 --metrics fid1k_train --num-samples 1000
    textgan eval demo-G.pt --metrics diversity,shapes_alignment
    textgan eval runs/00003-demo --metrics shapes_alignment --search ga --search-budget 1000   # searched images

--search ALGORITHM measures, instead of plain samples, the best image of a `textgan search` per caption and
latent (textgan.infer.population_search.searched_generator): the same protocol, captions and counts, so the
numbers compare with the plain ones. Its results go to RUN/searched-ALGORITHM-BUDGET/ (beside search.json's
settings), never into the run's own metric files.

RUN_OR_CHECKPOINT: a run directory (its newest complete checkpoint), its checkpoints/ directory, one
checkpoint directory, or a file written by `textgan export`. G_ema is loaded without DeepSpeed. Settings
not given on the command line come from the run's `metrics:` config section when it has one, else from
MetricsConfig's defaults. Results are printed as a table and appended to DIR/metric-NAME.jsonl (DIR: the
run directory, the exported file's directory, or --outdir).
"""

import argparse
import dataclasses
import os
import sys

from textgan.errors import UsageError
from textgan.metrics import MetricsConfig, parse_metrics, validate_metrics_config  # no torch (see textgan.metrics)
from textgan.outdir_option import add_outdir_option

# command-line flag -> MetricsConfig field
_OVERRIDES = {"reference": "reference", "train_shards": "train_shards", "num_samples": "num_samples",
              "feature_extractor": "feature_extractor", "feature_extractor_weights": "feature_extractor_weights",
              "clip_model": "clip_model", "clip_pretrained": "clip_pretrained", "cache_dir": "cache_dir",
              "batch_size": "batch_size", "caption_seed": "caption_seed",
              "diversity_captions": "diversity_captions", "diversity_samples": "diversity_samples"}


def make_parser(prog: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description="Measure FID/KID/IS, CLIP score, diversity or shapes "
                                "alignment of a run's G_ema; append the results to metric-NAME.jsonl.")
    p.add_argument("run", metavar="RUN_OR_CHECKPOINT", help="run dir, checkpoints/ dir, one checkpoint dir, or an "
                                                            "exported generator file")
    p.add_argument("--metrics", help="comma-separated names, e.g. fid10k,kid10k,clip_score,diversity "
                                     "(default: the run's metrics.metrics)")
    p.add_argument("--reference", metavar="SHARDS", help="val reference shards (for metrics without _train)")
    p.add_argument("--train-shards", metavar="SHARDS", help="training shards (leakage check, *_train metrics); "
                                                            "default: the run's data.shards")
    p.add_argument("--num-samples", type=int, metavar="N", help="samples of metrics whose name has no count")
    p.add_argument("--feature-extractor", help="torch-fidelity extractor name (default inception-v3-compat)")
    p.add_argument("--feature-extractor-weights", metavar="FILE", help="its local weights file")
    p.add_argument("--clip-model", help="open_clip model for clip_score")
    p.add_argument("--clip-pretrained", help="its weights: a local file or a tag in the HF cache")
    p.add_argument("--cache-dir", help="where real-image statistics are cached")
    p.add_argument("--diversity-captions", type=int, metavar="N", help="diversity: captions to sample")
    p.add_argument("--diversity-samples", type=int, metavar="S", help="diversity: latents per caption (>= 2)")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--caption-seed", type=int)
    p.add_argument("--allow-overlap", action="store_true", help="measure even if the reference overlaps training")
    add_outdir_option(p, "where metric-NAME.jsonl is appended (default: see above)", dest="out_dir", old=("--out-dir",))
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda if available)")
    g = p.add_argument_group("searched images (see `textgan search`)")
    g.add_argument("--search", metavar="ALGORITHM", help="measure the best image of a search per caption: ga, cmaes "
                                                         "or random (best-of-N)")
    g.add_argument("--search-budget", type=int, default=1000, metavar="N", help="evaluations per image (default 1000)")
    g.add_argument("--search-population", type=int, default=100, metavar="P", help="population (default 100)")
    g.add_argument("--search-scorer", default="auto", metavar="SPEC", help="as textgan search --scorer (default auto)")
    return p


def load_searched(args, device):
    """load_for_eval's (G, cfg, info, default_out) for --search, G a SearchedGenerator: every image the best of a
    search for its caption; and the settings record written beside its results."""
    from textgan.infer.model import load_model
    from textgan.infer.population_search.scorers import build_scorer
    from textgan.infer.population_search.searched_generator import SearchedGenerator
    from textgan.infer.population_search.settings import ALGORITHMS, SearchSettings

    if args.search not in ALGORITHMS:
        raise UsageError(f"--search {args.search!r}: choose one of {', '.join(ALGORITHMS)}")
    settings = SearchSettings(algorithm=args.search, budget=args.search_budget, population=min(
        args.search_population, args.search_budget), scorer=args.search_scorer, patience=0, keep=1,
        baseline=False).checked()
    model = load_model(args.run, device=device)
    scorer, spec = build_scorer(settings.scorer, model)
    settings.scorer = spec
    settings.check_scorer(spec)
    snapshot = os.path.dirname(model.weights_file) if model.kind == "checkpoint" else model.weights_file
    info = {"kimg": model.kimg, "tick": model.tick, "snapshot": snapshot}
    record = {"model": os.path.abspath(args.run), "sha256": model.sha256, "settings": settings.to_dict()}
    return SearchedGenerator(model, settings, scorer), model.cfg, info, model.run_dir, record


def load_for_eval(path: str, device):
    if os.path.isfile(path):
        from textgan.export import load_generator, read_export

        data = read_export(path)
        G, cfg = load_generator(path, device=device)
        info = {"kimg": data.get("kimg"), "tick": data.get("tick"), "snapshot": os.path.abspath(path)}
        return G, cfg, info, os.path.dirname(os.path.abspath(path))
    from textgan.export import load_generator_from_checkpoint

    G, cfg, info = load_generator_from_checkpoint(path, device=device)
    return G, cfg, {"kimg": info["kimg"], "tick": info["tick"], "snapshot": info["checkpoint"]}, info["run_dir"]


def write_search_record(out_dir: str, record: dict) -> None:
    import json

    from textgan.atomic import write_text_atomic

    write_text_atomic(os.path.join(out_dir, "search.json"), json.dumps(record, indent=1) + "\n")


def metrics_config(args, run_cfg) -> MetricsConfig:
    section = getattr(run_cfg, "metrics", None)  # present once TrainConfig has a metrics section
    if section is not None:
        from omegaconf import OmegaConf

        base = MetricsConfig(**OmegaConf.to_container(section, resolve=True))
    else:
        base = MetricsConfig()
    changes = {field: getattr(args, flag) for flag, field in _OVERRIDES.items() if getattr(args, flag) is not None}
    if args.metrics is not None:
        changes["metrics"] = [s.name for s in parse_metrics(args.metrics)]
    if args.allow_overlap:
        changes["allow_overlap"] = True
    if not changes.get("train_shards", base.train_shards):
        shards = str(run_cfg.data.shards)
        changes["train_shards"] = shards if os.path.isfile(os.path.join(shards, "manifest.json")) else None
    cfg = dataclasses.replace(base, **changes)
    if not cfg.metrics:
        raise UsageError("no metrics to run: pass --metrics (e.g. --metrics fid10k,clip_score)")
    validate_metrics_config(cfg)
    return cfg


def _details(results: dict, prefix: str = "") -> list:
    """"k=v" for each result; a nested dict (shapes_alignment's one_object, two_objects) as "k.sub=v"."""
    out = []
    for k, v in results.items():
        if isinstance(v, dict):
            out += _details(v, f"{prefix}{k}.")
        else:
            out.append(f"{prefix}{k}={v:.4g}" if isinstance(v, float) else f"{prefix}{k}={v}")
    return out


def format_table(report) -> str:
    rows = [("metric", "value", "details", "seconds", "img/s")]
    for name, r in report.results.items():
        details = ", ".join(_details(r.results))
        value = "n/a" if r.value is None else f"{r.value:.4f}"
        rows.append((name, value, details, f"{r.seconds:.1f}", f"{r.images_per_sec:.1f}"))
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)


def main(argv=None, prog: str = "textgan eval") -> int:
    try:
        args = make_parser(prog).parse_args(argv)
    except SystemExit as e:  # argparse: --help (0) or a usage error (2)
        return int(e.code or 0)
    try:
        # torch and the evaluator load only now: parsing (and --help) stays instant
        from textgan.metrics import MetricEvaluator
        from textgan.runtime import Runtime
        from textgan.train.text import TextConditioner

        runtime = Runtime.from_env(device=args.device)
        if runtime.world_size > 1:
            runtime.init_distributed()
        if args.search is not None:  # the model is loaded once, as textgan search loads it
            G, run_cfg, info, default_out, record = load_searched(args, runtime.device)
            encode = G.encode
        else:
            G, run_cfg, info, default_out = load_for_eval(args.run, runtime.device)
            encode = TextConditioner(run_cfg.text_encoder, {}, runtime.device).encode
        cfg = metrics_config(args, run_cfg)
        out_dir = args.out_dir or default_out
        if not os.path.isdir(out_dir):
            raise UsageError(f"--outdir {out_dir} is not a directory")
        if args.search is not None:
            out_dir = os.path.join(out_dir, f"searched-{args.search}-{args.search_budget}")
            os.makedirs(out_dir, exist_ok=True)
            write_search_record(out_dir, record)
        evaluator = MetricEvaluator(cfg, runtime=runtime, run_dir=out_dir)
        report = evaluator.run(G, encode, **info)
    except UsageError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return e.exit_code
    if runtime.rank == 0:
        print(f"{args.run} (kimg {info['kimg']}, snapshot {info['snapshot']})")
        print(format_table(report))
        first = next(iter(report.results.values()))
        print(f"reference: {first.protocol['reference']['shards']}  leakage: {first.protocol['leakage']}")
        print(f"appended to {os.path.join(out_dir, 'metric-NAME.jsonl')}; total {report.seconds:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
