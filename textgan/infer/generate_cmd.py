"""`textgan generate MODEL --prompt TEXT [--prompt TEXT ...] --seeds 0-7 --grid`: images of a trained model.

    textgan generate runs/00000-demo --prompt "a red circle above a blue square" --seeds 0-7 --grid
    textgan generate demo-G.pt --prompts prompts.txt --seeds 0,5,9 --outdir samples
    textgan generate runs/00001-coco64 --prompt "a bus on a street" --trunc 0.7 --trunc-cutoff 8

Each call writes a new numbered folder OUTDIR/{id:05d}-{desc} (see textgan.infer.output), so nothing is
ever overwritten. Every input is checked before anything is written: a bad one exits 2 naming the fix.
The parser imports no torch (help is instant); the Python API is textgan.infer.
"""

import argparse
import os
import sys

from textgan.errors import UsageError
from textgan.infer.prompts import check_prompts, read_prompt_file
from textgan.infer.seeds import parse_seeds
from textgan.outdir_option import add_outdir_option

DEFAULT_OUTDIR = "generated"


def make_parser(prog: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog, description="Generate images of prompts with a trained G_ema: one PNG per (prompt, seed), "
                               "a captioned grid (--grid) and generation.json, in a new numbered folder.")
    p.add_argument("model", metavar="MODEL", help="a run directory (its newest complete checkpoint), a checkpoint "
                                                  "directory (e.g. RUN/best/NAME) or a file from `textgan export`")
    prompts = p.add_mutually_exclusive_group()
    prompts.add_argument("--prompt", action="append", metavar="TEXT", help="a prompt (repeat for more)")
    prompts.add_argument("--prompts", metavar="FILE", help="a text file: one prompt per line (blank lines and "
                                                           "# comments skipped)")
    p.add_argument("--seeds", default="0-3", help="seeds, e.g. 0-15, 1,5,9 or 0-3,10 (default: 0-3)")
    p.add_argument("--trunc", type=float, default=1.0, metavar="PSI",
                   help="truncation psi in [0, 1] (default 1: none); StyleGAN2 only")
    p.add_argument("--trunc-cutoff", type=int, default=None, metavar="N",
                   help="truncate only the first N ws (default: all)")
    p.add_argument("--centre", choices=("conditional", "global"), default="conditional",
                   help="truncate toward the prompt's average w (default) or the average over all captions")
    add_outdir_option(p, f"where the numbered result folder is created (default: {DEFAULT_OUTDIR})",
                      default=DEFAULT_OUTDIR)
    p.add_argument("--grid", action="store_true", help="also write grid.png: prompts as rows, seeds as columns")
    p.add_argument("--batch", type=int, default=8, metavar="N", help="images per step (default 8; the pixels do "
                                                                     "not depend on it)")
    p.add_argument("--device", default="auto", help="auto (cuda when available), cpu, cuda or cuda:N")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def read_inputs(args):
    """(prompts, seeds) of the command line; UsageError before anything is loaded."""
    seeds = parse_seeds(args.seeds)
    prompts = read_prompt_file(args.prompts) if args.prompts is not None else check_prompts(args.prompt or [])
    if args.batch < 1:
        raise UsageError(f"--batch {args.batch}: must be at least 1")
    if not 0.0 <= args.trunc <= 1.0:
        raise UsageError(f"--trunc {args.trunc}: psi must be within [0, 1] (1: no truncation, 0: the centre itself)")
    return prompts, seeds


def run(args, prompts, seeds, command) -> tuple:
    """Load, check, create the folder, write every image, the grid and generation.json; returns the paths of
    the folder, generation.json and the grid (None without --grid)."""
    from tqdm import tqdm

    from textgan.infer.generation import check_truncation, iter_generate
    from textgan.infer.model import load_model
    from textgan.infer.output import create_folder, generation_record, image_name, save_grid_of, write_record
    from textgan.train.grids import save_png

    model = load_model(args.model, device=args.device)
    check_truncation(model, args.trunc, args.trunc_cutoff, args.centre)
    folder = create_folder(args.outdir, model)  # only now: a bad input has created nothing
    images, samples = [], []
    steps = iter_generate(model, prompts, seeds, args.trunc, args.trunc_cutoff, args.centre, args.batch)
    with tqdm(total=len(prompts) * len(seeds), unit="img", desc="generate", file=sys.stderr,
              disable=args.no_progress) as bar:
        for step in steps:
            for sample in step:
                name = image_name(sample.prompt_index, sample.prompt, sample.seed)
                save_png(os.path.join(folder, name), sample.image)
                images.append({"prompt_index": sample.prompt_index, "prompt": sample.prompt, "seed": sample.seed,
                               "path": name})
            if args.grid:
                samples += step
            bar.update(len(step))
    grid = save_grid_of(folder, samples, ncol=len(seeds)) if args.grid else None
    record = write_record(folder, generation_record(model, prompts, seeds, args.trunc, args.trunc_cutoff,
                                                    args.centre, images, grid, command=command))
    return folder, record, grid and os.path.join(folder, grid)


def main(argv=None, prog: str = "textgan generate") -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = make_parser(prog).parse_args(argv)
    except SystemExit as e:  # argparse: --help (0) or a usage error (2)
        return int(e.code or 0)
    try:
        prompts, seeds = read_inputs(args)
        folder, record, grid = run(args, prompts, seeds, command=prog.split() + argv)
    except UsageError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return e.exit_code
    count = len(prompts) * len(seeds)
    print(f"{count} image(s) of {len(prompts)} prompt(s) x {len(seeds)} seed(s) written to {folder}")
    if grid:
        print(f"  grid: {grid}")
    print(f"  record: {record}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
