"""Seconds the sample-quality metrics cost: once per run (real side) and per scored epoch.

    python bench/scoring_time.py                                 # gan and cgan, Fashion-MNIST
    python bench/scoring_time.py --presets cgan --data mnist --repeats 5

For each preset it builds the model `conf/model/<preset>.yaml` composes (weights as initialized:
the cost does not depend on them), then times the ``SampleQuality`` callback of
`conf/callbacks/default.yaml` as a run uses it: ``setup`` once (the real side: loading the
classifier and everything computed from the test images) and ``score`` per epoch (generating
``num_samples`` images and every figure), median over ``--repeats`` calls. Peak RSS is the
process's, after all calls.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time
from types import SimpleNamespace

import torch
from train_config import compose_train_config  # puts the repository on sys.path


def measure(preset: str, data: str, data_dir: str, repeats: int, num_samples: int) -> dict:
    from hydra.utils import instantiate

    cfg = compose_train_config([f"model={preset}", f"data={data}", f"data_dir={data_dir}", f"callbacks.sample_quality.num_samples={num_samples}"])
    torch.manual_seed(0)
    model = instantiate(cfg.model).eval()
    datamodule = instantiate(cfg.data)
    callback = instantiate(cfg.callbacks.sample_quality)
    trainer = SimpleNamespace(datamodule=datamodule, is_global_zero=True, current_epoch=0, max_epochs=1, sanity_checking=False)
    started = time.perf_counter()
    callback.setup(trainer, model, "fit")
    setup_s = time.perf_counter() - started
    times, figures = [], {}
    for _ in range(repeats):
        started = time.perf_counter()
        with torch.no_grad():
            figures = callback.score(trainer, model)
        times.append(time.perf_counter() - started)
    return {"preset": preset, "data": data, "setup_s": setup_s, "score_s": statistics.median(times), "all_s": times, "figures": figures}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["gan", "cgan"])
    parser.add_argument("--data", default="fashion_mnist")
    parser.add_argument("--data-dir", default="data")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--num-samples", type=int, default=10_000)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.num_samples} samples, {args.repeats} repeats")
    print("| preset | data | once per run (s) | per scored epoch (s, median) | all repeats (s) |")
    print("| --- | --- | ---: | ---: | --- |")
    for preset in args.presets:
        row = measure(preset, args.data, args.data_dir, args.repeats, args.num_samples)
        spread = ", ".join(f"{t:.2f}" for t in row["all_s"])
        print(f"| {preset} | {args.data} | {row['setup_s']:.2f} | {row['score_s']:.2f} | {spread} |", flush=True)
        print("  figures: " + ", ".join(f"{k} {v:.4g}" for k, v in row["figures"].items()), flush=True)
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
