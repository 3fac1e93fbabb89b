"""`textgan search MODEL --prompt TEXT ...`: the best images for a prompt, by a population search over the
generator's latents, always shown against best-of-N at the same number of evaluations.

    textgan search runs/00000-demo --prompt "a large yellow triangle in the center" --budget 1000
    textgan search runs/00000-demo --prompts val.txt --algorithm cmaes --preset 200x500 --keep 8
    textgan search runs/00001-coco64 --prompts captions.txt --scorer augclip --verifier clip \\
        --verifier-clip-model ViT-L-14 --verifier-clip-weights /weights/vitl14.bin
    textgan search runs/00001-coco64 --prompts captions.txt --array 16 --gpus-per-node 1 --time 4:00:00
    textgan search collect searches/00003-search-coco64     # after an array's tasks have finished

Every input is checked before anything is written (exit 2 naming the fix). Without --array the search runs
here and the folder is complete when the command returns; with --array N the prompts are split over N Slurm
array tasks (--local: N jobs on this machine) through the same launcher as training, each task writes its
part, and `collect` merges them (a --local array is collected at once).
"""

import argparse
import os
import sys

from textgan.errors import UsageError
from textgan.infer.prompts import check_prompts, read_prompt_file
from textgan.infer.population_search.settings import ALGORITHMS, PRESETS, SCORERS, SPACES, VERIFIERS, SearchSettings
from textgan.outdir_option import add_outdir_option

DEFAULT_OUTDIR = "searches"


def make_parser(prog: str) -> argparse.ArgumentParser:
    from textgan.launch.slurm import add_slurm_arguments

    d = SearchSettings()
    p = argparse.ArgumentParser(
        prog=prog, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Search a trained generator's latents for the images that best match each prompt (genetic "
                    "algorithm, CMA-ES, or random best-of-N), with a held-out verifier and best-of-N at equal "
                    "evaluations for comparison. Writes the kept images, grid.png, search.json and "
                    "score_vs_evaluations.png in a new numbered folder.",
        epilog="scorers:\n" + "\n".join(f"  {k:12} {v}" for k, v in SCORERS.items()) +
               "\n  a weighted sum: contrastive=1,d=0.5 (each part standardized on the prompt's first batch)"
               f"\nresearch presets (population x generations): {', '.join(PRESETS)}"
               f"\n\n{prog} collect FOLDER merges the parts of an --array search.")
    p.add_argument("model", metavar="MODEL", help="a run directory, a checkpoint directory or a file from "
                                                  "`textgan export` (the d/contrastive scorers need D: not an export)")
    prompts = p.add_mutually_exclusive_group()
    prompts.add_argument("--prompt", action="append", metavar="TEXT", help="a prompt (repeat for more)")
    prompts.add_argument("--prompts", metavar="FILE", help="a text file: one prompt per line")
    g = p.add_argument_group("search")
    g.add_argument("--algorithm", choices=ALGORITHMS, default=d.algorithm,
                   help=f"ga (genetic algorithm), cmaes (pycma's CMA-ES) or random (best-of-N) (default {d.algorithm})")
    g.add_argument("--preset", default=None, help=f"population x generations of the research: {', '.join(PRESETS)}")
    g.add_argument("--population", type=int, default=None, help=f"genomes per generation (default {100})")
    g.add_argument("--generations", type=int, default=None, help="generations (default 10)")
    g.add_argument("--budget", type=int, default=None, metavar="N",
                   help="evaluations per prompt: N // population generations")
    g.add_argument("--space", choices=SPACES, default=d.space,
                   help="z, or w+ (StyleGAN2: one z per layer, each mapped and truncated) (default z)")
    g.add_argument("--sigma", type=float, default=d.sigma, help=f"the GA's initial mutation step, in prior standard "
                   f"deviations (default {d.sigma}; it adapts; CMA-ES starts at the prior, sigma 1)")
    g.add_argument("--patience", type=int, default=d.patience, metavar="K",
                   help=f"stop a prompt after K generations without improvement (default {d.patience}; 0: never)")
    g.add_argument("--tolerance", type=float, default=d.tolerance, help="an improvement must exceed this (default 0)")
    g.add_argument("--keep", type=int, default=d.keep, metavar="K", help=f"distinct images kept per prompt "
                                                                         f"(default {d.keep})")
    g.add_argument("--distinct", type=float, default=d.distinct, metavar="MSSSIM",
                   help=f"kept images' pairwise MS-SSIM stays below this (default {d.distinct})")
    g.add_argument("--seed", type=int, default=d.seed, help="prior seeds start at SEED x 1,000,000 (default 0)")
    g.add_argument("--no-baseline", action="store_true", help="skip best-of-N at equal evaluations")
    g.add_argument("--trunc", type=float, default=1.0, metavar="PSI", help="truncation psi (StyleGAN2)")
    g.add_argument("--trunc-cutoff", type=int, default=None, metavar="N", help="truncate the first N ws only")
    g.add_argument("--centre", choices=("conditional", "global"), default="conditional",
                   help="truncation centre (default: the prompt's average w)")
    s = p.add_argument_group("scoring")
    s.add_argument("--scorer", default="auto", help="clip, augclip, d, contrastive or a weighted sum such as "
                   "contrastive=1,d=0.5 (default auto: clip when the run's CLIP has real weights, else contrastive+d)")
    s.add_argument("--clip-model", default=None, help="open_clip model of the clip scorers (default: the run's)")
    s.add_argument("--clip-weights", default=None, help="its pretrained tag or local weights file")
    s.add_argument("--augmentations", type=int, default=d.augmentations, help="augclip's views per image (default 8)")
    s.add_argument("--verifier", choices=VERIFIERS, default="auto",
                   help="held-out score, never searched on (default auto: shapes_alignment for captioned-shapes "
                        "prompts, clip with --verifier-clip-model, else none)")
    s.add_argument("--verifier-clip-model", default=None, help="the verifier's open_clip model")
    s.add_argument("--verifier-clip-weights", default=None, help="its pretrained tag or local weights file")
    add_outdir_option(p, f"where the numbered result folder is created (default: {DEFAULT_OUTDIR})",
                      default=DEFAULT_OUTDIR)
    p.add_argument("--batch", type=int, default=d.batch, help=f"images per generator + scorer forward (default "
                                                              f"{d.batch})")
    p.add_argument("--device", default="auto", help="auto (cuda when available), cpu, cuda or cuda:N")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--array", type=int, default=None, metavar="N",
                   help="split the prompts over N Slurm array tasks (with --local: N jobs here)")
    p.add_argument("--local", action="store_true", help="--array: run the tasks on this machine")
    add_slurm_arguments(p)
    return p


