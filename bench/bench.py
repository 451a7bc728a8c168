"""Side-by-side training throughput: the seed loops, a framework-free loop, and the project.

    python bench/bench.py                       # CPU, both presets, 3 interleaved repeats
    python bench/bench.py --device cuda --batches 600
    make bench

For each preset (`gan`, `cgan`) it measures images/s of
  seed       the seed tutorial's loop exactly as written (seed 000, docs/seeds.md): torchvision
             dataset + per-sample ToTensor/Normalize + DataLoader, G run twice for the cGAN;
  plain      the project's training step (same models, optimizer, data path) in a bare loop:
             the framework-free floor;
  barebones  the project's LightningModule and data under `Trainer(barebones=True)`, Lightning's
             own minimal mode (no logger, callbacks, checkpoints or progress bar): Lightning's
             floor, which tells its loop's cost apart from what the project's config adds;
  lightning  the project's `train(cfg)`: Lightning, Hydra config, logger and callbacks;
  lightning_k5  the same with data.batches_per_step=5: five batches per training step, so
             Lightning's per-step cost is paid once per five batches (the same weights).
Those on the seeds' math (bce, no R1), so that every loop does the same work. Then the
preset's own recipe (what `python -m src.train` trains: R1 and all) through `train(cfg)`:
  recipe         as configured;
  recipe_k5      with data.batches_per_step=5;
  recipe_r1_1    R1 on every batch (model.r1_every=1);
  recipe_no_r1   without R1 (model.r1_gamma=0): the floor the R1 penalty is measured against;
  recipe_bf16    with bf16 autocast (trainer.precision=bf16-mixed).
Each measurement runs in its own subprocess (so peak memory is its own), repeats are
interleaved (seed, plain, lightning, seed, ...) because this machine is shared and noisy,
and the table reports medians and the ratios between them.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
# The preset's own recipe, through train(cfg), with these overrides.
K = 5  # batches per training step of the *_k5 kinds (a divisor of log_every_n_steps, 50)
RECIPE_KINDS = {
    "recipe": [],
    "recipe_k5": [f"data.batches_per_step={K}"],
    "recipe_r1_1": ["model.r1_every=1"],
    "recipe_no_r1": ["model.r1_gamma=0"],
    "recipe_bf16": ["trainer.precision=bf16-mixed"],
}
KINDS = ("seed", "plain", "barebones", "lightning", "lightning_k5", *RECIPE_KINDS)
SEED_BATCH_SIZE = 100  # both seed-000 loops


def _peaks() -> dict[str, float]:
    peaks = {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if torch.cuda.is_available():
        peaks["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return peaks


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _timed(batches, step, warmup: int, measured: int, device: torch.device, marks: list | None = None) -> float:
    """Images/s over `measured` batches after `warmup` batches; `batches` is re-iterated as needed.
    ``marks`` gets (batches measured, time) after each batch (for :func:`best_window`)."""
    done, images, start = 0, 0, None
    while True:
        for batch in batches:
            if done == warmup:
                _sync(device)
                start = time.perf_counter()
                if marks is not None:
                    marks.append((0, start))
            step(batch)
            done += 1
            if done > warmup:
                images += batch[0].size(0)
                if marks is not None:
                    marks.append((done - warmup, time.perf_counter()))
            if done == warmup + measured:
                _sync(device)
                return images / (time.perf_counter() - start)


def best_window(marks: list[tuple[int, float]], window: int, batch_size: int) -> float:
    """Images/s of the fastest stretch of at least ``window`` batches between two marks: on a
    shared machine interference only ever slows a stretch down, so the fastest is the least
    disturbed measure of a loop's own speed (timeit's advice to take the minimum)."""
    best, window = 0.0, min(window, marks[-1][0] - marks[0][0])  # a run shorter than the window: the whole run
    for i, (batches_i, time_i) in enumerate(marks):
        for batches_j, time_j in marks[i + 1 :]:
            if batches_j - batches_i >= window:
                best = max(best, (batches_j - batches_i) * batch_size / (time_j - time_i))
                break
    return best


# The seed loops' math (bce, no R1 penalty), so that every contender does the same work per
# batch: the presets' searched recipe adds an R1 penalty (docs/recipes.md), whose cost is
# measured apart with bench/epoch_time.py (BENCHMARKS.md, "The default recipe's cost").
SEED_MATH = ["model.loss=bce", "model.r1_gamma=0"]


def _compose(preset: str, data_dir: str, overrides: list[str], output_dir: str | None = None, seed_math: bool = True):
    """The preset's training config on the seeds' math (or, ``seed_math=False``, its own recipe);
    ``output_dir``: a fresh folder of the run's own for ``train()`` (its run-folder guard refuses a
    second run into one folder); the plain and barebones loops write nothing, and get a path of
    this process's that is never made."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        base = [
            f"model={preset}",
            f"data_dir={data_dir}",
            f"paths.output_dir={output_dir or Path(tempfile.gettempdir()) / f'bench-unused-{os.getpid()}'}",
            *(SEED_MATH if seed_math else []),
        ]
        return compose("train", overrides=[*base, *overrides])


