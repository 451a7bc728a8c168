"""Reading checkpoint files back without running code from them (they are written by
``src/callbacks/checkpoints.py``).

    from src.checkpoint import load_model
    model = load_model("outputs/runs/<run>/checkpoints/last.ckpt")   # a GAN in eval mode, on the CPU
    images = model.sample()                                          # in [-1, 1], from the fixed noise

A checkpoint is read with ``torch.load(weights_only=True)``: tensors and plain containers, no
pickled objects. The model is rebuilt through Hydra from the composed model config that
:class:`src.callbacks.checkpoints.StoreModelConfig` writes beside the weights (``checkpoint["model_config"]``), after every
``_target_`` in it has been checked against :data:`ALLOWED_TARGET_PREFIXES`.
"""

from __future__ import annotations

import importlib
import os
import pickle
import pickletools
import re
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from src.errors import CheckpointError, root_cause
from src.gan_module import GAN
from src.metrics.extractor import is_classifier_file

MODEL_CONFIG_KEY = "model_config"
LIGHTNING_VERSION_KEY = "pytorch-lightning_version"  # in every checkpoint Lightning writes
# Hydra imports and calls whatever a `_target_` names, and a checkpoint is a file someone may
# hand you. So a stored config may only name the project's own code (`src.`, which you run
# anyway when you train) and torch's optimizers (the model's partial `optimizer`); anything
# else (`os.system`, `subprocess.run`, `builtins.eval`, ...) is refused before Hydra sees it.
# Within those, only classes that build a model or an optimizer: not, say, the project's
# data provisioning function, which would download and write files.
ALLOWED_TARGET_PREFIXES = ("src.", "torch.optim.")
ALLOWED_TARGET_KINDS = (torch.nn.Module, torch.optim.Optimizer)
# The parts of the model config that decide its architecture: a checkpoint whose values differ
# here is from another model, even where the weights' shapes agree (e.g. another activation).
ARCHITECTURE_KEYS = ("_target_", "generator", "discriminator")


def plain_config(config: DictConfig | Mapping[str, Any]) -> dict[str, Any]:
    """A config as plain containers, interpolations resolved against its own root (``${seed}``)."""
    if isinstance(config, DictConfig):
        return OmegaConf.to_container(config, resolve=True)
    return OmegaConf.to_container(OmegaConf.create(dict(config)), resolve=True)


def read_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """A checkpoint's contents, read with ``weights_only=True``; a one-line CheckpointError otherwise."""
    path = Path(path)
    try:
        found = path.is_file()
    except OSError as err:  # a name too long to look up, a loop of links
        raise CheckpointError(f"checkpoint {path} can't be read ({err.strerror or err})") from None
    if not found:
        raise CheckpointError(f"checkpoint {path} not found")
    if str(map_location).startswith("cuda") and not torch.cuda.is_available():
        raise CheckpointError(f"device={map_location}: torch sees no GPU on this machine; use device=cpu")
    try:
        with warnings.catch_warnings():
            # torch warns that a pickle of protocol 4 or 5 (pickle.dump's) may use opcodes it does not take;
            # when it does not, the line below says so, and a warning before it is noise.
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        # torch's weights-only unpickler refused it: a pickled class or function ("Unsupported global:
        # GLOBAL os.system", worded "Trying to load unsupported GLOBAL ..." by torch 2.14), or, for a
        # pickle of protocol 4 or 5 (pickle.dump's), its first opcode ("Unsupported operand 149").
        found = re.search(r"unsupported global:?\s+(?:GLOBAL\s+)?([\w.]+)", str(err), flags=re.IGNORECASE)
        refused = _refused_pickle(path, found.group(1) if found else None)
        if refused:
            raise CheckpointError(f"{path} {refused}") from None
        raise CheckpointError(f"{path} is truncated or corrupt (not a pickle that torch.load can read)") from None
    except (RuntimeError, EOFError, KeyError, ValueError, zipfile.BadZipFile, pickle.PickleError) as err:
        reason = str(err).strip().splitlines()[0][:120] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{path} is truncated or corrupt ({reason})") from None
    if is_classifier_file(checkpoint):
        raise CheckpointError(
            f"{path} is a metrics classifier (of {checkpoint['data']}, as src/metrics/weights/ holds or `python -m src.metrics.classifier train` writes), "
            "not a training checkpoint of this project: give a run's checkpoint (outputs/runs/<run>/checkpoints/last.ckpt); "
            f"src.evaluate scores with this classifier as classifier={path}"
        )
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), dict):
        raise CheckpointError(f"{path} is not a Lightning checkpoint (no state_dict)")
    return checkpoint


