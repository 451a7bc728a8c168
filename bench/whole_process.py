"""Seconds per epoch of whole processes: the seed tutorial's loop against `python -m src.train`.

    python bench/whole_process.py                         # gan, Fashion-MNIST, 2 interleaved repeats
    python bench/whole_process.py --presets gan cgan --override data.batches_per_step=5

What a user waits for, start-up, data loading and (for the project) the sample-quality scoring
after every epoch included: each contender runs as its own process for 1 and for 2 epochs, and
the difference is the cost of one more epoch, with start-up cancelled out. The seed process is
seed 000's loop as written (bench.py's `seed` loop: torchvision dataset, per-sample transforms,
DataLoader, its step), over whole epochs; the project's is the default command with
`trainer.max_epochs=E`, writing into a temporary folder. Runs alternate (seed, project, seed,
...) because the machine's speed drifts, and the table gives medians.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time

from bench import REPO, seed_loop  # bench.py, beside this file; it puts the repository on sys.path
from src.data.provision import provision

EPOCHS = (1, 2)


def train_seed(preset: str, epochs: int, data_dir: str) -> None:
    """The seed loop over whole epochs, in this process (the `--seed-run` mode)."""
    args = argparse.Namespace(device="cpu", data_dir=data_dir)
    loader, step, _ = seed_loop(preset, args)
    for epoch in range(epochs):
        for batch in loader:
            step(batch)
        print(f"epoch {epoch + 1}/{epochs} done", flush=True)


def timed(command: list[str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", nargs="+", default=["gan"], choices=["gan", "cgan"])
    parser.add_argument("--data-dir", default="data")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--override", nargs="*", default=[], help="Hydra overrides for the project's command")
    parser.add_argument("--seed-run", nargs=2, metavar=("PRESET", "EPOCHS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.seed_run:
        train_seed(args.seed_run[0], int(args.seed_run[1]), args.data_dir)
        return
    provision("fashion_mnist", args.data_dir)
    print(f"presets={args.presets} repeats={args.repeats} overrides={args.override}", flush=True)
    seconds: dict[tuple[str, str, int], list[float]] = {}
    for repeat in range(args.repeats):
        for preset in args.presets:
            for epochs in EPOCHS:
                seed = [sys.executable, "bench/whole_process.py", "--data-dir", args.data_dir, "--seed-run", preset, str(epochs)]
                seconds.setdefault((preset, "seed", epochs), []).append(timed(seed))
                with tempfile.TemporaryDirectory(prefix="whole-process-") as run_dir:
                    project = [
                        sys.executable,
                        "-m",
                        "src.train",
                        f"model={preset}",
                        f"data_dir={args.data_dir}",
                        f"trainer.max_epochs={epochs}",
                        f"hydra.run.dir={run_dir}",
                        *args.override,
                    ]
                    seconds.setdefault((preset, "project", epochs), []).append(timed(project))
                print(
                    f"  repeat {repeat + 1}: {preset} {epochs} epoch(s): seed {seconds[(preset, 'seed', epochs)][-1]:.1f} s, "
                    f"project {seconds[(preset, 'project', epochs)][-1]:.1f} s",
                    flush=True,
                )
    print()
    print("| preset | process | 1 epoch, s | 2 epochs, s | one more epoch, s | vs seed |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for preset in args.presets:
        median = {(who, e): statistics.median(seconds[(preset, who, e)]) for who in ("seed", "project") for e in EPOCHS}
        per_epoch = {who: median[(who, 2)] - median[(who, 1)] for who in ("seed", "project")}
        for who, name in (("seed", "seed 000's loop"), ("project", "python -m src.train")):
            print(
                f"| {preset} | {name} | {median[(who, 1)]:.1f} | {median[(who, 2)]:.1f} | {per_epoch[who]:.1f} | "
                f"{per_epoch['seed'] / per_epoch[who]:.2f}× |"
            )


if __name__ == "__main__":
    main()
