"""Score a checkpoint's samples: FID, KID, precision/recall, density/coverage, classifier score, class entropy; iFID and cond_acc for a cGAN (JSON).

    python -m src.evaluate ckpt_path=outputs/runs/<run>/checkpoints/best.ckpt
    python -m src.evaluate ckpt_path=model.ckpt dataset=mnist data_dir=/scratch/data num_samples=5000

With the defaults (10,000 samples, seed 0) the figures are those the ``SampleQuality`` callback
logged as ``val/*`` for the same weights. The JSON is printed and written beside the checkpoint
(``<ckpt>_metrics.json``). The data set defaults to that of the run the checkpoint came from.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from src.checkpoint import load_model
from src.checks import COMMAND_NUMBERS, MIN_SAMPLES, check_numbers
from src.data.provision import DATASETS, raw_folder
from src.devices import cpu_threads
from src.errors import ConfigError, release_stderr, run_entry_point, user_errors
from src.metrics.classifier import load_classifier, load_split
from src.metrics.quality import QualityMetrics, fixed_inputs, generate
from src.outputs import check_output_files


def run_config(ckpt_path: Path) -> DictConfig | None:
    """The composed config of the run that wrote ``ckpt_path`` (``<run>/checkpoints/x.ckpt``), if present."""
    path = ckpt_path.resolve().parent.parent / ".hydra" / "config.yaml"
    if not path.is_file():
        return None
    try:
        saved = OmegaConf.load(path)
        saved.data.get("name"), saved.paths.get("data_dir")  # noqa: B018 -- the two keys read below
        return saved
    except Exception as err:  # YAML errors, a list instead of a mapping, missing sections, ...
        reason = str(err).strip().splitlines()[0][:100] if str(err).strip() else type(err).__name__
        raise ConfigError(
            f"can't read the run's config {path} ({reason}): add dataset=mnist|fashion_mnist and data_dir=... to score without it"
        ) from None


def resolve_data(cfg: DictConfig) -> tuple[str, str]:
    # Both given: the run's config need not (and is not) read at all.
    saved = None if cfg.dataset and cfg.data_dir else run_config(Path(cfg.ckpt_path))
    name = cfg.dataset or (saved.data.get("name") if saved is not None else None)
    if name is None:
        raise ConfigError(
            f"can't tell which data set {cfg.ckpt_path} was trained on (no .hydra/config.yaml beside its run): add dataset=mnist or dataset=fashion_mnist"
        )
    if name not in DATASETS:
        raise ConfigError(f"dataset={name} is not one of {sorted(DATASETS)}")
    data_dir = cfg.data_dir or (saved.paths.get("data_dir") if saved is not None else None) or "data"
    if not raw_folder(name, data_dir).is_dir():
        raise ConfigError(f"no {name} data under {data_dir}: run `make data` or set data_dir=")
    return name, str(data_dir)


def output_path(cfg: DictConfig) -> Path:
    return Path(cfg.output) if cfg.output else Path(cfg.ckpt_path).with_name(f"{Path(cfg.ckpt_path).stem}_metrics.json")


def evaluate(cfg: DictConfig) -> dict:
    check_numbers(cfg, COMMAND_NUMBERS)
    if cfg.num_samples < MIN_SAMPLES:
        raise ConfigError(
            f"num_samples must be an integer of at least {MIN_SAMPLES} (the k-NN metrics need more than 5 images), got {cfg.num_samples}"
        )
    if cfg.output or Path(cfg.ckpt_path).is_file():  # before the scoring, not after it
        check_output_files([output_path(cfg)], "output" if cfg.output else None, inputs=[cfg.ckpt_path, cfg.get("classifier")])
    model = load_model(cfg.ckpt_path, map_location=cfg.device)
    name, data_dir = resolve_data(cfg)
    if model.num_classes not in (None, 10):
        raise ConfigError(f"the model is conditional on {model.num_classes} classes but {name} has 10")
    classifier, info = load_classifier(name, cfg.get("classifier"))
    real_images, real_labels = load_split(name, data_dir, train=False, key="data_dir")
    real_labels = real_labels[: cfg.num_samples] if model.num_classes else None
    metrics = QualityMetrics(classifier, real_images[: cfg.num_samples], real_labels, batch_size=cfg.batch_size, seed=cfg.seed).to(cfg.device)
    noise, labels = fixed_inputs(cfg.num_samples, model.latent_dim, model.num_classes, cfg.seed)
    figures = metrics.compute(generate(model, noise, labels, cfg.batch_size), labels)
    return {
        "checkpoint": str(cfg.ckpt_path),
        "data": name,
        "num_samples": cfg.num_samples,
        "seed": cfg.seed,
        "classifier": info["classifier"],
        "classifier_sha256": info["sha256"],
        "classifier_test_accuracy": info["test_accuracy"],
        **{key: (value if math.isfinite(value) else None) for key, value in figures.items()},
    }


@hydra.main(version_base="1.3", config_path="../conf", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    release_stderr()
    with user_errors("src.evaluate"), cpu_threads(cfg.get("threads")):
        result = evaluate(cfg)
    text = json.dumps(result, indent=2)
    output_path(cfg).write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    run_entry_point(main)