def settings_of(args) -> SearchSettings:
    return SearchSettings(algorithm=args.algorithm, preset=args.preset, population=args.population,
                          generations=args.generations, budget=args.budget, scorer=args.scorer, space=args.space,
                          keep=args.keep, distinct=args.distinct, patience=args.patience, tolerance=args.tolerance,
                          sigma=args.sigma, psi=args.trunc, trunc_cutoff=args.trunc_cutoff, centre=args.centre,
                          batch=args.batch, seed=args.seed, baseline=not args.no_baseline,
                          augmentations=args.augmentations).checked()


def check_model_and_scorer(args, prompts, settings):
    """Load what the search needs once, here, so that a bad model / scorer / verifier exits 2 before any folder
    exists; returns the model."""
    from textgan.infer.generation import check_truncation
    from textgan.infer.model import load_model
    from textgan.infer.population_search.scorers import build_scorer
    from textgan.infer.population_search.verifiers import build_verifier

    model = load_model(args.model, device=args.device)
    check_truncation(model, settings.psi, settings.trunc_cutoff, settings.centre)
    if settings.space == "w+" and not model.has_styles:
        raise UsageError(f"--space w+: model.arch={model.arch} has no styles (ws); use --space z")
    _, spec = build_scorer(settings.scorer, model, args.clip_model, args.clip_weights, views=settings.augmentations)
    settings.check_scorer(spec)
    build_verifier(args.verifier, prompts, model, args.verifier_clip_model, args.verifier_clip_weights)
    return model, spec


def request_of(args, prompts, settings, model, parts: int, command) -> dict:
    import textgan

    return {"textgan": textgan.__version__, "command": list(command), "model": os.path.abspath(args.model),
            "model_info": {"weights_file": model.weights_file, "sha256": model.sha256, "arch": model.arch,
                           "kind": model.kind, "kimg": model.kimg, "resolution": model.resolution},
            "device": args.device, "prompts": prompts, "settings": settings.to_dict(), "parts": parts,
            "options": {"clip_model": args.clip_model, "clip_weights": args.clip_weights, "verifier": args.verifier,
                        "verifier_clip_model": args.verifier_clip_model,
                        "verifier_clip_weights": args.verifier_clip_weights}}


