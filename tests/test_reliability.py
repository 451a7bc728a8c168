"""Reliability: interruptions, atomic and safe checkpoints, and bad input answered in one line.

Fast tests call ``train(cfg)`` and ``load_model`` in-process; the ``slow`` ones signal a real
``python -m src.train`` process and read its exit code and stderr.
"""

from __future__ import annotations

import errno
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import lightning as L
import pytest
import torch
from conftest import make_cfg, start_train, tiny_run, write_tiny_dataset

from src.callbacks.checkpoints import AtomicCheckpointIO, CheckpointOnInterrupt
from src.checkpoint import MODEL_CONFIG_KEY, load_model
from src.data.provision import RAW_FILES
from src.errors import CheckpointError, ConfigError, TrainingInterrupted, UserError, user_error
from src.gan_module import GAN
from src.train import train

REPO = Path(__file__).resolve().parents[1]
EPOCH = ["+trainer.limit_train_batches=4", "+trainer.limit_val_batches=1"]
ONE_EPOCH = ["trainer.max_epochs=1", "+trainer.limit_train_batches=2", "+trainer.limit_val_batches=1"]


@pytest.fixture(scope="module")
def gan_ckpt(tmp_path_factory, data_root) -> Path:
    """A real checkpoint of the seed GAN, written by ``train()``."""
    out = tmp_path_factory.mktemp("gan_run")
    train(make_cfg(ONE_EPOCH, out, data_root))
    return out / "checkpoints" / "last.ckpt"


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


# --- Safe checkpoint loading -------------------------------------------------------------


def test_a_checkpoint_loads_with_weights_only_and_holds_the_model_config(gan_ckpt):
    checkpoint = torch.load(gan_ckpt, weights_only=True)
    config = checkpoint[MODEL_CONFIG_KEY]
    assert config["_target_"] == "src.gan_module.GAN"
    assert config["generator"]["_target_"] == "src.models.MLPGenerator"
    assert config["seed"] == 42  # interpolations resolved: a plain dict


def test_load_model_rebuilds_the_trained_model_in_eval_mode(gan_ckpt):
    stored = torch.load(gan_ckpt, weights_only=True)["state_dict"]
    torch.manual_seed(123)
    expected_draw = torch.rand(3)
    torch.manual_seed(123)
    model = load_model(gan_ckpt)
    assert torch.equal(torch.rand(3), expected_draw)  # building the model left the caller's RNG alone
    assert isinstance(model, GAN) and not model.training
    for name, value in model.state_dict().items():
        assert torch.equal(value, stored[name]), name
    assert model.sample().shape == (100, 1, 28, 28)


def _write_variant(tmp_path: Path, gan_ckpt: Path, change) -> Path:
    checkpoint = torch.load(gan_ckpt, weights_only=True)
    change(checkpoint)
    path = tmp_path / "variant.ckpt"
    torch.save(checkpoint, path)
    return path


def test_a_foreign_target_is_refused_before_anything_runs(tmp_path, gan_ckpt):
    marker = tmp_path / "ran"

    def plant(checkpoint):
        checkpoint[MODEL_CONFIG_KEY]["generator"] = {"_target_": "os.system", "_args_": [f"touch {marker}"]}

    with pytest.raises(CheckpointError, match=r"model\.generator\._target_='os\.system' is refused"):
        load_model(_write_variant(tmp_path, gan_ckpt, plant))
    assert not marker.exists()


class _Pickled:
    """Any class: a checkpoint holding one needs the unpickler to run code."""