_REFUSED = (
    "checkpoints are read as tensors and plain data only (torch.load with weights_only=True), nothing in them runs; "
    "give a checkpoint that src.train wrote (a run's checkpoints/last.ckpt)"
)
# What torch's weights-only unpickler takes (its own tensor rebuilders and storages, an OrderedDict,
# the bytes of protocol 2): a pickled global outside these is code or an object it refuses.
_TORCH_GLOBALS = ("torch.", "collections.OrderedDict", "_codecs.encode")


def _refused_pickle(path: Path, named: str | None) -> str | None:
    """Why a file that torch's weights-only unpickler refused was refused, or None if it is no pickle
    at all (truncated, corrupt). The pickle's opcodes are read (``pickletools``), never run."""
    if named is None:
        found = _pickled_globals(path)
        if found is None:
            return None
        named = next((g for g in found if not g.startswith(_TORCH_GLOBALS)), None)
    if named == "?":  # a STACK_GLOBAL whose strings this reading could not follow
        return f"holds code (a pickled class or function) and is refused: {_REFUSED}"
    if named is not None:
        return f"holds code (the pickled global {named}) and is refused: {_REFUSED}"
    if zipfile.is_zipfile(path) or _torch_legacy(path):
        return f"holds pickled data that a weights_only load refuses (a pickle protocol or opcode torch.load does not take), so it is refused: {_REFUSED}"
    return f"is a plain pickle, not a file written by torch.save or Lightning, and is refused: {_REFUSED}"


def _pickled_globals(path: Path) -> list[str] | None:
    """The globals (classes, functions) the pickles of a checkpoint name, in order: ``data.pkl`` of
    torch's zip format, else the pickles the file starts with (a raw pickle; torch's legacy format
    is five of them before the raw storage bytes). None if the first is no pickle."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                name = next((n for n in archive.namelist() if n.endswith("/data.pkl") or n == "data.pkl"), None)
                if name is None:
                    return None
                with archive.open(name) as stream:
                    return _globals_in(stream, count=1)
        with open(path, "rb") as stream:
            return _globals_in(stream, count=5)
    except (OSError, zipfile.BadZipFile):
        return None


_STRINGS = {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "SHORT_BINSTRING", "BINSTRING", "STRING"}
_MEMO_GETS, _MEMO_PUTS = {"GET", "BINGET", "LONG_BINGET"}, {"PUT", "BINPUT", "LONG_BINPUT"}
_NO_PUSH = {"PROTO", "FRAME", "MEMOIZE", "STOP", "MARK", *_MEMO_PUTS}


def _globals_in(stream: Any, count: int) -> list[str] | None:
    """The globals named by up to ``count`` successive pickles in ``stream``, None if the first
    does not parse. ``STACK_GLOBAL`` takes its module and name from the two strings pushed before it
    (directly or from the memo), which is how protocols 4 and 5 write them."""
    found: list[str] = []
    for index in range(count):
        pushed: list[Any] = []
        memo: dict[int, Any] = {}
        try:
            for opcode, arg, _ in pickletools.genops(stream):
                name = opcode.name
                if name in ("GLOBAL", "INST"):
                    found.append(str(arg).replace(" ", "."))
                elif name == "STACK_GLOBAL":
                    module, attribute = pushed[-2:] if len(pushed) >= 2 else [None, None]
                    found.append(f"{module}.{attribute}" if isinstance(module, str) and isinstance(attribute, str) else "?")
                elif name == "MEMOIZE":
                    memo[len(memo)] = pushed[-1] if pushed else None
                elif name in _MEMO_PUTS:
                    memo[arg] = pushed[-1] if pushed else None
                if name in _STRINGS:
                    pushed.append(arg)
                elif name in _MEMO_GETS:
                    pushed.append(memo.get(arg))
                elif name not in _NO_PUSH:
                    pushed.append(None)
        except ValueError:  # not a pickle (or, after the first, the raw bytes that follow the pickles)
            if index == 0:
                return None
            break
        if index + 1 < count:
            if not stream.read(1):
                break
            stream.seek(-1, os.SEEK_CUR)
    return found


def _torch_legacy(path: Path) -> bool:
    """Whether ``path`` is in torch's pre-1.6 format (``_use_new_zipfile_serialization=False``): a
    pickle of torch's magic number first."""
    with open(path, "rb") as stream:
        try:
            first = next((arg for opcode, arg, _ in pickletools.genops(stream) if opcode.name in ("LONG", "LONG1", "LONG4")), None)
        except ValueError:
            return False
    return first == torch.serialization.MAGIC_NUMBER


