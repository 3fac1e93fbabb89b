#!/usr/bin/env python
"""Run the ratio benchmarks and record their results in BENCHMARKS.md.

    python benchmarks/run.py                 # all benchmarks
    python benchmarks/run.py shards loader   # only these (file names bench_<name>.py)
    python benchmarks/run.py --quick         # smaller sizes, for a smoke check

Each benchmark's section in BENCHMARKS.md is replaced on its own, so running one
benchmark keeps the others' last results.
"""

import argparse
import datetime
import importlib
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path[:0] = [ROOT, HERE]

from harness import machine_summary  # noqa: E402

TABLE_FILE = os.path.join(ROOT, "BENCHMARKS.md")
HEADER = (
    "# Benchmarks\n\n"
    "Ratios of two measurements taken side by side (interleaved, medians) in one run, because\n"
    "the machines this project runs on are shared and noisy. Regenerate with the command shown\n"
    "in each section; `python benchmarks/run.py` runs them all.\n"
)


def available() -> list:
    return sorted(f[len("bench_"):-3] for f in os.listdir(HERE) if f.startswith("bench_") and f.endswith(".py"))


def render_section(name: str, results, quick: bool, seconds: float) -> str:
    cmd = f"python benchmarks/run.py {name}" + (" --quick" if quick else "")
    lines = [
        f"<!-- bench:{name} -->",
        f"## {name}",
        "",
        f"Measured {datetime.date.today().isoformat()} on {machine_summary()}; "
        f"took {seconds:.0f} s. Reproduce: `{cmd}`",
        "",
        "| benchmark | what the ratio means | baseline | candidate | ratio |",
        "|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r.name} | {r.what} | {r.baseline}: {r.baseline_value:.4g} {r.unit} | "
            f"{r.candidate}: {r.candidate_value:.4g} {r.unit} | **{r.ratio:.3g}** |"
        )
    notes = [n for r in results for n in r.notes]
    if notes:
        lines += [""] + [f"- {n}" for n in notes]
    lines.append(f"<!-- /bench:{name} -->")
    return "\n".join(lines) + "\n"


def write_section(name: str, section: str) -> None:
    text = open(TABLE_FILE).read() if os.path.exists(TABLE_FILE) else HEADER
    pattern = re.compile(rf"<!-- bench:{re.escape(name)} -->.*?<!-- /bench:{re.escape(name)} -->\n", re.S)
    text = pattern.sub(lambda _: section, text) if pattern.search(text) else text.rstrip("\n") + "\n\n" + section
    with open(TABLE_FILE + ".tmp", "w") as f:
        f.write(text)
    os.replace(TABLE_FILE + ".tmp", TABLE_FILE)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help=f"benchmarks to run (default all): {', '.join(available())}")
    parser.add_argument("--quick", action="store_true", help="smaller sizes; a smoke check, not a measurement")
    parser.add_argument("--no-write", action="store_true", help="print results without touching BENCHMARKS.md")
    args = parser.parse_args(argv)
    names = args.names or available()
    unknown = sorted(set(names) - set(available()))
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; available: {available()}")
    import time

    for name in names:
        module = importlib.import_module(f"bench_{name}")
        start = time.perf_counter()
        results = module.run(quick=args.quick)
        section = render_section(name, results, args.quick, time.perf_counter() - start)
        print(section)
        if not args.no_write:
            write_section(name, section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
