"""The training loop of `carprobe train`.

``train(config, out_dir, resume=False)`` trains one model with one loss and leaves in `out_dir`:

    config.json   the TrainConfig as run (loss defaults filled in)
    metrics.csv   one row per epoch (epoch 0 = the untrained model): training loss, lr, time,
                  images/s; Recall@k, R-Precision, MAP@R, NMI on the test classes; π_intra,
                  π_inter, π_ratio (density) and spectral decay of the train embeddings
    last.pt       after every complete epoch (atomic), with everything --resume needs
    best.pt       the epoch with the highest test Recall@1 so far

Both checkpoints are carprobe model files: ``analysis.models.load_model("run/best.pt")`` (and so
`carprobe embed/silhouettes/saliency/report`) read them. last.pt carries an extra
``train_state`` entry (optimizer, loss parameters, AMP scaler, RNG states, epoch, best score).

Ctrl-C stops at once; the last complete epoch's checkpoint stays, and ``--resume`` continues
from it. Augmentation and batch order are a pure function of (seed, epoch) (a DataLoader is
made per epoch with a generator seeded by both), and the global RNG states are restored, so a
resumed run with `workers = 0` repeats the uninterrupted one exactly on the CPU.
"""

from __future__ import annotations

import csv
import io
import math
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from analysis.data import ImageReadError, loader_error_message
from analysis.embed import auto_workers, embed_paths
from analysis.metrics.retrieval import retrieval_metrics
from analysis.metrics.space import embedding_space_metrics
from analysis.models import (Preprocess, arch_preprocess, atomic_torch_save, build_model, resolve_device,
                             save_checkpoint)
from blender_addon.core.errors import CarprobeError
from blender_addon.core.render_set import atomic_write_text

from .config import TrainConfig
from .data import LabelledDataset, load_labelled_images, split_classes, train_transform
from .losses import build_loss
from .sampler import ClassBalancedBatchSampler

METRICS_FILE = "metrics.csv"
LAST, BEST = "last.pt", "best.pt"
# Settings a resumed run may change: they do not change what is trained.
RESUMABLE_CHANGES = ("epochs", "device", "workers", "amp", "eval_batch_size")
SYNC_EVERY = 25  # steps between reading the loss on the host (NaN check, progress bar)


@dataclass
class TrainResult:
    run_dir: Path
    epochs: int                    # complete epochs in the run
    best_epoch: int | None
    best_recall_at_1: float | None
    metrics: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class StepInfo:
    """What a step hook sees (tests use it to interrupt a run at a chosen point)."""
    epoch: int
    step: int
    loss: float


def model_preprocess(arch: str, image_size: int) -> Preprocess:
    """The arch's own preprocessing at `image_size`: test Resize(size · 256/224) + CenterCrop(size)."""
    return arch_preprocess(arch, image_size)


def lr_factor(config: TrainConfig, epoch: int) -> float:
    """Multi-step schedule: lr · gamma^(milestones already passed) for 1-based `epoch`."""
    return config.lr_gamma ** sum(1 for m in config.lr_milestones if epoch > m)