def check_targets(config: Any, where: str = "model") -> None:
    """Refuse a config that names code outside the allowlist, or that would resolve interpolations."""
    if isinstance(config, Mapping):
        for key, value in config.items():
            if key == "_target_":
                _check_target(value, f"{where}._target_")
            check_targets(value, f"{where}.{key}")
    elif isinstance(config, (list, tuple)):
        for index, value in enumerate(config):
            check_targets(value, f"{where}[{index}]")
    elif isinstance(config, str) and "${" in config:
        # A stored config is resolved before saving; an interpolation could read environment variables.
        raise CheckpointError(f"{where}={config!r} is refused: a stored config holds no interpolations")


def _check_target(target: Any, where: str) -> None:
    if not (isinstance(target, str) and target.startswith(ALLOWED_TARGET_PREFIXES)):
        raise CheckpointError(f"{where}={target!r} is refused: a checkpoint may only name {' or '.join(p + '*' for p in ALLOWED_TARGET_PREFIXES)}")
    try:
        obj = _import_target(target)  # imports the allowed module, calls nothing
    except ImportError as err:
        raise CheckpointError(f"{where}={target!r} names nothing importable ({str(err).strip().splitlines()[0]})") from None
    if not (isinstance(obj, type) and issubclass(obj, ALLOWED_TARGET_KINDS)):
        raise CheckpointError(f"{where}={target!r} is refused: a checkpoint may only name a model or an optimizer class")