class _RunsCode:
    """What a malicious checkpoint holds: unpickling it would call os.system."""

    def __reduce__(self):
        return (os.system, ("echo this must never run",))


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing", r"checkpoint .*nothing\.ckpt not found"),
        ("truncated", r"variant\.ckpt is truncated or corrupt"),
        ("junk", r"variant\.ckpt is truncated or corrupt"),
        ("object", r"holds code \(the pickled global (tests\.)?test_reliability\._Pickled\) and is refused: .* nothing in them runs"),
        ("os_system", r"holds code \(the pickled global (posix|os)\.system\) and is refused"),
        ("nan_weights", r"the weights of G and D and G's EMA hold NaN or infinite values \(the run diverged\): use an earlier checkpoint"),
        ("no_config", r"not a lightning-gan checkpoint \(it stores no model_config\)"),
        ("foreign_root", r"model\._target_='builtins\.eval' is refused"),
        ("project_function", r"model\.generator\._target_='src\.data\.provision\.provision' is refused: .* only name a model or an optimizer class"),
        ("interpolation", r"model\.generator\.activation='\$\{oc\.env:HOME\}' is refused"),
        ("other_model", r"is from another model: it (lacks|has) "),
    ],
)
def test_load_model_refuses_a_bad_checkpoint_in_one_line(tmp_path, gan_ckpt, case, message):
    variant = tmp_path / "variant.ckpt"
    data = gan_ckpt.read_bytes()
    if case == "missing":
        variant = tmp_path / "nothing.ckpt"
    elif case == "truncated":
        variant.write_bytes(data[: len(data) // 2])
    elif case == "junk":
        variant.write_bytes(b"not a checkpoint at all")
    elif case == "object":
        torch.save({"state_dict": {}, "payload": _Pickled()}, variant)
    elif case == "os_system":
        torch.save({"state_dict": {}, "payload": _RunsCode()}, variant)
    else:
        changes = {
            "no_config": lambda c: c.pop(MODEL_CONFIG_KEY),
            "foreign_root": lambda c: c[MODEL_CONFIG_KEY].update(_target_="builtins.eval"),
            # The project's own code, but a function that downloads and writes files.
            "project_function": lambda c: c[MODEL_CONFIG_KEY]["generator"].update(_target_="src.data.provision.provision"),
            "interpolation": lambda c: c[MODEL_CONFIG_KEY]["generator"].update(activation="${oc.env:HOME}"),
            # A conditional model's config beside the unconditional GAN's weights.
            "other_model": lambda c: [c[MODEL_CONFIG_KEY][net].update(num_classes=10, embed_dim=10) for net in ("generator", "discriminator")],
            "nan_weights": lambda c: [t.fill_(float("nan")) for t in c["state_dict"].values() if t.is_floating_point()],
        }
        variant = _write_variant(tmp_path, gan_ckpt, changes[case])
    with pytest.raises(CheckpointError, match=message) as error:
        load_model(variant)
    assert "\n" not in str(error.value)


# --- Atomic checkpoint writes ------------------------------------------------------------


@pytest.mark.parametrize(
    ("failure", "message"),
    [
        (OSError(errno.ENOSPC, "No space left on device"), r"^no space left on device writing .*last\.ckpt; the previous checkpoint is intact$"),
        # torch's zip writer reports a full disk so, and its cleanup then fails with "unexpected pos".
        (
            RuntimeError("[enforce fail at inline_container.cc:778] . PytorchStreamWriter failed writing file data/0: file write failed"),
            r"^no space left on device writing ",
        ),
        (OSError(errno.EIO, "Input/output error"), r"^could not write .*last\.ckpt \(Input/output error\); the previous checkpoint is intact$"),
        (KeyboardInterrupt(), None),
    ],
)
def test_a_write_cut_short_leaves_the_previous_checkpoint_and_no_temp_file(tmp_path, monkeypatch, failure, message):
    path = tmp_path / "checkpoints" / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"state_dict": {"w": torch.zeros(1000)}}, path)
    real_save = torch.save

    def save_half_then_fail(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 the first bytes of a zip file")
        raise failure

    monkeypatch.setattr(torch, "save", save_half_then_fail)
    with pytest.raises(type(failure) if message is None else CheckpointError, match=message):
        io.save_checkpoint({"state_dict": {"w": torch.ones(1000)}}, path)
    monkeypatch.setattr(torch, "save", real_save)
    assert torch.equal(torch.load(path, weights_only=True)["state_dict"]["w"], torch.zeros(1000))
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]