# --- (a) the seed loops, as written in seed 000, docs/seeds.md ------------------------------------


def seed_gan_models():
    from torch import nn

    G = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 784), nn.Tanh())
    D = nn.Sequential(nn.Linear(784, 256), nn.LeakyReLU(0.2), nn.Linear(256, 256), nn.LeakyReLU(0.2), nn.Linear(256, 1), nn.Sigmoid())
    return G, D


def seed_cgan_models():
    from torch import nn

    class Generator(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(10, 10)
            self.model = nn.Sequential(
                nn.Linear(110, 256),
                nn.LeakyReLU(0.2, inplace=True),
                nn.Linear(256, 512),
                nn.LeakyReLU(0.2, inplace=True),
                nn.Linear(512, 1024),
                nn.LeakyReLU(0.2, inplace=True),
                nn.Linear(1024, 784),
                nn.Tanh(),
            )

        def forward(self, z, labels):
            return self.model(torch.cat([z, self.embed(labels)], 1))

    class Discriminator(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(10, 10)
            self.model = nn.Sequential(
                nn.Linear(794, 1024),
                nn.LeakyReLU(0.2, inplace=True),
                nn.Dropout(0.3),
                nn.Linear(1024, 512),
                nn.LeakyReLU(0.2, inplace=True),
                nn.Dropout(0.3),
                nn.Linear(512, 256),
                nn.LeakyReLU(0.2, inplace=True),
                nn.Dropout(0.3),
                nn.Linear(256, 1),
                nn.Sigmoid(),
            )

        def forward(self, x, labels):
            return self.model(torch.cat([x, self.embed(labels)], 1))

    return Generator(), Discriminator()


def seed_loop(preset: str, args):
    """The seed tutorial's (seed 000) data loader and training step, as written: (loader, step, device)."""
    from torch import nn, optim
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms

    DEVICE = torch.device(args.device)
    BATCH_SIZE = SEED_BATCH_SIZE
    trainset = datasets.FashionMNIST(
        args.data_dir, train=True, transform=transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.5,), (0.5,))])
    )
    train_loader = DataLoader(trainset, batch_size=BATCH_SIZE, shuffle=True)
    G, D = seed_gan_models() if preset == "gan" else seed_cgan_models()
    D, G = D.to(DEVICE), G.to(DEVICE)
    criterion = nn.BCELoss()
    d_optimizer = optim.Adam(D.parameters(), lr=0.0002)
    g_optimizer = optim.Adam(G.parameters(), lr=0.0002)

    def gan_step(batch):
        images, _ = batch
        images = images.reshape(BATCH_SIZE, -1).to(DEVICE)
        real_labels = torch.ones(BATCH_SIZE, 1).to(DEVICE)
        fake_labels = torch.zeros(BATCH_SIZE, 1).to(DEVICE)
        outputs = D(images)
        d_loss_real = criterion(outputs, real_labels)
        z = torch.randn(BATCH_SIZE, 64).to(DEVICE)
        fake_images = G(z)
        outputs = D(fake_images)
        d_loss_fake = criterion(outputs, fake_labels)
        d_loss = d_loss_real + d_loss_fake
        d_optimizer.zero_grad()
        g_optimizer.zero_grad()
        d_loss.backward()
        d_optimizer.step()
        fake_images = G(z)
        outputs = D(fake_images)
        g_loss = criterion(outputs, real_labels)
        d_optimizer.zero_grad()
        g_optimizer.zero_grad()
        g_loss.backward()
        g_optimizer.step()

    def cgan_step(batch):
        images, labels = batch
        images = images.reshape(BATCH_SIZE, -1).to(DEVICE)
        real_labels = torch.ones(BATCH_SIZE, 1).to(DEVICE)
        fake_labels = torch.zeros(BATCH_SIZE, 1).to(DEVICE)
        labels = labels.to(DEVICE)
        outputs = D(images, labels)
        d_loss_real = criterion(outputs, real_labels)
        z = torch.randn(BATCH_SIZE, 100).to(DEVICE)
        g_label = torch.randint(0, 10, (BATCH_SIZE,)).to(DEVICE)
        fake_images = G(z, g_label)
        outputs = D(fake_images, g_label)
        d_loss_fake = criterion(outputs, fake_labels)
        d_loss = d_loss_real + d_loss_fake
        d_optimizer.zero_grad()
        g_optimizer.zero_grad()
        d_loss.backward()
        d_optimizer.step()
        fake_images = G(z, g_label)
        outputs = D(fake_images, g_label)
        g_loss = criterion(outputs, real_labels)
        d_optimizer.zero_grad()
        g_optimizer.zero_grad()
        g_loss.backward()
        g_optimizer.step()

    return train_loader, gan_step if preset == "gan" else cgan_step, DEVICE


