"""Command line of the shard builder: `python shards/build.py ...` and `textgan shards ...`.

    coco   --root COCO_DIR --split train|val --outdir OUT [--resolution 256] ...
    shapes --outdir OUT [--n 20000] [--resolution 64] [--coco-layout DIR] ...
    verify OUT        re-check OUT's shards against its manifest (exit 1 on any problem)
    merge OUT         combine the part manifests of a --num-parts build into manifest.json
    index DIR_OR_PATTERN [--resolution R] [--scan]
                      a manifest for img2dataset-style shards (jpg + txt + json, e.g. DIR/{00000..00099}.tar)
                      so that training reads them as it reads ours; the tars are not rewritten

Exit codes: 0 done, 1 build failed while writing (disk full, ...) or verify found problems,
2 bad invocation (nothing written), 130 interrupted (finished shards kept; rerun resumes).
"""

import argparse
import os
import sys
from collections import Counter

from textgan.data import format as fmt
from textgan.data.building.outdir import remove_stale_tmp
from textgan.data.building.run import WorkerCrashed
from textgan.data.building.builder import BuildConfig, BuildWriteError, build, default_workers
from textgan.errors import UsageError
from textgan.outdir_option import add_outdir_option
from textgan.ranges import RESOLUTIONS, resolutions_text


def _int_at_least(minimum: int, what: str):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} must be an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{what} must be >= {minimum}, got {value}")
        return value
    return parse


def _resolution(text: str) -> int:
    """Only sides that training accepts: a shard set at any other side could be built but never trained on."""
    try:
        value = int(text)
    except ValueError:
        value = None
    if value not in RESOLUTIONS:
        raise argparse.ArgumentTypeError(
            f"resolution must be one of {resolutions_text()} (a power of two that the networks can be built for), "
            f"got {text!r}")
    return value


def _quality(text: str) -> int:
    value = _int_at_least(1, "JPEG quality")(text)
    if value > 100:
        raise argparse.ArgumentTypeError(f"JPEG quality must be in 1..100, got {value}")
    return value


def _common_options(default_resolution: int) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("output")
    add_outdir_option(g, "output directory (shards + manifest.json)", dest="out", old=("--out",), required=True,
                      metavar="OUT")
    g.add_argument("--resolution", type=_resolution, default=default_resolution,
                   help=f"side of the stored square images in pixels, one of {resolutions_text()} (default {default_resolution})")
    g.add_argument("--crop", choices=fmt.CROP_MODES, default="center",
                   help="center: crop the central square; pad: keep the whole image, pad with black")
    g.add_argument("--quality", type=_quality, default=95, help="JPEG quality 1-100 (default 95)")
    g.add_argument("--samples-per-shard", type=_int_at_least(1, "samples per shard"), default=1000)
    g.add_argument("--seed", type=_int_at_least(0, "seed"), default=0,
                   help="sample order and shard assignment (and the shapes data) derive from it")
    g.add_argument("--limit", type=_int_at_least(1, "limit"), help="build only the first N images of the shuffled order")
    g.add_argument("--workers", type=_int_at_least(1, "workers"), default=default_workers(),
                   help=f"image worker processes (default {default_workers()})")
    g.add_argument("--num-parts", type=_int_at_least(1, "num-parts"), default=1,
                   help="split the build into K parts (e.g. a Slurm array job), then `merge OUT`")
    g.add_argument("--part", type=_int_at_least(0, "part"), default=0, help="which part to build, 0..K-1")
    g.add_argument("--overwrite", action="store_true", help="rebuild an OUT that was built with other settings (deletes only the builder's own files; "
                        "with --num-parts and unchanged settings only this part's)")
    g.add_argument("--verify", action="store_true", help="verify the existing OUT against its manifest instead of building")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    g.add_argument("--no-draft", action="store_true",
                   help="decode JPEGs at full size before resizing (slower; default uses libjpeg's draft scaling)")
    f = p.add_argument_group("precomputed features (stored as float16 .npy)")
    f.add_argument("--clip-model", help="open_clip model name, e.g. ViT-B-32: CLIP image + per-caption text embeddings")
    f.add_argument("--clip-pretrained", help="open_clip pretrained tag or a local weights file")
    f.add_argument("--clip-random-weights", action="store_true", help="random CLIP weights (tests and demos only)")
    f.add_argument("--perceptual", choices=("resnet18", "resnet50", "vgg16"), help="ResNet/VGG pooled feature vector")
    f.add_argument("--perceptual-weights", help="local torchvision state-dict file of the --perceptual net")
    f.add_argument("--perceptual-random-weights", action="store_true", help="random perceptual weights (tests only)")
    f.add_argument("--perceptual-size", type=_int_at_least(32, "perceptual input size"), default=224,
                   help="short side the --perceptual net sees (default 224, ImageNet's scale); training must use the "
                        "same contrastive.perceptual_size to read these features")
    f.add_argument("--feature-batch-size", type=_int_at_least(1, "feature batch size"), default=64)
    return p


