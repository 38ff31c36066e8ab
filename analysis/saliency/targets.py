"""Explicit scalar targets for embedding models.

An embedding model has no class logit, so every attribution method here explains a scalar
that we define: one number per image, computed from the image's embedding. A target is an
`ExplainedScalar`: a kind, the per-image *anchors* it compares against (reference embeddings,
identity centroids, the black image's embedding) and the distance the model trains with.
`score(model, x, anchors)` is the forward function handed to captum; the anchors are passed as
an additional forward argument, so captum expands them together with the inputs (IG steps,
noise samples, occlusion windows) and internal batching stays aligned.

Targets:
- ``reference``: cosine similarity between the image's embedding and the embedding of another
  image of the set (a query–reference pair; by default another image of the same car).
- ``centroid``: cosine similarity to the centroid of the image's identity (``car_id``),
  leaving the image itself out of the centroid.
- ``baseline``: the distance, in the distance the model trains with (``model.distance``), to
  the embedding of a black image -- the scalar Kobs et al. (ICCV 2021) explained.
- ``norm``: the squared norm of the un-normalised embedding ``model(x)``.

Why not the similarity of an image to its own embedding? s(x) = cos(f(x), f(x0)) evaluated at
x = x0 sits at its maximum (1): the gradient with respect to the input is exactly zero there,
so gradient maps are zero or numerical noise, and integrated-gradient or occlusion scores only
measure how far a perturbation moves the embedding, not which pixels make the image similar to
anything. Anchors must therefore come from somewhere else (another image, a centroid without
the image, a baseline image), or the scalar must not be a similarity (the norm).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from blender_addon.core.errors import CarprobeError

TARGETS = ("reference", "centroid", "baseline", "norm")
DISTANCES = ("cosine", "euclidean", "dot", "snr")


def embed(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The embedding the model is used with (L2-normalised when model.normalize)."""
    if hasattr(model, "embed"):
        return model.embed(x)
    out = model(x)
    return F.normalize(out, dim=1) if getattr(model, "normalize", False) else out


def distance(a: torch.Tensor, b: torch.Tensor, kind: str) -> torch.Tensor:
    """Row-wise distance between embeddings a and b in the named distance (larger = farther)."""
    if kind == "cosine":
        return 1.0 - F.cosine_similarity(a, b, dim=1)
    if kind == "euclidean":
        # the epsilon keeps the gradient finite when a == b
        return torch.sqrt(((a - b) ** 2).sum(dim=1) + 1e-12)
    if kind == "dot":
        return -(a * b).sum(dim=1)
    if kind == "snr":
        # signal-to-noise distance of Yuan et al. (CVPR 2019): var(noise) / var(anchor)
        return torch.var(a - b, dim=1) / torch.var(a, dim=1).clamp_min(1e-12)
    raise CarprobeError(f"model.distance {kind!r} is not supported; allowed: {', '.join(DISTANCES)}")


@dataclass
class ExplainedScalar:
    """One scalar per image: `score(model, x, anchors) -> (B,)`; anchors (B, D) or None."""

    kind: str
    anchors: torch.Tensor | None
    distance: str = "cosine"

    def score(self, model: torch.nn.Module, x: torch.Tensor, anchors: torch.Tensor | None = None) -> torch.Tensor:
        if self.kind == "norm":
            return (model(x) ** 2).sum(dim=1)
        e = embed(model, x)
        anchors = anchors.to(e.dtype)
        if self.kind in ("reference", "centroid"):
            return F.cosine_similarity(e, anchors, dim=1)
        if self.kind == "baseline":
            return distance(e, anchors, self.distance)
        raise CarprobeError(f"unknown target {self.kind!r}; allowed: {', '.join(TARGETS)}")

    def forward_func(self, model: torch.nn.Module) -> Callable[..., torch.Tensor]:
        """The function captum differentiates; anchors arrive as the additional forward argument."""
        if self.anchors is None:
            return lambda x: self.score(model, x, None)
        return lambda x, anchors: self.score(model, x, anchors)

    def forward_args(self) -> tuple[Any, ...] | None:
        return None if self.anchors is None else (self.anchors,)

    def to(self, device: torch.device | str) -> "ExplainedScalar":
        anchors = None if self.anchors is None else self.anchors.to(device)
        return ExplainedScalar(self.kind, anchors, self.distance)

    def subset(self, rows: slice | Sequence[int]) -> "ExplainedScalar":
        """The same target for a slice of the batch (anchors are per image)."""
        anchors = None if self.anchors is None else self.anchors[rows]
        return ExplainedScalar(self.kind, anchors, self.distance)


def black_image(model: torch.nn.Module, like: torch.Tensor) -> torch.Tensor:
    """A black image in the model's input space, shaped like `like` (1, C, H, W).

    Black is pixel value 0 *before* preprocessing, so after mean/std (and BGR, scaling) it is
    a per-channel constant; it is read from the model's own transform rather than re-derived.
    """
    return _solid_image(model, like, 0)