class Trainer:
    def __init__(self, config: TrainConfig | None, out_dir: str | Path, resume: bool = False,
                 progress: bool = True, on_step: Callable[[StepInfo], None] | None = None,
                 log: Callable[[str], None] | None = None, overrides: dict[str, Any] | None = None):
        self.out = Path(out_dir)
        self.progress = progress
        self.on_step = on_step
        self.log = log or (lambda text: print(text, file=sys.stderr))
        if resume:
            config = self._resume_config(dict(overrides or {}))
        else:
            if config is None:
                raise CarprobeError("a new training run needs a TrainConfig")
            if overrides:
                import dataclasses

                config = dataclasses.replace(config, **overrides)
            if (self.out / LAST).exists() or (self.out / METRICS_FILE).exists():
                raise CarprobeError(f"--out {self.out}: holds a training run already (last.pt/metrics.csv); "
                                    "continue it with --resume or choose another folder")
            config = config.resolved()
        self.config = config
        self.resume = resume

    # --- set-up ---------------------------------------------------------------------------
    def _resume_config(self, overrides: dict[str, Any]) -> TrainConfig:
        import dataclasses

        if not (self.out / LAST).is_file():
            raise CarprobeError(f"--resume: {self.out / LAST} not found; nothing to resume (start without --resume)")
        stored = TrainConfig.read(self.out)
        def same(name: str, value: Any) -> bool:
            if name in ("data", "weights") and value is not None and getattr(stored, name) is not None:
                return Path(value).resolve() == Path(getattr(stored, name)).resolve()
            if name in ("loss_params", "miner_params") and isinstance(value, dict):
                # given with or without the loss table's defaults: compare them filled in, as stored
                return getattr(dataclasses.replace(stored, **{name: dict(value)}).resolved(), name) == \
                    getattr(stored, name)
            return value == getattr(stored, name)

        different = [f"{name} {value!r} (the run has {getattr(stored, name)!r})"
                     for name, value in overrides.items() if name not in RESUMABLE_CHANGES and not same(name, value)]
        if different:
            raise CarprobeError(f"--resume: {', '.join(different)}; a resumed run may only change "
                                f"{', '.join(RESUMABLE_CHANGES)}")
        return dataclasses.replace(stored, **{k: v for k, v in overrides.items() if k in RESUMABLE_CHANGES}).validate()

    def _setup(self) -> None:
        cfg = self.config
        self.device = resolve_device(cfg.device)
        self.use_amp = bool(cfg.amp) and self.device.type == "cuda"
        random.seed(cfg.seed)
        np.random.seed(cfg.seed)
        torch.manual_seed(cfg.seed)
        images = load_labelled_images(cfg.data, cfg.label)
        self.train_images, self.test_images = split_classes(images)
        self.sampler = ClassBalancedBatchSampler(self.train_images.labels, cfg.batch_size,
                                                 cfg.samples_per_class, cfg.seed)
        self.model = build_model(cfg.arch, dim=cfg.dim, normalize=True, weights=cfg.weights,
                                 random_init=not cfg.pretrained, frozen_bn=cfg.frozen_bn,
                                 preprocess=model_preprocess(cfg.arch, cfg.image_size),
                                 name=self.out.resolve().name).to(self.device)
        self.loss = build_loss(cfg.loss, len(self.train_images.class_names), self.model.embedding_dim, cfg.loss_params,
                               cfg.miner_params, cfg.rho_reg, cfg.seed).to(self.device)
        # the checkpoint records the distance the loss trains with (saliency targets use it)
        self.model.distance = self.loss.distance
        head = list(self.model.head.parameters())
        head_ids = {id(p) for p in head}
        trunk = [p for p in self.model.parameters() if p.requires_grad and id(p) not in head_ids]
        groups = [{"params": trunk, "lr": cfg.lr, "name": "trunk"},
                  {"params": [p for p in head if p.requires_grad], "lr": cfg.head_lr or cfg.lr, "name": "head"}]
        for group in groups:
            group["weight_decay"] = cfg.weight_decay
        if self.loss.parameters():
            # Roth et al.: the loss's own parameters (margin β, proxies) get no weight decay
            groups.append({"params": self.loss.parameters(), "lr": cfg.loss_lr, "name": "loss", "weight_decay": 0.0})
        for group in groups:
            group["base_lr"] = group["lr"]
        self.optimizer = torch.optim.Adam([g for g in groups if g["params"]])
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)
        self.train_transform = train_transform(self.model.preprocess)
        self.eval_train_paths, self.eval_train_labels = self._eval_train_subset()
        self.epoch = 0
        self.best: tuple[int, float] | None = None
        self.rows: list[dict[str, Any]] = []

    def _eval_train_subset(self) -> tuple[list[str], list[int]]:
        n, limit = len(self.train_images), self.config.eval_train_images
        keep = np.arange(n)
        if limit is not None and limit < n:
            keep = np.sort(np.random.default_rng([self.config.seed, 1]).choice(n, limit, replace=False))
        return ([self.train_images.paths[i] for i in keep], [self.train_images.labels[i] for i in keep])

    # --- checkpoints ----------------------------------------------------------------------
    def _train_state(self) -> dict[str, Any]:
        np_state = np.random.get_state()
        state = {
            "epoch": self.epoch,
            "best_epoch": self.best[0] if self.best else -1,
            "best_recall_at_1": self.best[1] if self.best else -1.0,
            "optimizer": self.optimizer.state_dict(),
            "loss": self.loss.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": {
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]),
                          int(np_state[3]), float(np_state[4])],
                "python": _python_rng_state(),
            },
        }
        return state

    def _checkpoint_extra(self, metrics: dict[str, Any]) -> dict[str, Any]:
        cfg = self.config
        return {"trained_by": "carprobe train", "loss": cfg.loss, "rho_reg": cfg.rho_reg, "epoch": self.epoch,
                "label": cfg.label, "train_classes": self.train_images.class_names,
                "test_classes": self.test_images.class_names,
                "metrics": {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and math.isfinite(v)},
                "config": self.config.to_dict()}

    def _save(self, name: str, metrics: dict[str, Any], with_state: bool) -> Path:
        path = self.out / name
        save_checkpoint(self.model, path if not with_state else path.with_name(f".{name}.model.tmp"),
                        extra=self._checkpoint_extra(metrics))
        if not with_state:
            return path
        # one file holds the model (as load_model reads it) and the training state
        staged = path.with_name(f".{name}.model.tmp")
        try:
            data = torch.load(staged, map_location="cpu", weights_only=True)
            data["train_state"] = self._train_state()
            atomic_torch_save(data, path)
        finally:
            staged.unlink(missing_ok=True)
        return path

    def _load_last(self) -> None:
        path = self.out / LAST
        try:
            data = torch.load(path, map_location="cpu", weights_only=True)
            state = data["train_state"]
        except Exception as exc:  # noqa: BLE001 - a damaged file is the user's to know about
            raise CarprobeError(f"--resume: {path} is not a carprobe training checkpoint ({exc})") from None
        self.model.load_state_dict(data["state_dict"])
        self.model.to(self.device)
        self.optimizer.load_state_dict(state["optimizer"])
        self.loss.load_state_dict(state["loss"])
        self.scaler.load_state_dict(state["scaler"])
        self.epoch = int(state["epoch"])
        if state["best_epoch"] >= 0:
            self.best = (int(state["best_epoch"]), float(state["best_recall_at_1"]))
        rng = state["rng"]
        torch.set_rng_state(rng["torch"])
        if rng["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
        np_state = rng["numpy"]
        np.random.set_state((np_state[0], np_state[1].numpy().astype(np.uint32), np_state[2], np_state[3], np_state[4]))
        _set_python_rng_state(rng["python"])
        # rows after the checkpoint's epoch belong to an epoch that did not complete
        self.rows = [r for r in read_metrics(self.out) if int(r["epoch"]) <= self.epoch]
        self._write_metrics()

    def _write_metrics(self) -> None:
        columns: list[str] = []
        for row in self.rows:
            columns += [k for k in row if k not in columns]
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        for row in self.rows:
            writer.writerow({k: _csv_value(row.get(k)) for k in columns})
        atomic_write_text(self.out / METRICS_FILE, buffer.getvalue())

    @property
    def workers(self) -> int:
        """DataLoader workers: the configured number, else one per available core but one."""
        if self.config.workers is not None:
            return self.config.workers
        return auto_workers(len(self.train_images.paths), self.config.batch_size)

    # --- evaluation -----------------------------------------------------------------------
    def evaluate(self) -> dict[str, float]:
        """Retrieval on the test classes, embedding-space metrics on the train embeddings."""
        cfg = self.config
        common = dict(batch_size=cfg.eval_batch_size, num_workers=self.workers, device=self.device,
                      amp=self.use_amp, progress=False, normalize=True)
        try:
            test = embed_paths(self.test_images.paths, self.model, desc="eval test", **common)
            train = embed_paths(self.eval_train_paths, self.model, desc="eval train", **common)
        except ImageReadError as exc:
            raise ImageReadError(loader_error_message(exc)) from None
        ks = [k for k in (1, 2, 4, 8) if k < len(test)]
        out = {k: float(v) for k, v in retrieval_metrics(test, self.test_images.labels, ks=ks,
                                                           random_state=cfg.seed).items()}
        space = embedding_space_metrics(train, self.eval_train_labels)
        out.update(pi_intra=space["pi_intra"], pi_inter=space["pi_inter"], pi_ratio=space["pi_ratio"],
                   spectral_decay=space["rho"], spectral_decay_drop_largest=space["rho_drop_largest"])
        return out

    # --- training -------------------------------------------------------------------------
    def _loader(self, epoch: int):
        from torch.utils.data import DataLoader

        self.sampler.set_epoch(epoch)
        workers = self.workers
        return DataLoader(LabelledDataset(self.train_images, self.train_transform), batch_sampler=self.sampler,
                          num_workers=workers, pin_memory=self.device.type == "cuda",
                          generator=torch.Generator().manual_seed(self.config.seed * 1_000_003 + epoch),
                          prefetch_factor=4 if workers else None)

    def train_epoch(self, epoch: int) -> dict[str, float]:
        from blender_addon.core.progress import Progress

        factor = lr_factor(self.config, epoch)
        for group in self.optimizer.param_groups:
            group["lr"] = group["base_lr"] * factor
        self.model.train()
        total = torch.zeros((), device=self.device)  # summed on the device: no host sync per step
        steps, seen, value = 0, 0, float("nan")
        start = time.perf_counter()
        bar = Progress(len(self.sampler), label=f"epoch {epoch}/{self.config.epochs}", enabled=self.progress)
        try:
            for images, labels in self._loader(epoch):
                images = images.to(self.device, non_blocking=True)
                labels = labels.to(self.device, non_blocking=True)
                with torch.autocast(device_type="cuda", dtype=torch.float16, enabled=self.use_amp):
                    raw = self.model(images)
                embeddings = F.normalize(raw.float(), dim=1)  # every loss sees the L2-normalised embedding
                loss = self.loss(embeddings, labels)
                self.optimizer.zero_grad(set_to_none=True)
                self.scaler.scale(loss).backward()
                self.scaler.step(self.optimizer)
                self.scaler.update()
                total += loss.detach()
                steps += 1
                seen += len(labels)
                if steps % SYNC_EVERY == 0 or steps == len(self.sampler) or self.on_step is not None:
                    value = float(loss.detach())  # a host sync: only every SYNC_EVERY steps
                    if not math.isfinite(value) and not self.use_amp:
                        raise CarprobeError(f"the {self.config.loss} loss became {value} at epoch {epoch}, step "
                                            f"{steps}; lower --lr (now {self.config.lr:g})")
                    bar.set_postfix(loss=f"{value:.4f}")
                bar.update(1)  # after the loss: the last line shows the epoch's final loss
                if self.on_step is not None:
                    self.on_step(StepInfo(epoch, steps, value))
        except ImageReadError as exc:
            raise ImageReadError(loader_error_message(exc)) from None
        finally:
            bar.close()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        seconds = time.perf_counter() - start
        mean_loss = float(total) / max(steps, 1)
        if not math.isfinite(mean_loss) and not self.use_amp:
            raise CarprobeError(f"the {self.config.loss} loss became {mean_loss} in epoch {epoch}; "
                                f"lower --lr (now {self.config.lr:g})")
        return {"loss": mean_loss, "lr": self.config.lr * factor, "steps": steps,
                "images": seen, "train_s": seconds, "images_per_s": seen / seconds if seconds > 0 else float("nan")}

    def _record(self, epoch: int, train_stats: dict[str, float]) -> dict[str, Any]:
        start = time.perf_counter()
        metrics = self.evaluate()
        row = {"epoch": epoch, **train_stats, "eval_s": time.perf_counter() - start, **metrics}
        self.rows.append(row)
        self._write_metrics()
        return row

    def run(self) -> TrainResult:
        self.out.mkdir(parents=True, exist_ok=True)
        self._setup()
        if self.resume:
            self._load_last()
            self.log(f"resuming {self.out} after epoch {self.epoch} of {self.config.epochs}")
        self.config.write(self.out)
        cfg = self.config
        if not self.resume:
            self.log(f"training {cfg.arch} ({self.model.embedding_dim}-d) with {cfg.loss}"
                     f"{f' + ρ-reg p={cfg.rho_reg}' if cfg.rho_reg else ''} on {len(self.train_images)} images of "
                     f"{len(self.train_images.class_names)} classes; testing on {len(self.test_images)} images of "
                     f"{len(self.test_images.class_names)} classes; device {self.device}")
            row = self._record(0, {"loss": float("nan"), "lr": 0.0, "steps": 0, "images": 0, "train_s": 0.0,
                                   "images_per_s": float("nan")})
            self._save(LAST, row, with_state=True)
        try:
            while self.epoch < cfg.epochs:
                epoch = self.epoch + 1
                stats = self.train_epoch(epoch)
                self.epoch = epoch
                row = self._record(epoch, stats)
                if self.best is None or row["recall@1"] > self.best[1]:
                    self.best = (epoch, row["recall@1"])
                    self._save(BEST, row, with_state=False)
                self._save(LAST, row, with_state=True)
                self.log(f"epoch {epoch}/{cfg.epochs}: loss {stats['loss']:.4f}, Recall@1 {row['recall@1']:.4f}, "
                         f"MAP@R {row['map_at_r']:.4f}, NMI {row['nmi']:.4f}, π_ratio {row['pi_ratio']:.3f}, "
                         f"spectral decay {row['spectral_decay']:.3f} ({stats['images_per_s']:.1f} img/s)")
        except KeyboardInterrupt:
            self.log(f"interrupted during epoch {self.epoch + 1}; kept {self.out / LAST} (epoch {self.epoch} "
                     f"complete); continue with: carprobe train --resume --out {self.out}")
            raise
        return TrainResult(self.out, self.epoch, self.best[0] if self.best else None,
                           self.best[1] if self.best else None, list(self.rows))


def train(config: TrainConfig | None, out_dir: str | Path, resume: bool = False, progress: bool = True,
          on_step: Callable[[StepInfo], None] | None = None, log: Callable[[str], None] | None = None,
          overrides: dict[str, Any] | None = None) -> TrainResult:
    """Train one model as `config` says into `out_dir` (see the module docstring).

    resume: continue the run in `out_dir` from its last.pt with its own config.json (`config`
    is then ignored); `overrides` (field → value) may change only RESUMABLE_CHANGES there, and
    any field of a new run."""
    return Trainer(config, out_dir, resume=resume, progress=progress, on_step=on_step, log=log,
                   overrides=overrides).run()


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """metrics.csv of a run as a list of dicts (numbers as floats, epoch as int); [] if absent."""
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return []
    rows = []
    with open(path, newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            parsed: dict[str, Any] = {}
            for key, value in row.items():
                try:
                    parsed[key] = float(value) if value not in ("", None) else float("nan")
                except ValueError:
                    parsed[key] = value
            parsed["epoch"] = int(parsed["epoch"])
            rows.append(parsed)
    return rows


def _csv_value(value: Any) -> Any:
    if isinstance(value, float):
        return "" if math.isnan(value) else repr(value)
    return value


def _python_rng_state() -> list:
    version, internal, gauss = random.getstate()
    return [version, list(internal), gauss]


def _set_python_rng_state(state: list) -> None:
    random.setstate((state[0], tuple(state[1]), state[2]))
