"""Score a checkpoint's samples: FID, KID, precision/recall, density/coverage, classifier score, class entropy; iFID and cond_acc for a cGAN (JSON).

    python -m src.evaluate ckpt_path=outputs/runs/<run>/checkpoints/best.ckpt
    python -m src.evaluate ckpt_path=model.ckpt data=mnist data_dir=/scratch/data num_samples=5000

With the defaults (10,000 samples, seed 0) the figures are those the ``SampleQuality`` callback
logged as ``val/*`` for the same weights. The JSON is printed and written beside the checkpoint
(``<ckpt>_metrics.json``). The data set defaults to that of the run the checkpoint came from.

``repeats=K`` scores K independent sample sets of the same weights (noise seeds ``seed`` ..
``seed+K-1``; the first is the callback's) and gives each figure as the mean and the sample
standard deviation over them: the sampling noise of a figure, to tell from a difference between runs.

``cas=true`` (a conditional model) adds the classification accuracy score (``src/metrics/cas.py``):
``cas``, the real test accuracy of a classifier trained on as many class-balanced samples as the
real training set holds, and ``cas_ceiling``, the same recipe trained on the real images (the
pinned classifier's recorded test accuracy). It trains a classifier: minutes on a CPU.
"""

from __future__ import annotations

import json
import math
import sys

import hydra
from omegaconf import DictConfig

from src import imports_done
from src.checkpoint import load_model
from src.data.provision import load_split
from src.devices import cpu_threads
from src.errors import release_stderr, run_entry_point, user_errors
from src.metrics.cas import classification_accuracy_score
from src.metrics.extractor import load_classifier
from src.metrics.quality import QualityMetrics, fixed_inputs, generate
from src.preflight.commands import check_evaluate, check_model_data, evaluation_data, evaluation_output
from src.spread import mean_std, plus_minus


def evaluate(cfg: DictConfig) -> dict:
    check_evaluate(cfg)
    model = load_model(cfg.ckpt_path, map_location=cfg.device)
    name, data_dir = evaluation_data(cfg)
    check_model_data(model, name, cas=cfg.cas)
    classifier, info = load_classifier(name, cfg.get("classifier"))
    real_images, real_labels = load_split(name, data_dir, train=False, key="data_dir")
    real_labels = real_labels[: cfg.num_samples] if model.num_classes else None
    metrics = QualityMetrics(classifier, real_images[: cfg.num_samples], real_labels, batch_size=cfg.batch_size, seed=cfg.seed).to(cfg.device)
    sets = []
    for seed in range(cfg.seed, cfg.seed + cfg.repeats):
        noise, labels = fixed_inputs(cfg.num_samples, model.latent_dim, model.num_classes, seed)
        sets.append(metrics.compute(generate(model, noise, labels, cfg.batch_size), labels))
    result = {
        "checkpoint": str(cfg.ckpt_path),
        "data": name,
        "num_samples": cfg.num_samples,
        "seed": cfg.seed,
        "classifier": info["classifier"],
        "classifier_sha256": info["sha256"],
        "classifier_test_accuracy": info["test_accuracy"],
    }
    if cfg.cas:
        train_size = len(load_split(name, data_dir, train=True, key="data_dir")[1])
        test_images, test_labels = load_split(name, data_dir, train=False, key="data_dir")
        result["cas"] = classification_accuracy_score(model, train_size, test_images, test_labels, seed=cfg.seed, batch_size=cfg.batch_size)
        result["cas_ceiling"] = load_classifier(name)[1]["test_accuracy"]
    if cfg.repeats == 1:
        return result | _json_figures(sets[0])
    spread = {key: mean_std(figures[key] for figures in sets)[:2] for key in sets[0]}
    return result | {
        "repeats": cfg.repeats,
        **_json_figures({key: mean for key, (mean, _) in spread.items()}),
        "std": _json_figures({key: std for key, (_, std) in spread.items()}),
        "per_repeat": [_json_figures(figures) for figures in sets],
    }


def _json_figures(figures: dict[str, float]) -> dict[str, float | None]:
    return {key: (value if math.isfinite(value) else None) for key, value in figures.items()}


def spread_lines(result: dict) -> list[str]:
    """``repeats=K``'s figures as ``name  mean ± std`` lines, for the terminal."""
    return [f"{key:<20} {plus_minus(result[key], std)}" for key, std in result["std"].items() if result[key] is not None and std is not None]


@hydra.main(version_base="1.3", config_path="../conf", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    release_stderr()
    with user_errors("src.evaluate"), cpu_threads(cfg.get("threads")):
        result = evaluate(cfg)
    text = json.dumps(result, indent=2)
    evaluation_output(cfg).write_text(text + "\n")
    print(text)
    if "std" in result:  # JSON on stdout for programs; the spread, readable, on stderr
        print(f"{result['repeats']} sample sets of {result['num_samples']}: mean ± std", *spread_lines(result), sep="\n", file=sys.stderr)


if __name__ == "__main__":
    imports_done()
    run_entry_point(main)