def main(argv=None, prog: str = "textgan search") -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["collect"]:
        return collect_main(argv[1:], f"{prog} collect")
    try:
        args = make_parser(prog).parse_args(argv)
    except SystemExit as e:
        return int(e.code or 0)
    try:
        prompts = read_prompt_file(args.prompts) if args.prompts is not None else check_prompts(args.prompt or [])
        settings = settings_of(args)
        request = None
        if args.array is not None:
            from textgan.launch.slurm import slurm_request

            if args.array < 1:
                raise UsageError(f"--array {args.array}: give the number of array tasks (>= 1)")
            request = slurm_request(args, local=args.local)
            request.max_requeues = request.max_requeues or 0
        elif args.local:
            raise UsageError("--local runs an --array search on this machine; without --array the search runs "
                             "here anyway: drop --local, or add --array N")
        model, spec = check_model_and_scorer(args, prompts, settings)
        settings.scorer = spec
    except UsageError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return e.exit_code
    from textgan.infer.population_search.job import create_search_folder, run_part
    from textgan.infer.population_search.output import collect

    ranks = 1 if request is None else request.nodes * request.tasks_per_node
    parts = 1 if request is None else args.array * ranks
    try:
        folder = create_search_folder(args.outdir, str(model.cfg.desc) or "model",
                                      request_of(args, prompts, settings, model, parts, prog.split() + argv))
    except UsageError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return e.exit_code
    if request is not None:
        del model  # each array task loads its own
        return submit_array(args, request, folder, prog)
    run_part(folder, 0, 1, progress=not args.no_progress, model=model)  # the model the checks loaded
    report(collect(folder), folder)
    return 0


def submit_array(args, request, folder: str, prog: str) -> int:
    from textgan.infer.population_search.job import run_part
    from textgan.infer.population_search.output import collect
    from textgan.launch.submission import command_of, print_submitted, submit_jobs

    def submit_all(executor):
        with executor.batch():
            return [executor.submit(run_part, folder, i, args.array, None, False) for i in range(args.array)]

    jobs = submit_jobs(prog, "search", request, os.path.join(folder, "logs"), local=args.local, submit_all=submit_all,
                       fresh_dir=folder, array_parallelism=args.array)
    if jobs is None:
        return 1
    if args.local:
        failed = []
        for i, job in enumerate(jobs):
            try:
                job.results()
            except Exception as e:
                failed.append(i)
                print(f"part {i} failed: {e}\n  log: {job.paths.stderr}", file=sys.stderr)
        if failed:
            print(f"{prog}: error: {len(failed)} of {args.array} part(s) failed; rerun them, then "
                  f"{command_of(prog)} collect {folder}", file=sys.stderr)
            return 1
        report(collect(folder), folder)
        return 0
    array_id = jobs[0].job_id.split("_")[0]
    print_submitted(f"submitted job array {array_id} ({len(jobs)} tasks)", [("search dir", folder)],
                    [f"squeue -j {array_id}", f"{command_of(prog)} collect {folder}     # once every task has finished"])
    return 0


def collect_main(argv, prog: str) -> int:
    p = argparse.ArgumentParser(prog=prog, description="Merge the parts of a search folder into search.json, "
                                                       "grid.png and score_vs_evaluations.png.")
    p.add_argument("folder", metavar="FOLDER", help="the folder `textgan search --array N` created")
    try:
        args = p.parse_args(argv)
    except SystemExit as e:
        return int(e.code or 0)
    from textgan.infer.population_search.output import collect

    try:
        record = collect(args.folder)
    except UsageError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return e.exit_code
    report(record, args.folder)
    return 0


def report(record: dict, folder: str) -> None:
    """Search vs best-of-N, averaged over the prompts."""
    search, base = record["summary"]["search"], record["summary"]["best_of_n"]
    settings = record["settings"]
    lines = [f"{len(record['prompts'])} prompt(s) searched: {settings['algorithm']} {settings['population']} x "
             f"{settings['generations']}, scorer {record['scorer']}, held-out verifier {record['verifier'] or 'none'}"]

    def line(name, s):
        if not s:
            return
        held = ""
        if s.get("verifier"):
            held = ", held-out " + ", ".join(f"{k} {v:.3f}" for k, v in s["verifier"].items()
                                             if k != "n" and v is not None)
        div = f", diversity (MS-SSIM) {s['diversity']:.3f}" if s.get("diversity") is not None else ""
        lines.append(f"  {name:<10} score {s['best_score']:.4g} at {s['evaluations']:.0f} evaluations/prompt"
                     f" ({s['evaluations_saved']:.0f} saved){held}{div}")

    line("search", search)
    line("best-of-N", base)
    lines += [f"  images, grid.png, search.json, {os.path.basename(record['plot'])}: {folder}"]
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