def make_parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="{coco,shapes,verify,merge,index}")
    sub.required = True
    coco = sub.add_parser("coco", parents=[_common_options(256)], help="COCO 2014 captions -> shards")
    coco.add_argument("--root", required=True, help="COCO directory holding annotations/ and train2014/ or val2014/")
    coco.add_argument("--split", required=True, help="train or val")
    coco.add_argument("--overlap-reference", action="append", default=[], metavar="PATH",
                      help="also report images that appear in PATH (COCO root, image folder or annotation JSON); "
                           "for --split val the same root's train split is checked by default")
    coco.add_argument("--exclude-overlap", action="store_true", help="drop the overlapping images (listed as skipped)")
    shapes = sub.add_parser("shapes", parents=[_common_options(64)], help="built-in captioned shapes -> shards")
    shapes.add_argument("--n", type=_int_at_least(1, "n"), default=20000, help="number of images (default 20000)")
    shapes.add_argument("--split", default="train", help="train (default) or val")
    shapes.add_argument("--coco-layout", metavar="DIR", help="also write the data as a COCO-2014-style folder")
    for name, help_ in (("verify", "re-check OUT's shards against its manifest"),
                        ("merge", "combine OUT's part manifests into manifest.json")):
        s = sub.add_parser(name, help=help_)
        s.add_argument("out", metavar="OUT")
    index = sub.add_parser("index", help="a manifest for existing img2dataset-style shards (jpg/png/webp + txt + json)",
                           description="Writes manifest.json next to WebDataset tars written by img2dataset (or any "
                                       "tool writing KEY.jpg + KEY.txt + KEY.json), so training, evaluation and verify "
                                       "read them. Counts come from the parquet or _stats.json sidecars, or from a "
                                       "scan of the tar; truncated tars are scanned and reported.")
    index.add_argument("source", metavar="DIR_OR_PATTERN",
                       help="the shards' directory, a brace pattern (DIR/{00000..00099}.tar) or a glob (DIR/*.tar)")
    index.add_argument("--resolution", type=_resolution,
                       help="side to train at; images of another size are center-cropped and resized when loaded "
                            "(default: the first image's side, when it is square)")
    index.add_argument("--split", default="train", choices=fmt.SPLITS, help="train (default) or val")
    index.add_argument("--scan", action="store_true",
                       help="count every tar's samples by reading its headers, and report sidecars that disagree")
    return parser


def _make_features(args):
    """A factory for the FeatureExtractor the flags ask for (None when none)."""
    if args.clip_model is None and (args.clip_pretrained or args.clip_random_weights):
        raise UsageError("--clip-pretrained/--clip-random-weights need --clip-model NAME.")
    if args.perceptual is None and (args.perceptual_weights or args.perceptual_random_weights
                                    or args.perceptual_size != 224):
        raise UsageError("--perceptual-weights/--perceptual-random-weights/--perceptual-size need --perceptual ARCH.")
    if args.clip_model is None and args.perceptual is None:
        return None

    def make():
        import torch

        from textgan.data.features import FeatureExtractor
        from textgan.encoders import load_clip, load_perceptual

        # Random weights (tests, demos) come from a fixed seed, so that a resumed build's
        # features match those of the shards written before the interruption.
        with torch.random.fork_rng():
            torch.manual_seed(0)
            clip = load_clip(args.clip_model, args.clip_pretrained, allow_random=args.clip_random_weights) \
                if args.clip_model else None
            perceptual = load_perceptual(args.perceptual, args.perceptual_weights,
                                         allow_random=args.perceptual_random_weights,
                                         input_size=args.perceptual_size) if args.perceptual else None
        return FeatureExtractor(clip, perceptual, batch_size=args.feature_batch_size)
    return make


