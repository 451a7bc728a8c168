"""Lightning's per-step cost against K batches per training step, interleaved in one process.

    python bench/batches_per_step.py                              # gan and cgan, K = 1, 5, 10
    python bench/batches_per_step.py --recipe --presets gan       # the preset's own recipe (R1 and all)
    make bench-k

`bench.py` starts a process per measurement; on a shared machine whose speed drifts from one
minute to the next, its repeats of one loop differed by up to 1.6× (BENCHMARKS.md). Here the
loops alternate in short blocks inside one process (the plain PyTorch loop, then `train(cfg)`
with `data.batches_per_step=K` for each K, then again), so a slow spell slows them alike; the
table gives each loop's median images/s and its ratio to the plain loop, and to K=1, over the
blocks. On the seeds' math (bce, no R1), as bench.py's plain/lightning rows; with ``--recipe``,
the preset's own recipe (no plain loop: the plain step is the seeds' math).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics

import torch

from bench import SEED_BATCH_SIZE, run_lightning, run_plain  # bench.py, beside this file; it puts the repository on sys.path
from src.data.provision import provision


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", nargs="+", default=["gan", "cgan"])
    parser.add_argument("--ks", nargs="+", type=int, default=[1, 5, 10], help="batches per training step (divisors of 50)")
    parser.add_argument("--recipe", action="store_true", help="the preset's own recipe instead of the seeds' math")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--data-dir", default="data")
    parser.add_argument("--batches", type=int, default=300, help="measured batches per block")
    parser.add_argument("--warmup", type=int, default=20, help="batches run before timing starts, per block")
    parser.add_argument("--repeats", type=int, default=7, help="blocks of each loop")
    parser.add_argument("--override", nargs="*", default=[], help="Hydra overrides for every loop")
    args = parser.parse_args()
    provision("fashion_mnist", args.data_dir)
    print(
        f"device={args.device} torch={torch.__version__} threads={torch.get_num_threads()} recipe={args.recipe} "
        f"measured_batches={args.batches} repeats={args.repeats} overrides={args.override}",
        flush=True,
    )
    loops = ([] if args.recipe else ["plain"]) + [f"k{k}" for k in args.ks]
    results: dict[tuple[str, str], list[float]] = {}
    for repeat in range(args.repeats):
        for preset in args.presets:
            for loop in loops:
                if loop == "plain":
                    images_per_s = run_plain(preset, args)
                else:
                    overrides = [f"data.batches_per_step={loop[1:]}"]
                    with contextlib.redirect_stdout(io.StringIO()):  # the progress bar: drawn, as in a user's run, not shown
                        if args.recipe:
                            images_per_s = run_lightning(preset, args, recipe=overrides)
                        else:
                            images_per_s = run_lightning(preset, args, seed_overrides=overrides)
                results.setdefault((preset, loop), []).append(images_per_s)
                print(f"  block {repeat + 1}: {preset:5s} {loop:6s} {images_per_s:9.0f} images/s", flush=True)

    print()
    print("| preset | loop | images/s (median) | ms per batch | vs K=1 | vs plain | spread of the blocks |")
    print("| --- | --- | ---: | ---: | ---: | ---: | --- |")
    for preset in args.presets:
        median = {loop: statistics.median(results[(preset, loop)]) for loop in loops}
        for loop in loops:
            runs = results[(preset, loop)]
            vs_k1 = f"{median[loop] / median['k1']:.2f}×" if "k1" in median and loop != "plain" else "-"
            vs_plain = f"{median[loop] / median['plain']:.2f}×" if "plain" in median else "-"
            name = "plain PyTorch" if loop == "plain" else f"Lightning, K={loop[1:]}"
            ms = f"{SEED_BATCH_SIZE / median[loop] * 1e3:.2f}"
            print(f"| {preset} | {name} | {median[loop]:,.0f} | {ms} | {vs_k1} | {vs_plain} | {min(runs):,.0f}-{max(runs):,.0f} |")


if __name__ == "__main__":
    main()