def _import_target(target: str) -> Any:
    """The object a dotted ``_target_`` names: the longest importable module prefix, then attributes.
    (Hydra's own resolver is internal, and its public ``get_class`` logs every failure.)"""
    parts = target.split(".")
    for split in range(len(parts) - 1, 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        try:
            for attribute in parts[split:]:
                obj = getattr(obj, attribute)
        except AttributeError:
            raise ImportError(f"module {'.'.join(parts[:split])!r} has no attribute {'.'.join(parts[split:])!r}") from None
        return obj
    raise ImportError(f"no module named {parts[0]!r}")


def check_same_model(checkpoint: dict[str, Any], path: str | os.PathLike, model: torch.nn.Module, model_config: Any = None) -> None:
    """Refuse a checkpoint written by another model: its architecture config or its weights' names and shapes differ."""
    stored = checkpoint.get(MODEL_CONFIG_KEY)
    if isinstance(stored, Mapping) and model_config is not None:
        current = plain_config(model_config)
        differences = [d for key in ARCHITECTURE_KEYS for d in _differences(stored.get(key), current.get(key), f"model.{key}")]
        if differences:
            more = f" (and {len(differences) - 1} more)" if len(differences) > 1 else ""
            raise CheckpointError(f"{path} is from another model: {differences[0]}{more}; use the model overrides of the run that wrote it")
    expected = model.state_dict()
    actual = checkpoint["state_dict"]
    missing, unexpected = sorted(expected.keys() - actual.keys()), sorted(actual.keys() - expected.keys())
    if missing or unexpected:
        detail = f"it lacks {missing[0]}" if missing else f"it has {unexpected[0]}, which this model lacks"
        raise CheckpointError(f"{path} is from another model: {detail}; use the model overrides of the run that wrote it")
    for name, tensor in expected.items():
        if tuple(actual[name].shape) != tuple(tensor.shape):
            raise CheckpointError(
                f"{path} is from another model: {name} has shape {list(actual[name].shape)} there, {list(tensor.shape)} here; "
                "use the model overrides of the run that wrote it"
            )


def _differences(stored: Any, current: Any, where: str) -> list[str]:
    if isinstance(stored, Mapping) and isinstance(current, Mapping):
        keys = sorted(stored.keys() | current.keys())
        return [d for key in keys for d in _differences(stored.get(key), current.get(key), f"{where}.{key}")]
    return [] if stored == current else [f"{where} is {stored!r} there, {current!r} here"]


def load_model(ckpt_path: str | os.PathLike, map_location: str | torch.device = "cpu") -> GAN:
    """The GAN stored in a lightning-gan checkpoint, in eval mode on ``map_location``.

    Raises CheckpointError (one line) for a missing, truncated or corrupt file, a checkpoint that
    is not a lightning-gan one, or a stored config naming code outside the allowlist.
    """
    checkpoint = read_checkpoint(ckpt_path, map_location=map_location)
    model_config = checkpoint.get(MODEL_CONFIG_KEY)
    if not isinstance(model_config, dict) or "_target_" not in model_config:
        if _weights_only(checkpoint):  # Lightning calls no callback's on_save_checkpoint then, StoreModelConfig's included
            raise CheckpointError(
                f"{ckpt_path} holds weights only (written with save_weights_only=true), without the model config the model is rebuilt from: "
                "use a full checkpoint of the run, such as checkpoints/last.ckpt"
            )
        raise CheckpointError(f"{ckpt_path} is not a lightning-gan checkpoint (it stores no model_config)")
    check_targets(model_config)
    # Building the model draws its fixed noise: keep the caller's random stream as it was.
    with torch.random.fork_rng(devices=[]):
        try:
            model = instantiate(model_config)
        except (InstantiationException, ValueError, TypeError) as err:
            cause = root_cause(err)
            raise CheckpointError(f"{ckpt_path}: its model config does not build a model ({str(cause).strip().splitlines()[0]})") from None
    if not isinstance(model, GAN):
        raise CheckpointError(f"{ckpt_path} is not a lightning-gan checkpoint (its model is a {type(model).__name__}, not a GAN)")
    check_same_model(checkpoint, ckpt_path, model)
    model.load_state_dict(checkpoint["state_dict"])
    diverged = model.diverged_nets()
    if model.generator_ema is not None and not all(bool(torch.isfinite(p).all()) for p in model.generator_ema.parameters()):
        diverged.append("G's EMA")
    if diverged:  # NaN weights make NaN images, and NaN features crash LAPACK inside FID
        raise CheckpointError(
            f"{ckpt_path}: the weights of {' and '.join(diverged)} hold NaN or infinite values (the run diverged): use an earlier checkpoint"
        )
    return model.to(map_location).eval()


def _weights_only(checkpoint: dict[str, Any]) -> bool:
    """Written by Lightning with ``save_weights_only=true``: its version and loops, no optimizer state."""
    return LIGHTNING_VERSION_KEY in checkpoint and "loops" in checkpoint and "optimizer_states" not in checkpoint


def check_resumable(checkpoint: dict[str, Any], path: str | os.PathLike) -> None:
    """Training resumes from a full checkpoint of a run: not from one that holds weights only
    (``save_weights_only=true``), nor from a file Lightning did not write."""
    if LIGHTNING_VERSION_KEY not in checkpoint or MODEL_CONFIG_KEY not in checkpoint and not _weights_only(checkpoint):
        raise CheckpointError(
            f"{path} is not a training checkpoint of this project (it holds a state_dict but no Lightning loop, optimizer or model config state): "
            "training resumes from a run's checkpoint, such as outputs/runs/<run>/checkpoints/last.ckpt"
        )
    if "optimizer_states" not in checkpoint or "loops" not in checkpoint:
        raise CheckpointError(
            f"{path} holds weights only (written with save_weights_only=true): training can't resume from it; "
            "resume from a full checkpoint such as checkpoints/last.ckpt"
        )