def config_from_args(args) -> BuildConfig:
    if args.part >= args.num_parts:
        raise UsageError(f"--part {args.part} is not in 0..{args.num_parts - 1} (parts count from 0).")
    cfg = BuildConfig(
        source=args.command, out=args.out, split=args.split, resolution=args.resolution, crop=args.crop,
        quality=args.quality, draft=not args.no_draft, samples_per_shard=args.samples_per_shard,
        workers=args.workers, seed=args.seed, limit=args.limit, num_parts=args.num_parts, part=args.part,
        overwrite=args.overwrite, progress=not args.no_progress, make_features=_make_features(args))
    if args.command == "coco":
        cfg.root, cfg.overlap_references, cfg.exclude_overlap = args.root, args.overlap_reference, args.exclude_overlap
    else:
        cfg.n, cfg.coco_layout = args.n, args.coco_layout
    return cfg


def print_summary(result, cfg: BuildConfig, prog: str) -> None:
    m = result.manifest
    out = cfg.out
    if result.state == "complete":
        print(f"{out} is already complete ({os.path.basename(result.manifest_path)}); nothing to do.")
    print(f"samples written: {m['samples']} in {len(m['shards'])} shards "
          f"({result.shards_written} written now, {result.shards_reused} from an earlier run)")
    reasons = Counter(e["reason"] for e in m["skipped"])
    detail = ", ".join(f"{r}: {n}" for r, n in sorted(reasons.items()))
    print(f"skipped: {len(m['skipped'])}" + (f" ({detail})" if detail else ""))
    detail = ", ".join(f"{r}: {n}" for r, n in m["captions_dropped_by_reason"].items())
    print(f"captions dropped: {m['captions_dropped']}" + (f" ({detail})" if detail else ""))
    ov = m["overlap"]
    if ov["checked_against"]:
        n = len(set(ov["ids"]) | set(ov["bytes"]))
        print(f"overlap with {', '.join(ov['checked_against'])}: {n} images ({len(ov['ids'])} by id, "
              f"{len(ov['bytes'])} by bytes){', excluded' if ov['excluded'] and n else ''}")
    else:
        print("overlap: not checked (no reference split)")
    print(f"output: {os.path.abspath(result.manifest_path)}")
    if cfg.num_parts > 1:
        print(f"part {cfg.part} of {cfg.num_parts} done; when all parts are done: {prog} merge {out}")
    else:
        print(f"verify with: {prog} verify {out}")


def _verify(out: str) -> int:
    from textgan.data.building.verify import verify_shards

    report = verify_shards(out)
    for problem in report.problems:
        print(f"PROBLEM: {problem}", file=sys.stderr)
    status = "OK" if report.ok else f"{len(report.problems)} problem(s)"
    print(f"verified {report.shards} shards, {report.samples} samples in {out}: {status}")
    return 0 if report.ok else 1


def _merge(out: str, prog: str) -> int:
    from textgan.data.building.merge import merge_parts

    m = merge_parts(out)
    print(f"merged {len(m['shards'])} shards, {m['samples']} samples into {os.path.join(out, fmt.MANIFEST_NAME)}; "
          f"verify with: {prog} verify {out}")
    return 0


def _index(args) -> int:
    from textgan.data.building.index import describe, index_shards

    result = index_shards(args.source, resolution=args.resolution, split=args.split, scan=args.scan)
    print(describe(result))
    return 0


def main(argv=None, prog: str = "shards/build.py") -> int:
    parser = make_parser(prog)
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse: --help (0) or a usage error (2)
        return int(e.code or 0)
    cfg = None
    try:
        if args.command == "verify" or getattr(args, "verify", False):
            return _verify(args.out)
        if args.command == "merge":
            return _merge(args.out, prog)
        if args.command == "index":
            return _index(args)
        cfg = config_from_args(args)
        result = build(cfg)
        print_summary(result, cfg, prog)
        return 0
    except UsageError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return e.exit_code
    except (BuildWriteError, WorkerCrashed) as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        if cfg is not None and os.path.isdir(cfg.out):
            remove_stale_tmp(cfg.out, cfg.part, cfg.num_parts)
        print(f"{prog}: interrupted. Finished shards are kept; rerun the same command to resume.", file=sys.stderr)
        return 130
