"""Lightning's per-step cost against K batches per training step, interleaved in one process.

    python bench/batches_per_step.py                              # gan and cgan, K = 1, 5, 10
    python bench/batches_per_step.py --recipe --presets gan       # the preset's own recipe (R1 and all)
    make bench-k

`bench.py` starts a process per measurement; on a shared machine whose speed drifts from one
minute to the next, its repeats of one loop differed by up to 1.6× (BENCHMARKS.md). Here the
loops alternate in short blocks inside one process (the plain PyTorch loop, then `train(cfg)`
with `data.batches_per_step=K` for each K, then again), so a slow spell slows them alike. The
table gives, for each loop, the median over the blocks of two speeds: the fastest stretch of
`--window` batches (interference only slows a stretch, so the fastest is the least disturbed)
and all measured batches; and the median of each block's ratio to its round's K=1 and plain
blocks. On the seeds' math (bce, no R1), as bench.py's plain/lightning rows; with ``--recipe``,
the preset's own recipe (no plain loop: the plain step is the seeds' math).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics

import torch

from bench import SEED_BATCH_SIZE, best_window, run_lightning, run_plain  # bench.py, beside this file; it puts the repository on sys.path
from src.data.provision import provision


def paired(results: dict[tuple[str, str], list[float]], preset: str, loop: str, base: str) -> str:
    """The median over blocks of each block's ratio to the ``base`` block of the same round: blocks
    run side by side share the machine's speed of the moment, which drifts."""
    if (preset, base) not in results:
        return "-"
    ratios = [mine / theirs for mine, theirs in zip(results[(preset, loop)], results[(preset, base)], strict=True)]
    return f"{statistics.median(ratios):.2f}×"


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
    parser.add_argument("--window", type=int, default=50, help="batches of the fastest stretch (a multiple of every K)")
    parser.add_argument("--override", nargs="*", default=[], help="Hydra overrides for every loop")
    args = parser.parse_args()
    provision("fashion_mnist", args.data_dir)
    print(
        f"device={args.device} torch={torch.__version__} threads={torch.get_num_threads()} recipe={args.recipe} "
        f"measured_batches={args.batches} repeats={args.repeats} overrides={args.override}",
        flush=True,
    )
    loops = ([] if args.recipe else ["plain"]) + [f"k{k}" for k in args.ks]
    results: dict[tuple[str, str], list[float]] = {}  # each block's images/s over all its measured batches
    fastest: dict[tuple[str, str], list[float]] = {}  # each block's fastest stretch of --window batches
    for repeat in range(args.repeats):
        for preset in args.presets:
            for loop in loops:
                marks: list[tuple[int, float]] = []
                if loop == "plain":
                    images_per_s = run_plain(preset, args, marks=marks)
                else:
                    overrides = [f"data.batches_per_step={loop[1:]}"]
                    with contextlib.redirect_stdout(io.StringIO()):  # the progress bar: drawn, as in a user's run, not shown
                        if args.recipe:
                            images_per_s = run_lightning(preset, args, recipe=overrides, marks=marks)
                        else:
                            images_per_s = run_lightning(preset, args, seed_overrides=overrides, marks=marks)
                best = best_window(marks, args.window, SEED_BATCH_SIZE)
                results.setdefault((preset, loop), []).append(images_per_s)
                fastest.setdefault((preset, loop), []).append(best)
                print(
                    f"  block {repeat + 1}: {preset:5s} {loop:6s} {images_per_s:9.0f} images/s, fastest {args.window} batches {best:9.0f}", flush=True
                )

    print()
    print("Medians over the blocks; the ratios are medians of each block's ratio to its round's K=1 / plain block.")
    print(f"| preset | loop | images/s, fastest {args.window} batches | vs K=1 | vs plain | images/s, all batches | vs K=1 | vs plain |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for preset in args.presets:
        for loop in loops:
            name = "plain PyTorch" if loop == "plain" else f"Lightning, K={loop[1:]}"
            row = [preset, name]
            for table in (fastest, results):
                runs = table[(preset, loop)]
                row += [
                    f"{statistics.median(runs):,.0f}",
                    paired(table, preset, loop, "k1") if loop != "plain" else "-",
                    paired(table, preset, loop, "plain"),
                ]
            print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
