"""Training benchmark: images/s of carprobe's training loop vs a bare torch loop.

Both run in this process with the same model (same arch, size, initial weights), the same
images (a synthetic image folder written to a temp dir and decoded from PNG by the same
dataset and transform), the same class-balanced batches, loss and miner, optimizer and device.

- ours: ``analysis.train.loop.Trainer.train_epoch`` (per-epoch DataLoader seeded by epoch,
  tqdm bar, L2 norm, TrainingLoss wrapper, AMP scaler (on CUDA), on-device loss sum);
- bare: a plain ``for x, y in loader: loss(model(x)) → backward → step`` loop.

The per-epoch evaluation (embedding test and train images, metrics) is timed separately and is
not part of the ratio. Alternating repeats; the time-per-image ratio ours/bare is taken per
repeat (min / median / max), with CPU time per side, the load average and a verdict that says
when the machine was too loaded to conclude (a ratio of per-side medians hid that: 2.03 and
1.50 under load). Target: overhead < 10 % (ratio <= 1.10).

Usage: python bench/train.py [--arch resnet18] [--size 64] [--batch-size 32] [--steps 20]
       [--repeats 2] [--loss multisimilarity] [--device cpu|cuda] [--workers 2]
Exits 0 either way (a benchmark, not a test).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "analysis"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from analysis.train.config import TrainConfig  # noqa: E402
from analysis.train.data import LabelledDataset  # noqa: E402
from analysis.train.loop import Trainer  # noqa: E402
from paired import Timed, compare, load_average  # noqa: E402


def synthetic_folder(root: Path, classes: int, per_class: int, size: int) -> Path:
    """`classes` classes (hues), cycled from the synthetic test set's hue classes."""
    import numpy as np
    from train_synthetic import SHAPES, draw_shape

    rng = np.random.default_rng(0)
    for c in range(classes):
        folder = root / f"class_{c:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        for k in range(per_class):
            draw_shape(SHAPES[c % len(SHAPES)], size, rng).save(folder / f"{k:03d}.png")
    return root


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bare_epoch(trainer: Trainer, model, loss, optimizer, epoch: int, use_amp: bool, scaler) -> tuple[int, float, float]:
    """The reference: the same batches through a plain loop."""
    from torch.utils.data import DataLoader

    device = trainer.device
    trainer.sampler.set_epoch(epoch)
    loader = DataLoader(LabelledDataset(trainer.train_images, trainer.train_transform),
                        batch_sampler=trainer.sampler, num_workers=trainer.config.workers,
                        pin_memory=device.type == "cuda", prefetch_factor=4 if trainer.config.workers else None)
    model.train()
    seen = 0
    sync(device)
    start, cpu_start = time.perf_counter(), time.process_time()
    for images, labels in loader:
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        with torch.autocast(device_type="cuda", dtype=torch.float16, enabled=use_amp):
            raw = model(images)
        value = loss(F.normalize(raw.float(), dim=1), labels)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(value).backward()
        scaler.step(optimizer)
        scaler.update()
        seen += len(labels)
    sync(device)
    return seen, time.perf_counter() - start, time.process_time() - cpu_start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="resnet18")
    parser.add_argument("--size", type=int, default=64, help="image side in pixels")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--samples-per-class", type=int, default=2)
    parser.add_argument("--steps", type=int, default=20, help="batches per timed epoch")
    parser.add_argument("--repeats", type=int, default=4, help="timed epochs per side (alternating)")
    parser.add_argument("--loss", default="multisimilarity")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--no-amp", action="store_true")
    args = parser.parse_args(argv)

    classes_per_batch = args.batch_size // args.samples_per_class
    n_classes = 2 * classes_per_batch  # half train, half test
    per_class = max(args.samples_per_class * 2, -(-args.steps * args.batch_size // classes_per_batch))
    with tempfile.TemporaryDirectory() as tmp:
        data = synthetic_folder(Path(tmp) / "data", n_classes, per_class, args.size)
        config = TrainConfig(data=str(data), loss=args.loss, arch=args.arch, dim=128, image_size=args.size,
                             batch_size=args.batch_size, samples_per_class=args.samples_per_class, lr=1e-5,
                             device=args.device, workers=args.workers, amp=not args.no_amp, epochs=1)
        trainer = Trainer(config, Path(tmp) / "run", progress=True, log=lambda text: None)
        trainer.out.mkdir(parents=True, exist_ok=True)
        trainer._setup()
        trainer.sampler.batches_per_epoch = args.steps
        # the bare loop trains its own copy of the same model, loss and optimizer
        import copy

        bare_model = copy.deepcopy(trainer.model)
        bare_loss = copy.deepcopy(trainer.loss)
        groups = [{"params": [p for p in bare_model.parameters() if p.requires_grad], "lr": config.lr}]
        if bare_loss.parameters():
            groups.append({"params": bare_loss.parameters(), "lr": trainer.config.loss_lr})
        bare_optimizer = torch.optim.Adam(groups, weight_decay=config.weight_decay)
        bare_scaler = torch.amp.GradScaler("cuda", enabled=trainer.use_amp)
        device = trainer.device
        print(f"bench/train.py: {args.arch} {args.size}px, batch {args.batch_size} ({args.samples_per_class} per "
              f"class), loss {args.loss}, {args.steps} steps/epoch, device {device}"
              f"{' (AMP)' if trainer.use_amp else ''}, workers {args.workers}, torch threads {torch.get_num_threads()}")
        load_before = load_average()
        # warm-up (allocator, cudnn autotune, worker start, Adam state), untimed
        trainer.sampler.batches_per_epoch = 2
        trainer.train_epoch(0)
        bare_epoch(trainer, bare_model, bare_loss, bare_optimizer, 0, trainer.use_amp, bare_scaler)
        trainer.sampler.batches_per_epoch = args.steps
        # per image, so that both sides compare even if an epoch's image count differed
        ours, bare = Timed(), Timed()
        for r in range(args.repeats):
            for side in (("bare", "ours") if r % 2 == 0 else ("ours", "bare")):
                if side == "ours":
                    sync(device)
                    cpu_start = time.process_time()
                    stats = trainer.train_epoch(r + 1)
                    ours.cpu.append((time.process_time() - cpu_start) / stats["images"])
                    ours.wall.append(stats["train_s"] / stats["images"])
                else:
                    seen, seconds, cpu = bare_epoch(trainer, bare_model, bare_loss, bare_optimizer, r + 1,
                                                    trainer.use_amp, bare_scaler)
                    bare.wall.append(seconds / seen)
                    bare.cpu.append(cpu / seen)
                timing = ours if side == "ours" else bare
                print(f"  repeat {r + 1} {side}: {1 / timing.wall[-1]:.1f} images/s", flush=True)
        start = time.perf_counter()
        metrics = trainer.evaluate()
        eval_s = time.perf_counter() - start
        n_eval = len(trainer.test_images) + len(trainer.eval_train_paths)
    o, b = 1 / statistics.median(ours.wall), 1 / statistics.median(bare.wall)
    print(f"ours {o:.1f} images/s, bare {b:.1f} images/s (medians)")
    # CPU time: this process only (data loading is in it only with --workers 0)
    compare("time per image ours/bare (target: overhead < 10 %)", "ours", ours, "bare", bare, 1.10,
            higher_is_better=False, load_before=load_before)
    print(f"per-epoch evaluation (excluded above): {eval_s:.2f} s for {n_eval} images "
          f"(Recall@1 {metrics['recall@1']:.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