def run_seed(preset: str, args) -> float:
    train_loader, step, device = seed_loop(preset, args)
    return _timed(train_loader, step, args.warmup, args.batches, device)


# --- (b) the project's step without Lightning ---------------------------------------------


def plain_step(gan, opt_g: torch.optim.Optimizer, opt_d: torch.optim.Optimizer):
    """The project's training step (GAN.training_step, bce) as a bare PyTorch function of a batch."""
    from src import losses

    G, D = gan.generator, gan.discriminator

    def step(batch):
        real, real_labels = batch
        real_labels = real_labels if gan.conditional else None
        z, fake_labels = gan._draw(real.size(0))
        fake = G(z, fake_labels)
        D.requires_grad_(True)
        G.requires_grad_(False)
        d_real, d_fake = gan._discriminate_real_and_fake(real, real_labels, fake.detach(), fake_labels)
        d_loss = losses.d_loss("bce", d_real, d_fake)
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()
        D.requires_grad_(False)
        G.requires_grad_(True)
        g_loss = losses.g_loss("bce", D(fake, fake_labels))
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        opt_g.step()
        if gan.generator_ema is not None:  # model.ema_decay (on in gan/cgan): part of the project's step
            gan.generator_ema.update_parameters(G)

    return step


def run_plain(preset: str, args, marks: list | None = None) -> float:
    from hydra.utils import instantiate

    from src.data.loaders import EpochSampler, TensorLoader
    from src.devices import skip_nvml_probe_without_gpu
    from src.gan_module import GAN

    device = torch.device(args.device)
    cfg = _compose(preset, args.data_dir, [f"data.batch_size={SEED_BATCH_SIZE}", *args.override])
    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("fit")
    train_set = datamodule.train_set
    loader = TensorLoader(train_set.data.unsqueeze(1), train_set.targets, datamodule.batch_size, EpochSampler(len(train_set), True, 0), device)
    gan: GAN = instantiate(cfg.model).to(device)
    skip_nvml_probe_without_gpu()  # what GAN.setup does in the project's runs
    return _timed(loader, plain_step(gan, *gan.build_optimizers()), args.warmup, args.batches, device, marks)


# --- (c) the project through Lightning -----------------------------------------------------


def _throughput_callback(args, result: dict):
    """Images/s over batches [warmup, warmup + batches) of a Lightning run, into result; a training
    step may train several batches (data.batches_per_step), so batches are counted, not steps."""
    import lightning as L

    from src.data.loaders import step_batches

    class Throughput(L.Callback):
        def __init__(self):
            self.seen, self.start, self.images = 0, None, 0
            result["marks"] = []

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if self.start is None and self.seen >= args.warmup:
                _sync(pl_module.device)
                self.start, self.first = time.perf_counter(), self.seen
                result["marks"].append((0, self.start))

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            batches = step_batches(batch)
            self.seen += len(batches)
            if self.start is not None:
                self.images += sum(one[0].size(0) for one in batches)
                result["marks"].append((self.seen - self.first, time.perf_counter()))
            if self.start is not None and self.seen >= args.warmup + args.batches:
                _sync(pl_module.device)
                result["images_per_s"] = self.images / (time.perf_counter() - self.start)

    return Throughput()


def _accelerator(args) -> str:
    return "gpu" if args.device.startswith("cuda") else "cpu"


def run_barebones(preset: str, args) -> float:
    import lightning as L
    from hydra.utils import instantiate

    cfg = _compose(preset, args.data_dir, [f"data.batch_size={SEED_BATCH_SIZE}", *args.override])
    L.seed_everything(cfg.seed, verbose=False)
    result = {}
    trainer = L.Trainer(
        barebones=True,
        accelerator=_accelerator(args),
        devices=1,
        precision=cfg.trainer.precision,
        max_epochs=1,
        limit_train_batches=args.warmup + args.batches,
        limit_val_batches=0,
        callbacks=[_throughput_callback(args, result)],
    )
    trainer.fit(instantiate(cfg.model), datamodule=instantiate(cfg.data))
    return result["images_per_s"]