def test_train_writes_checkpoints_atomically_and_an_error_keeps_the_last_good_one(cfg_factory, tmp_path):
    class FailInSecondEpoch(L.Callback):
        def on_train_start(self, trainer, pl_module):
            assert isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO)

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if trainer.current_epoch == 1 and batch_idx == 1:
                raise RuntimeError("a bug")

    train(cfg_factory("trainer.max_epochs=1", *EPOCH))
    with pytest.raises(RuntimeError, match="a bug"):
        train(cfg_factory("trainer.max_epochs=2", *EPOCH, "ckpt_path=last"), extra_callbacks=[FailInSecondEpoch()])
    # An error (unlike an interruption) saves nothing: a diverged run must not overwrite the last good weights.
    assert torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 4 * 2
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]  # no temp files left


def test_last_ckpt_is_written_at_the_end_of_every_epoch(cfg_factory, tmp_path):
    class LookAtEpochStart(L.Callback):
        steps: list[int | None] = []

        def on_train_epoch_start(self, trainer, pl_module):
            last = tmp_path / "checkpoints" / "last.ckpt"
            self.steps.append(torch.load(last, weights_only=True)["global_step"] if last.exists() else None)

    look = LookAtEpochStart()
    train(cfg_factory("trainer.max_epochs=2", *EPOCH), extra_callbacks=[look])
    assert look.steps == [None, 4 * 2]


# --- Interruption ------------------------------------------------------------------------


class _InterruptAt(L.Callback):
    """Interrupts after batch 2 of epoch 1, as a user or a scheduler would."""

    def __init__(self, how: str) -> None:
        self.how = how

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.current_epoch == 1 and batch_idx == 1:
            if self.how == "SIGTERM":
                os.kill(os.getpid(), signal.SIGTERM)  # Lightning's handler stops at the end of this batch
            else:
                raise KeyboardInterrupt  # what Ctrl-C raises


@pytest.mark.parametrize(("how", "exit_code"), [("SIGTERM", 143), ("SIGINT", 130)])
def test_an_interruption_saves_last_ckpt_and_the_run_resumes_from_it(cfg_factory, tmp_path, how, exit_code):
    sigint_handler = signal.getsignal(signal.SIGINT)
    try:
        with pytest.raises(TrainingInterrupted) as error:
            train(cfg_factory("trainer.max_epochs=2", *EPOCH), extra_callbacks=[_InterruptAt(how)])
    finally:
        signal.signal(signal.SIGINT, sigint_handler)  # Lightning ignores further Ctrl-C while it shuts down
    last = tmp_path / "checkpoints" / "last.ckpt"
    assert str(error.value) == f"training interrupted by {how} in epoch 1 after 2 batches; resume with ckpt_path={last}"
    assert error.value.exit_code == exit_code
    interrupted = torch.load(last, weights_only=True)
    assert interrupted["global_step"] == (4 + 2) * 2  # six batches trained, two optimizer steps each
    assert isinstance(load_model(last), GAN)
    train(cfg_factory("trainer.max_epochs=2", *EPOCH, "ckpt_path=last"))
    # The resumed run trains the two batches left of epoch 1, not the whole epoch again.
    assert torch.load(last, weights_only=True)["global_step"] == 2 * 4 * 2