def _solid_image(model: torch.nn.Module, like: torch.Tensor, level: int) -> torch.Tensor:
    """An image of grey `level` (0..255 before preprocessing) in the model's input space."""
    c, h, w = like.shape[-3:]
    preprocess = getattr(model, "preprocess", None)
    if preprocess is None or not hasattr(preprocess, "transform"):
        return torch.full((1, c, h, w), level / 255.0, dtype=like.dtype, device=like.device)
    from PIL import Image

    side = 2 * max(h, w, 1)  # large enough for any resize + crop
    value = preprocess.transform()(Image.new("RGB", (side, side), (level,) * 3))
    value = value[:, value.shape[1] // 2, value.shape[2] // 2]
    if value.numel() != c:
        raise CarprobeError(f"the model's preprocessing gives {value.numel()} channels, images have {c}")
    return value.to(like.dtype).to(like.device).view(1, c, 1, 1).expand(1, c, h, w).clone()


BASELINES = ("black", "blur", "mean", "uniform-noise")


def baseline_images(model: torch.nn.Module, x: torch.Tensor, kind: str = "black", seed: int = 0,
                    indices: Sequence[int] | None = None) -> torch.Tensor:
    """The reference input of each image of `x` (B, C, H, W), in the model's input space:
    black (pixel value 0), blur (the image under a Gaussian blur of σ = 1/16 of its shorter
    side), mean (input zero: the preprocessing's mean colour), uniform-noise (each value uniform
    between black and white, drawn from (seed, the image's index in its set), so an image's
    baseline does not depend on its batch)."""
    if kind not in BASELINES:
        raise CarprobeError(f"baseline {kind!r}: unknown; allowed: {', '.join(BASELINES)}")
    if kind == "black":
        return black_image(model, x).expand_as(x).clone()
    if kind == "mean":
        return torch.zeros_like(x)
    if kind == "blur":
        from torchvision.transforms.functional import gaussian_blur

        sigma = max(1.0, min(x.shape[-2:]) / 16)
        size = min(2 * int(3 * sigma) + 1, (min(x.shape[-2:]) - 1) | 1)  # odd, at most the image
        return gaussian_blur(x, [size, size], [sigma, sigma])
    low, high = black_image(model, x)[0], _solid_image(model, x, 255)[0]
    indices = range(len(x)) if indices is None else indices
    noise = []
    for index in indices:
        g = torch.Generator().manual_seed(int(seed) * 1_000_003 + int(index))
        noise.append(torch.rand(x.shape[1:], generator=g))
    u = torch.stack(noise).to(device=x.device, dtype=x.dtype)
    return low + u * (high - low)


def _model_device(model: torch.nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


@torch.no_grad()
def _embed_batched(model: torch.nn.Module, images: torch.Tensor, batch_size: int = 32) -> torch.Tensor:
    device = _model_device(model)
    out = [embed(model, images[i:i + batch_size].to(device)) for i in range(0, len(images), batch_size)]
    return torch.cat(out).detach()


def reference_target(model: torch.nn.Module, reference_images: torch.Tensor) -> ExplainedScalar:
    """Cosine similarity to the embedding of reference_images[i] (one reference per query)."""
    return ExplainedScalar("reference", _embed_batched(model.eval(), reference_images))


def centroid_target(model: torch.nn.Module, centroids: torch.Tensor | np.ndarray) -> ExplainedScalar:
    """Cosine similarity to the given per-image identity centroids (see identity_centroids)."""
    anchors = torch.as_tensor(np.asarray(centroids), dtype=torch.float32).to(_model_device(model))
    return ExplainedScalar("centroid", anchors)


def baseline_target(model: torch.nn.Module, like: torch.Tensor, baseline: str = "black", seed: int = 0,
                    indices: Sequence[int] | None = None) -> ExplainedScalar:
    """Distance (model.distance) to the embedding of each image's baseline (baseline_images;
    black, as Kobs et al. explained, by default)."""
    kind = getattr(model, "distance", "cosine")
    if kind not in DISTANCES:
        raise CarprobeError(f"model.distance {kind!r} is not supported; allowed: {', '.join(DISTANCES)}")
    if baseline == "black":  # one image for all: embed it once
        anchor = _embed_batched(model.eval(), black_image(model, like))
        return ExplainedScalar("baseline", anchor.expand(len(like), -1).contiguous(), kind)
    references = baseline_images(model, like.to(_model_device(model)), baseline, seed, indices)
    return ExplainedScalar("baseline", _embed_batched(model.eval(), references), kind)


def norm_target() -> ExplainedScalar:
    """Squared norm of the un-normalised embedding model(x)."""
    return ExplainedScalar("norm", None)


def identity_centroids(embeddings: np.ndarray, labels: Sequence[Any], indices: Sequence[int]) -> np.ndarray:
    """Leave-one-out centroid of each image's identity, for the images `indices`.

    embeddings: (N, D) for the whole set (normalised rows are averaged as they are); labels: N
    identity labels (car_id). The image itself is left out: including it would put part of the
    self-similarity (zero gradient at the optimum) back into the target.
    """
    embeddings = np.asarray(embeddings, dtype=np.float64)
    labels = np.asarray([str(v) for v in labels])
    out = np.empty((len(indices), embeddings.shape[1]), dtype=np.float32)
    for row, i in enumerate(indices):
        same = np.flatnonzero(labels == labels[i])
        same = same[same != i]
        if len(same) == 0:
            raise CarprobeError(f"target 'centroid': image {i} is the only image of car_id {labels[i]!r}; "
                                "the centroid target needs at least 2 images per car_id "
                                "(use --target reference, baseline or norm)")
        out[row] = embeddings[same].mean(axis=0)
    return out


def reference_pairs(labels: Sequence[Any], indices: Sequence[int]) -> list[int]:
    """A reference image for each query: the next image (cyclically) of the same car_id, or,
    when the car has a single image, the next image of the set."""
    labels = [str(v) for v in labels]
    n = len(labels)
    if n < 2:
        raise CarprobeError("target 'reference' needs a render set with at least 2 images")
    refs = []
    for i in indices:
        same = [j for j in range(i + 1, i + n) if labels[j % n] == labels[i]]
        refs.append(same[0] % n if same else (i + 1) % n)
    return refs
