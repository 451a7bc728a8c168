"""What the commands besides training accept, checked before they read, train or write anything:
``python -m src.generate`` and ``python -m src.evaluate`` (conf/generate.yaml, conf/evaluate.yaml),
``python -m src.metrics.classifier`` and ``python -m src.metrics.quality``. (``python -m
src.data.provision`` checks its two arguments itself, with the data rules of
``src/data/provision.py``, which this package imports.)

    check_generate(cfg)             # numbers, a walk's steps, an output=... that can be written
    check_labels(model, cfg)        # label=K / labels=all against the loaded model
    check_evaluate(cfg)             # numbers, num_samples, the output
    name, data_dir = evaluation_data(cfg)   # the data set and folder, from the command or the run's config
    check_classifier_train(name, output, force, data_dir)
    check_classifier_check(names, weights)
    check_real_vs_real(names, num_samples)
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from src.data.provision import DATASETS, check_data, check_dataset_name, raw_folder
from src.errors import ConfigError
from src.metrics.extractor import ClassifierError, pinned_path
from src.preflight.outputs import check_output_file, check_output_files
from src.preflight.training import MIN_SAMPLES, check_numbers

# (key, integer?, may be null), each positive: see ``check_numbers``.
COMMAND_NUMBERS = (
    ("num_samples", True, False),
    ("batch_size", True, False),
    ("rows", True, False),
    ("steps", True, False),
    ("threads", True, True),
    ("repeats", True, False),
)


def stem_paths(stem: Path) -> tuple[Path, Path]:
    """The grid and the images that ``src.generate`` writes for a file stem: ``<stem>.png``, ``<stem>.npz``."""
    return stem.with_name(stem.name + ".png"), stem.with_name(stem.name + ".npz")


def check_generate(cfg: DictConfig) -> None:
    check_numbers(cfg, COMMAND_NUMBERS)
    if cfg.interpolate and cfg.steps < 2:
        raise ConfigError(f"steps must be at least 2 (a walk has two ends), got {cfg.steps}")
    if cfg.output:  # before the checkpoint is read
        check_output_files(stem_paths(Path(cfg.output)), "output", inputs=[cfg.ckpt_path])
    elif Path(cfg.ckpt_path).is_file():  # the default names are known once the model is: their folder now
        check_output_file(Path(cfg.ckpt_path).with_name("grid.png"), "the output beside the checkpoint")


def check_labels(model, cfg: DictConfig) -> None:
    """``label=K`` / ``labels=all`` against what the model takes; a conditional model's samples
    (not a walk's) come in equal blocks, one per class."""
    label, labels = cfg.label, cfg.labels
    if not model.conditional:
        if label is not None or labels is not None:
            asked = f"label={label}" if label is not None else f"labels={labels}"
            raise ConfigError(f"{asked}: this model is unconditional, it takes no label")
        return
    if label is not None and labels is not None:
        raise ConfigError("give label=K or labels=all, not both")
    if labels not in (None, "all"):
        raise ConfigError(f"labels={labels}: the only choice is labels=all (or one class with label=K)")
    if label is not None and (isinstance(label, bool) or not isinstance(label, int) or not 0 <= label < model.num_classes):
        raise ConfigError(f"label={label} is not one of this model's classes 0..{model.num_classes - 1}")
    if not cfg.interpolate and label is None and cfg.num_samples % model.num_classes:
        raise ConfigError(
            f"num_samples={cfg.num_samples}: a conditional model draws every class in turn, one grid row each (labels=all, its default), "
            f"so num_samples must be a multiple of {model.num_classes}; or ask for one class with label=K"
        )


def evaluation_output(cfg: DictConfig) -> Path:
    """``output=``, or ``<ckpt>_metrics.json`` beside the checkpoint."""
    return Path(cfg.output) if cfg.output else Path(cfg.ckpt_path).with_name(f"{Path(cfg.ckpt_path).stem}_metrics.json")


def check_evaluate(cfg: DictConfig) -> None:
    check_numbers(cfg, COMMAND_NUMBERS)
    if not isinstance(cfg.cas, bool):
        raise ConfigError(f"cas must be true or false, got {cfg.cas!r}")
    if cfg.num_samples < MIN_SAMPLES:
        raise ConfigError(
            f"num_samples must be an integer of at least {MIN_SAMPLES} (the k-NN metrics need more than 5 images), got {cfg.num_samples}"
        )
    if cfg.output or Path(cfg.ckpt_path).is_file():  # before the scoring, not after it
        check_output_files([evaluation_output(cfg)], "output" if cfg.output else None, inputs=[cfg.ckpt_path, cfg.get("classifier")])


def run_config(ckpt_path: Path) -> DictConfig | None:
    """The composed config of the run that wrote ``ckpt_path`` (``<run>/checkpoints/x.ckpt``), if present."""
    path = ckpt_path.resolve().parent.parent / ".hydra" / "config.yaml"
    if not path.is_file():
        return None
    try:
        saved = OmegaConf.load(path)
        saved.data.get("name"), saved_data_dir(saved)  # noqa: B018 -- the two keys read below
        return saved
    except Exception as err:  # YAML errors, a list instead of a mapping, missing sections, ...
        reason = str(err).strip().splitlines()[0][:100] if str(err).strip() else type(err).__name__
        raise ConfigError(
            f"can't read the run's config {path} ({reason}): add data=mnist|fashion_mnist and data_dir=... to score without it"
        ) from None


def saved_data_dir(saved: DictConfig) -> str | None:
    """A run config's data folder: ``data_dir``, or ``paths.data_dir`` in runs from before that name."""
    return saved.get("data_dir") or OmegaConf.select(saved, "paths.data_dir")


def evaluation_data(cfg: DictConfig) -> tuple[str, str]:
    """The data set and data folder to score against: ``data=`` / ``data_dir=``, else the run's."""
    asked = OmegaConf.select(cfg, "data.name")  # data=<name> composes that data group, as for src.train
    # Both given: the run's config need not (and is not) read at all.
    saved = None if asked and cfg.data_dir else run_config(Path(cfg.ckpt_path))
    name = asked or (saved.data.get("name") if saved is not None else None)
    if name is None:
        raise ConfigError(
            f"can't tell which data set {cfg.ckpt_path} was trained on (no .hydra/config.yaml beside its run): add data=mnist or data=fashion_mnist"
        )
    check_dataset_name(name, "data")
    data_dir = cfg.data_dir or (saved_data_dir(saved) if saved is not None else None) or "data"
    if not raw_folder(name, data_dir).is_dir():
        raise ConfigError(f"no {name} data under {data_dir}: run `make data` or set data_dir=")
    return name, str(data_dir)


def check_model_data(model, name: str, num_classes: int = 10, cas: bool = False) -> None:
    """The loaded model against the data set it is scored on, and what ``cas=true`` needs."""
    if model.num_classes not in (None, num_classes):
        raise ConfigError(f"the model is conditional on {model.num_classes} classes but {name} has {num_classes}")
    if cas and not model.conditional:
        raise ConfigError("cas=true trains a classifier on samples of each class asked for: this model is unconditional (cas needs a cGAN)")


def check_classifier_train(name: str, output: Path, force: bool, data_dir: str) -> None:
    """``classifier train NAME --output PATH``: a data set, an output that is not a pinned file
    and can be written, and the data it reads; before minutes of training."""
    check_dataset_name(name, "NAME")
    if output.resolve() in {pinned_path(n).resolve() for n in DATASETS}:
        raise ClassifierError(
            f"{output} is a pinned classifier, which training never replaces: write elsewhere (--output PATH); "
            "to re-pin, copy the new file there and update PINNED_SHA256 in src/metrics/extractor.py"
        )
    check_output_files([output], "--output", temporary_suffix=".tmp")  # what save_classifier writes
    if output.exists() and not force:
        raise ClassifierError(f"{output} exists: choose another --output, or add --force to replace it")
    if output.exists() and not output.is_file():
        raise ClassifierError(f"--output {output} is not a file")
    check_data(name, data_dir, "--data-dir")


def check_classifier_check(names: list[str], weights: str | None) -> None:
    """``classifier check [NAME ...] [--weights PATH]``: known data sets, one of them with ``--weights``."""
    for name in names:
        check_dataset_name(name, "NAME")
    if weights is not None and len(names) != 1:
        raise ConfigError("--weights checks one classifier file: name its data set, e.g. `check mnist --weights PATH`")


def check_real_vs_real(names: list[str], num_samples: int) -> None:
    """``python -m src.metrics.quality [NAME ...] --num-samples N``: known data sets, and N with two
    images of every class on each side (the class metrics and the per-class FIDs need them)."""
    for name in names:
        check_dataset_name(name, "NAME")
    if num_samples < 2 * 10:
        raise ConfigError(f"--num-samples must be at least 20 (two images of every class), got {num_samples}")