def run_lightning(preset: str, args, recipe: list[str] | None = None, seed_overrides: tuple[str, ...] = (), marks: list | None = None) -> float:
    """``train(cfg)`` on the seeds' math (with ``seed_overrides``), or with ``recipe`` (a list of
    overrides) on the preset's own recipe; ``marks`` as :func:`_timed`'s."""
    from src.train import train

    result = {}
    run_dir = tempfile.TemporaryDirectory(prefix="bench-run-")
    cfg = _compose(
        preset,
        args.data_dir,
        [
            *(recipe or seed_overrides),
            f"data.batch_size={SEED_BATCH_SIZE}",
            f"trainer.accelerator={_accelerator(args)}",
            "trainer.max_epochs=1",
            f"+trainer.limit_train_batches={args.warmup + args.batches}",
            "+trainer.limit_val_batches=0",
            "+trainer.num_sanity_val_steps=0",
            "+trainer.enable_model_summary=false",
            *args.override,
        ],
        output_dir=run_dir.name,
        seed_math=recipe is None,
    )
    with run_dir:
        train(cfg, extra_callbacks=[_throughput_callback(args, result)])
    if marks is not None:
        marks.extend(result["marks"])
    return result["images_per_s"]


RUNNERS = {
    "seed": run_seed,
    "plain": run_plain,
    "barebones": run_barebones,
    "lightning": run_lightning,
    "lightning_k5": lambda preset, args: run_lightning(preset, args, seed_overrides=[f"data.batches_per_step={K}"]),
    **{kind: (lambda preset, args, overrides=overrides: run_lightning(preset, args, overrides)) for kind, overrides in RECIPE_KINDS.items()},
}


def one(args) -> None:
    images_per_s = RUNNERS[args.one](args.preset, args)
    print(json.dumps({"images_per_s": images_per_s, **_peaks()}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", nargs="+", default=["gan", "cgan"])
    parser.add_argument("--kinds", nargs="+", default=list(KINDS), choices=KINDS)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--data-dir", default="data")
    parser.add_argument("--batches", type=int, default=300, help="measured batches per run")
    parser.add_argument("--warmup", type=int, default=20, help="batches run before timing starts")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--override", nargs="*", default=[], help="Hydra overrides for plain, barebones and lightning, e.g. model.optimizer.fused=true"
    )
    parser.add_argument("--one", choices=KINDS, help=argparse.SUPPRESS)
    parser.add_argument("--preset", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        return one(args)

    from src.data.provision import provision

    provision("fashion_mnist", args.data_dir)
    print(
        f"device={args.device} torch={torch.__version__} threads={torch.get_num_threads()} cpus={os.cpu_count()} "
        f"batch={SEED_BATCH_SIZE} measured_batches={args.batches} repeats={args.repeats} overrides={args.override}"
    )
    results: dict[tuple[str, str], list[dict]] = {}
    for repeat in range(args.repeats):
        for preset in args.presets:
            for kind in args.kinds:
                cmd = [
                    sys.executable,
                    __file__,
                    "--one",
                    kind,
                    "--preset",
                    preset,
                    "--device",
                    args.device,
                    "--data-dir",
                    args.data_dir,
                    "--batches",
                    str(args.batches),
                    "--warmup",
                    str(args.warmup),
                    "--override",
                    *args.override,
                ]
                out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
                if out.returncode != 0:
                    sys.exit(f"{kind}/{preset} failed:\n{out.stderr[-3000:]}")
                record = json.loads(out.stdout.strip().splitlines()[-1])
                results.setdefault((preset, kind), []).append(record)
                print(f"  repeat {repeat + 1}: {preset:5s} {kind:9s} {record['images_per_s']:9.0f} images/s", flush=True)

    print()
    print(
        "| preset | loop | images/s (median) | ms per batch | vs seed | vs plain (recipe_*: vs no-R1) | peak RSS MB |"
        + (" peak GPU MB |" if args.device.startswith("cuda") else "")
    )
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |" + (" ---: |" if args.device.startswith("cuda") else ""))
    for preset in args.presets:
        median = {kind: statistics.median(r["images_per_s"] for r in results[(preset, kind)]) for kind in args.kinds}
        for kind in args.kinds:
            records = results[(preset, kind)]
            vs_seed = f"{median[kind] / median['seed']:.2f}×" if "seed" in median else "-"
            # The recipe's variants against the recipe without R1; the seed-math loops against the plain loop.
            base = "recipe_no_r1" if kind in RECIPE_KINDS else "plain"
            vs_plain = f"{median[kind] / median[base]:.2f}× {'no-R1' if base != 'plain' else ''}".strip() if base in median else "-"
            row = f"| {preset} | {kind} | {median[kind]:,.0f} | {SEED_BATCH_SIZE / median[kind] * 1e3:.2f} | {vs_seed} | {vs_plain} | {max(r['peak_rss_mb'] for r in records):,.0f} |"
            if args.device.startswith("cuda"):
                row += f" {max(r.get('peak_gpu_mb', 0) for r in records):,.0f} |"
            print(row)


if __name__ == "__main__":
    main()