class _PoisonThenInterrupt(L.Callback):
    """D's weights turn NaN in the first batch of epoch 1 (no logging step shows it), then Ctrl-C."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.current_epoch == 1 and batch_idx == 0:
            with torch.no_grad():
                next(pl_module.discriminator.parameters()).fill_(float("nan"))
            raise KeyboardInterrupt


def test_an_interruption_does_not_save_weights_that_have_diverged(cfg_factory, tmp_path):
    sigint_handler = signal.getsignal(signal.SIGINT)
    try:
        with pytest.raises(
            TrainingInterrupted,
            match=r"in epoch 1 after 1 batch; not saved: the weights of D had become non-finite \(the last end-of-epoch checkpoint stays\)$",
        ):
            train(cfg_factory("trainer.max_epochs=2", "trainer.log_every_n_steps=3", *EPOCH), extra_callbacks=[_PoisonThenInterrupt()])
    finally:
        signal.signal(signal.SIGINT, sigint_handler)
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["epoch"] == 0 and last["global_step"] == 4 * 2  # epoch 0's, not the interrupted one
    assert all(torch.isfinite(value).all() for value in last["state_dict"].values() if value.is_floating_point())


# --- Bad input: one line, nothing written --------------------------------------------------


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.lr=abc", "model.lr must be a positive number, got abc"),
        ("model.lr_d=0", "model.lr_d must be a positive number, got 0"),
        ("data.batch_size=0", "data.batch_size must be a positive integer, got 0"),
        ("data.batch_size=abc", "data.batch_size must be a positive integer, got abc"),
        ("data.batch_size=1.5", "data.batch_size must be a positive integer, got 1.5"),
        ("trainer.max_epochs=0", "trainer.max_epochs must be a positive integer, got 0"),
        ("trainer.max_epochs=-1", "trainer.max_epochs must be a positive integer, got -1"),
        ("model.generator.latent_dim=abc", "model.generator.latent_dim must be a positive integer, got abc"),
    ],
)
def test_a_wrong_type_or_a_non_positive_size_is_refused_before_anything_is_written(cfg_factory, tmp_path, override, message):
    out = tmp_path / "run"
    with pytest.raises(ConfigError) as error:
        train(cfg_factory(override, output_dir=out))
    assert str(error.value) == message
    assert not out.exists()


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("truncate", r"train-images-idx3-ubyte holds \d+ bytes but its header \(240, 28, 28\) needs \d+: the file is truncated or corrupt"),
        ("bad_magic", r"t10k-labels-idx1-ubyte is not an uncompressed unsigned-byte IDX file \(bad magic number\)"),
        ("bad_label", r"train labels go up to 77, expected fewer than 10 classes"),
        ("missing", r"fashion_mnist not found in .*raw and no source could provide it"),
    ],
)
def test_damaged_idx_files_are_named_before_anything_is_written(tmp_path, damage, message):
    root, out = tmp_path / "data", tmp_path / "run"
    folder = write_tiny_dataset(root, "fashion_mnist")
    if damage == "truncate":
        images = folder / RAW_FILES["train_images"]
        images.write_bytes(images.read_bytes()[:-100])
    elif damage == "bad_magic":
        labels = folder / RAW_FILES["test_labels"]
        labels.write_bytes(b"\x00\x00\x0d\x01" + labels.read_bytes()[4:])
    elif damage == "bad_label":
        labels = folder / RAW_FILES["train_labels"]
        content = bytearray(labels.read_bytes())
        content[8] = 77  # the first label, after the 8-byte header
        labels.write_bytes(bytes(content))
    else:
        (folder / RAW_FILES["test_images"]).unlink()
    with pytest.raises(UserError, match=message) as error:
        train(make_cfg(ONE_EPOCH, out, root))
    assert "\n" not in str(error.value)
    assert _files(out) == []


def test_a_model_conditional_on_other_classes_than_the_data_is_refused(cfg_factory, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(ConfigError, match=r"^the model is conditional on 5 classes but fashion_mnist has 10$"):
        train(cfg_factory("model=cgan", "model.generator.num_classes=5", output_dir=out))
    assert _files(out) == []


def test_an_output_folder_that_cannot_be_written_is_refused_first(cfg_factory, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(ConfigError, match=r"^output folder .*a_file/run is not writable \(Not a directory\)$"):
        train(cfg_factory(output_dir=blocker / "run"))


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through permission bits")
def test_a_read_only_output_folder_is_refused_first(cfg_factory, tmp_path):
    out = tmp_path / "read_only"
    out.mkdir(mode=0o555)
    with pytest.raises(ConfigError, match=r"is not writable \(Permission denied\)"):
        train(cfg_factory(output_dir=out))


@pytest.mark.parametrize(
    ("ckpt", "message"),
    [
        ("missing", r"^checkpoint .*nothing\.ckpt not found$"),
        ("truncated", r"^.*truncated\.ckpt is truncated or corrupt \(.*\)$"),
        (
            "cgan",
            r"^.*last\.ckpt is from another model: model\.generator\.activation is 'relu' there, 'leaky_relu' here \(and \d+ more\); use the model overrides of the run that wrote it$",
        ),
        ("activation", r"^.*last\.ckpt is from another model: model\.generator\.activation is 'relu' there, 'leaky_relu' here"),
    ],
)
def test_a_bad_resume_checkpoint_is_refused_before_anything_is_written(cfg_factory, tmp_path, gan_ckpt, ckpt, message):
    out = tmp_path / "run"
    overrides = {"cgan": ["model=cgan"], "activation": ["model.generator.activation=leaky_relu"]}.get(ckpt, [])
    path = gan_ckpt
    if ckpt == "missing":
        path = tmp_path / "nothing.ckpt"
    elif ckpt == "truncated":
        path = tmp_path / "truncated.ckpt"
        path.write_bytes(gan_ckpt.read_bytes()[:1000])
    with pytest.raises(ConfigError, match=message):
        train(cfg_factory(*ONE_EPOCH, *overrides, f"ckpt_path={path}", output_dir=out))
    assert _files(out) == []


# --- The command line: exit codes and stderr (subprocesses) ----------------------------------


def _wait_for(path: Path, process: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, process.communicate()[1][-3000:]
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.2)


def test_ctrl_c_is_deferred_to_the_end_of_the_batch():
    """A KeyboardInterrupt raised mid-step can leave a lock held (see CheckpointOnInterrupt): the
    first Ctrl-C only takes effect at the next batch end, a second one at once."""
    callback = CheckpointOnInterrupt()
    # What a Python program starts with (a process started in the background inherits SIGINT ignored).
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    callback.on_fit_start(None, None)
    try:
        os.kill(os.getpid(), signal.SIGINT)  # handled before kill returns: no KeyboardInterrupt here
        with pytest.raises(KeyboardInterrupt):
            callback.on_train_batch_end(None, None, None, None, 0)
        callback.on_train_batch_end(None, None, None, None, 1)  # raised once, not on every later batch
        os.kill(os.getpid(), signal.SIGINT)
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    finally:
        callback.teardown(None, None, "fit")
        restored = signal.getsignal(signal.SIGINT)
        signal.signal(signal.SIGINT, previous)
    assert restored is signal.default_int_handler


@pytest.mark.slow
# The signal lands at a random batch: resuming mid-epoch is expected here, and Lightning says so.
@pytest.mark.filterwarnings("ignore:You're resuming from a checkpoint that ended before the epoch ended")
@pytest.mark.parametrize(("sig", "exit_code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)], ids=["SIGTERM", "SIGINT"])
def test_a_signalled_run_exits_with_one_line_and_a_resumable_checkpoint(tmp_path, data_root, sig, exit_code):
    run_dir = tmp_path / "run"
    last = run_dir / "checkpoints" / "last.ckpt"
    process = start_train(*tiny_run(data_root, run_dir, "trainer.max_epochs=1000"), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _wait_for(run_dir / "samples" / "epoch_001.png", process)
    process.send_signal(sig)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == exit_code, stderr[-3000:]
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and re.match(rf"error: training interrupted by {sig.name} (in|at the end of) epoch ", errors[0]), stderr[-3000:]
    assert f"resume with ckpt_path={last}" in errors[0] and "Traceback" not in stderr
    assert sorted(p.name for p in last.parent.iterdir()) == ["best.ckpt", "last.ckpt"]  # no temporary file left
    interrupted = torch.load(last, weights_only=True)
    assert isinstance(load_model(last), GAN)
    resumed_to = interrupted["epoch"] + 2
    train(make_cfg(["trainer.max_epochs=" + str(resumed_to), "ckpt_path=last"], run_dir, data_root))
    assert torch.load(last, weights_only=True)["global_step"] > interrupted["global_step"]


@pytest.mark.slow
def test_a_killed_run_keeps_its_last_end_of_epoch_checkpoint(tmp_path, data_root):
    run_dir = tmp_path / "run"
    last = run_dir / "checkpoints" / "last.ckpt"
    process = start_train(*tiny_run(data_root, run_dir, "trainer.max_epochs=1000"), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _wait_for(run_dir / "samples" / "epoch_001.png", process)
    time.sleep(1.0)  # a few more epochs, so the kill may land in the middle of one (or of a write)
    process.kill()
    process.communicate(timeout=60)
    checkpoint = torch.load(last, weights_only=True)
    assert checkpoint["global_step"] % (4 * 2) == 0  # an end-of-epoch checkpoint: 4 batches of 60, two steps each
    assert isinstance(load_model(last), GAN)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("model.lr=abc", "error: model.lr must be a positive number, got abc"),
        ("unwritable", "is not writable (Not a directory)"),
        ("unwritable_named_by_model", "is not writable (Not a directory)"),
        ("missing_ckpt", "nothing.ckpt not found"),
        (
            "+trainer.foo=1",
            "error: trainer (lightning.pytorch.Trainer) refuses its settings: Trainer.__init__() got an unexpected keyword argument 'foo'",
        ),
        ("trainer.devices=3", "error: trainer.devices=3 needs the project's DDP strategy"),
        ("model.optimizer._target_=torch.optim.SGD", "error: model.optimizer (torch.optim.SGD) refuses its arguments"),
        # Hydra's own errors, condensed to one line by src.errors.run_entry_point:
        ("trainer.foo=1", "error: Could not override 'trainer.foo'. To append to your config use +trainer.foo=1. Key 'foo' is not in struct."),
        ("model=nope", "error: In 'train': Could not find 'model/nope'. Available options in 'model': cgan, dcgan, dcgan_cond, gan, gan_mnist."),
        ("model.lr=[", "error: no viable alternative at input '['."),
    ],
)
def test_bad_input_on_the_command_line_is_one_line(tmp_path, data_root, case, message):
    run_dir = tmp_path / "run"
    extra = [case] if "=" in case else []
    if case.startswith("unwritable"):
        (tmp_path / "a_file").write_text("")
        run_dir = tmp_path / "a_file" / ("${hydra:runtime.choices.model}" if case.endswith("model") else "run")
    if case == "missing_ckpt":
        extra = [f"ckpt_path={tmp_path / 'nothing.ckpt'}"]
    process = start_train(*tiny_run(data_root, run_dir, "trainer.max_epochs=1", *extra), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 1
    errors = [line for line in stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and message in errors[0], stderr[-3000:]
    assert "Traceback" not in stderr
    assert not (run_dir / "checkpoints").exists() and not (run_dir / "tensorboard").exists()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["callbacks.sample_quality.every_n_epochs=0"], "callbacks.sample_quality.every_n_epochs must be a positive integer, got 0"),
        (["callbacks.sample_quality.num_samples=5"], "callbacks.sample_quality.num_samples must be an integer of at least 10"),
        (["+callbacks.sample_grid.every_n_epochs=0"], "callbacks.sample_grid.every_n_epochs must be a positive integer, got 0"),
        (["model.sample_rows=0"], "model.sample_rows must be a positive integer, got 0"),
        (["seed=abc"], r"seed must be an integer in \[0, 2\*\*32\), got 'abc'"),
        (["model=cgan", "model.discriminator.dropout=1.5"], r"model.discriminator.dropout must be in \[0, 1\) \(0 = off\), got 1.5"),
        (["model.generator.img_shape=[1,32,32]"], r"model.generator.img_shape is \[1, 32, 32\] but fashion_mnist's images are \[1, 28, 28\]"),
        (["~callbacks.sample_quality"], r"remove both \(~callbacks.sample_quality ~callbacks.best_checkpoint\)"),
        (["callbacks.sample_quality=null"], r"remove both \(~callbacks.sample_quality ~callbacks.best_checkpoint\)"),
    ],
)
def test_bad_settings_are_refused_before_anything_is_written(cfg_factory, tmp_path, overrides, message):
    with pytest.raises(Exception) as caught:
        train(cfg_factory(*overrides, "trainer.max_epochs=1"))
    shown = user_error(caught.value)  # what main() prints as its one line
    assert isinstance(shown, ConfigError) and re.search(message, str(shown)), caught.value
    assert not (tmp_path / "checkpoints").exists() and not (tmp_path / "tensorboard").exists()


def test_training_without_scoring_removes_both_quality_callbacks(cfg_factory, tmp_path):
    train(cfg_factory("~callbacks.sample_quality", "~callbacks.best_checkpoint", "trainer.max_epochs=1", "+trainer.limit_train_batches=2"))
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["last.ckpt"]
