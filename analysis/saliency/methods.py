"""Attribution maps for embedding models: one verb, `attribute(model, images, method, target)`.

Methods (captum, except the Kobs et al. preset which re-implements their recipe exactly):
``saliency`` (input gradient), ``ig`` (Integrated Gradients from a baseline image),
``gradshap`` (GradientShap around a baseline), ``occlusion`` (sliding patches of a baseline),
``gradcam`` (LayerGradCam on a layer, default the last conv block, upsampled to the input
size), ``smoothgrad`` (NoiseTunnel over Saliency) and ``kobs2021``.

Every map is post-processed the same way: channels reduced (``abs_mean`` by default, ``mean``
keeps the sign, ``none`` keeps channels), then normalised per map (``max``: divide by the
largest magnitude; ``percentile``: min -> 0, 99th percentile -> 1, clipped; ``sum``: magnitudes
sum to 1; ``none``). Normalisation keeps float16 storage exact enough (raw gradients of a
cosine can be ~1e-8) and makes one colour scale meaningful across models.

Determinism and batching: the noisy methods (``smoothgrad``, ``gradshap``, ``kobs2021``) draw
the noise of sample j of an image from a generator seeded by (seed, the image's index in the set,
j), with a standard deviation of ``noise`` times that image's own value range. So an image's
map does not depend on which images share its batch or on ``internal_batch_size``: batching
changes speed, not maps (up to float rounding), which the map store's key relies on. Nothing
touches the caller's global RNG. (On GPUs some backward kernels are not bit-deterministic.)

Peaks: ``attribute(..., return_peaks=True)`` also returns each map's strongest pixel, taken from
the map before normalisation: percentile normalisation clips about 1% of pixels to exactly 1,
and the float16 map store rounds, so a peak read from a stored map would be a tie.
"""

from __future__ import annotations

import warnings
from typing import Any, Sequence

import numpy as np
import torch

from blender_addon.core.errors import CarprobeError

from .targets import BASELINES, ExplainedScalar, baseline_images

METHODS = ("saliency", "ig", "gradshap", "occlusion", "gradcam", "smoothgrad", "kobs2021")
REDUCTIONS = ("abs_mean", "mean", "none")
NORMALIZATIONS = ("max", "percentile", "sum", "none")

# Defaults per method; `attribute(**opts)` overrides any of them.
DEFAULTS: dict[str, dict[str, Any]] = {
    "saliency": {"reduce": "abs_mean", "normalize": "max"},
    # baseline: the reference input (targets.baseline_images): black, blur, mean, uniform-noise
    "ig": {"reduce": "abs_mean", "normalize": "max", "n_steps": 32, "baseline": "black"},
    "gradshap": {"reduce": "abs_mean", "normalize": "max", "n_samples": 16, "noise": 0.09, "baseline": "black"},
    "occlusion": {"reduce": "abs_mean", "normalize": "max", "window": None, "stride": None, "baseline": "black"},
    "gradcam": {"reduce": "abs_mean", "normalize": "max", "layer": None},
    "smoothgrad": {"reduce": "abs_mean", "normalize": "max", "n_samples": 25, "noise": 0.15},
    # Kobs et al. (ICCV 2021): 50 noisy copies, std 0.15 x value range, channel mean, then abs,
    # summed, min -> 0 and 99th percentile -> 1, clipped.
    "kobs2021": {"reduce": "mean_abs_sum", "normalize": "percentile", "n_samples": 50, "noise": 0.15},
}
OPTIONS = {"reduce", "normalize", "percentile", "n_steps", "n_samples", "noise", "window", "stride",
           "layer", "internal_batch_size", "seed", "baseline"}
BASELINE_METHODS = tuple(m for m, d in DEFAULTS.items() if "baseline" in d)


def method_options(method: str, **opts: Any) -> dict[str, Any]:
    """The full option set a call uses (defaults of the method, then `opts`)."""
    if method not in METHODS:
        raise CarprobeError(f"unknown saliency method {method!r}; allowed: {', '.join(METHODS)}")
    unknown = sorted(set(opts) - OPTIONS)
    if unknown:
        raise CarprobeError(f"unknown option(s) for attribute(): {', '.join(unknown)}; allowed: {', '.join(sorted(OPTIONS))}")
    out = {"seed": 0, "internal_batch_size": None, "percentile": 99.0, **DEFAULTS[method]}
    out.update({k: v for k, v in opts.items() if v is not None or k in ("layer",)})
    if "baseline" in out and method not in BASELINE_METHODS:
        raise CarprobeError(f"baseline {out['baseline']!r}: method {method!r} uses no baseline; "
                            f"{', '.join(BASELINE_METHODS)} do")
    if "baseline" in out and out["baseline"] not in BASELINES:
        raise CarprobeError(f"baseline {out['baseline']!r}: unknown; allowed: {', '.join(BASELINES)}")
    if method != "kobs2021" and out["reduce"] not in REDUCTIONS:
        raise CarprobeError(f"reduce {out['reduce']!r} is not allowed; allowed: {', '.join(REDUCTIONS)}")
    if isinstance(out["seed"], bool) or not isinstance(out["seed"], (int, np.integer)) or out["seed"] < 0:
        raise CarprobeError(f"seed {out['seed']!r} is not allowed; expected an integer >= 0")
    if out["normalize"] not in NORMALIZATIONS:
        raise CarprobeError(f"normalize {out['normalize']!r} is not allowed; allowed: {', '.join(NORMALIZATIONS)}")
    return out


def model_device(model: torch.nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def find_layer(model: torch.nn.Module, example: torch.Tensor, name: str | None = None) -> torch.nn.Module:
    """The module Grad-CAM uses: `name` from model.named_modules(), or the last conv block.

    The last conv block is the module whose forward finishes last with a spatial (B, C, H, W)
    output larger than 1x1 -- forward hooks fire when a module returns, so an enclosing block
    (ResNet's layer4) fires after its own convs and ReLUs and is the one picked.
    """
    modules = dict(model.named_modules())
    if name:
        if name not in modules:
            spatial = [n for n, m in modules.items() if isinstance(m, torch.nn.Conv2d)][-5:]
            raise CarprobeError(f"layer {name!r} not found in the model; conv layers include: {', '.join(spatial)}")
        return modules[name]
    fired: list[str] = []

    def hook(module_name):
        def record(_module, _inputs, output):
            if isinstance(output, torch.Tensor) and output.dim() == 4 and output.shape[-1] * output.shape[-2] > 1:
                fired.append(module_name)
        return record

    handles = [m.register_forward_hook(hook(n)) for n, m in modules.items() if n]
    try:
        with torch.no_grad():
            model(example[:1])
    finally:
        for h in handles:
            h.remove()
    if not fired:
        raise CarprobeError("gradcam: the model has no layer with a spatial (B, C, H, W) output; pass --layer")
    return modules[fired[-1]]


def _value_range(x: torch.Tensor) -> torch.Tensor:
    """Per-image value range (max - min) of preprocessed images, shape (B,)."""
    flat = x.flatten(1)
    return flat.max(dim=1).values - flat.min(dim=1).values


def reduce_channels(attr: torch.Tensor, how: str) -> torch.Tensor:
    if how == "abs_mean":
        return attr.abs().mean(dim=1)
    if how == "mean":
        return attr.mean(dim=1)
    if how == "none":
        return attr
    raise CarprobeError(f"reduce {how!r} is not allowed; allowed: {', '.join(REDUCTIONS)}")


def normalize_maps(maps: np.ndarray, how: str, percentile: float = 99.0) -> np.ndarray:
    """Per-map normalisation over every axis but the first."""
    maps = np.asarray(maps, dtype=np.float32)
    flat = maps.reshape(len(maps), -1)
    if how == "none":
        return maps
    if how == "max":
        scale = np.abs(flat).max(axis=1)
        scale[scale == 0] = 1.0
        return (flat / scale[:, None]).reshape(maps.shape)
    if how == "sum":
        mags = np.abs(flat)
        total = mags.sum(axis=1)
        total[total == 0] = 1.0
        return (mags / total[:, None]).reshape(maps.shape)
    if how == "percentile":
        lo = flat.min(axis=1)
        hi = np.percentile(flat, percentile, axis=1)
        span = hi - lo
        span[span <= 0] = 1.0
        return np.clip((flat - lo[:, None]) / span[:, None], 0.0, 1.0).reshape(maps.shape).astype(np.float32)
    raise CarprobeError(f"normalize {how!r} is not allowed; allowed: {', '.join(NORMALIZATIONS)}")


def _stream_seed(seed: int, index: int, sample: int) -> int:
    """A 63-bit seed for the noise of one (image index, sample): independent streams per pair."""
    return int(np.random.SeedSequence([int(seed), int(index), int(sample)]).generate_state(1, np.uint64)[0]) >> 1


def _image_noise(indices: Sequence[int], samples: range, shape: tuple[int, ...], seed: int,
                 device: torch.device, dtype: torch.dtype, with_alpha: bool = False):
    """(len(indices), len(samples), *shape) standard normal noise, and (with_alpha) one uniform
    draw per pair, each from its own (seed, index, sample) stream."""
    eps = torch.empty((len(indices), len(samples)) + tuple(shape), device=device, dtype=dtype)
    alpha = torch.empty((len(indices), len(samples)), device=device, dtype=dtype)
    for a, index in enumerate(indices):
        for b, sample in enumerate(samples):
            g = torch.Generator(device=device).manual_seed(_stream_seed(seed, index, sample))
            eps[a, b] = torch.randn(shape, generator=g, device=device, dtype=dtype)
            if with_alpha:
                alpha[a, b] = torch.rand((), generator=g, device=device, dtype=dtype)
    return eps, alpha


def _noisy_gradients(kind: str, model, x, target: ExplainedScalar, n_samples: int, noise: float, chunk: int,
                     indices: Sequence[int], seed: int, baseline: str = "black") -> torch.Tensor:
    """The noisy-gradient methods, one loop:
    kobs2021: sum over samples of |channel mean of the input gradient| (Kobs et al.'s explainer), (B, H, W);
    smoothgrad: mean input gradient over samples (Smilkov et al.), (B, C, H, W);
    gradshap: mean over samples of gradient x (noisy input - baseline) at a uniform point between
    the baseline (black by default) and the noisy input (Lundberg & Lee's expected gradients), (B, C, H, W)."""
    b, shape = len(x), tuple(x.shape[1:])
    std = (noise * _value_range(x)).view(b, 1, 1, 1, 1)
    base = baseline_images(model, x, baseline, seed, indices).unsqueeze(1) if kind == "gradshap" else None
    total = torch.zeros((b,) + (shape[1:] if kind == "kobs2021" else shape), device=x.device)
    for s0 in range(0, n_samples, chunk):
        samples = range(s0, min(s0 + chunk, n_samples))
        k = len(samples)
        eps, alpha = _image_noise(indices, samples, shape, seed, x.device, x.dtype, with_alpha=kind == "gradshap")
        noisy = x.unsqueeze(1) + std * eps                                  # (B, k, C, H, W)
        point = noisy if base is None else base + alpha.view(b, k, 1, 1, 1) * (noisy - base)
        point = point.flatten(0, 1).requires_grad_(True)
        anchors = None if target.anchors is None else target.anchors.repeat_interleave(k, dim=0)
        (grad,) = torch.autograd.grad(target.score(model, point, anchors).sum(), point)
        grad = grad.view((b, k) + shape)
        if kind == "kobs2021":
            total += grad.mean(dim=2).abs().sum(dim=1)  # channel mean first, then abs
        elif kind == "smoothgrad":
            total += grad.sum(dim=1)
        else:
            total += (grad * (noisy - base)).sum(dim=1)
    return total if kind == "kobs2021" else total / n_samples


def attribute(model: torch.nn.Module, images: torch.Tensor, method: str, target: ExplainedScalar,
              indices: Sequence[int] | None = None, return_peaks: bool = False, **opts: Any):
    """Attribution maps of `target` for a batch of preprocessed images (B, C, H, W).

    Returns float32 maps (B, H, W) (or (B, C, H, W) with reduce="none"), post-processed as the
    module docstring says. Options (see DEFAULTS): n_steps (ig), n_samples and noise (fraction
    of the value range; smoothgrad, gradshap, kobs2021), window and stride (occlusion, pixels),
    layer (gradcam: module or name), internal_batch_size (evaluations per forward pass for ig,
    smoothgrad, gradshap, kobs2021 copies and occlusion windows), seed, reduce, normalize,
    percentile. indices: each image's index in its set (default 0..B-1), which with the seed
    fixes its noise. return_peaks: also return (B,) int64, each map's strongest pixel (flat
    index, row-major) before normalisation.
    """
    o = method_options(method, **opts)
    if images.dim() != 4:
        raise CarprobeError(f"images must be a (B, C, H, W) tensor, got shape {tuple(images.shape)}")
    model.eval()
    device = model_device(model)
    x = images.to(device=device, dtype=torch.float32)
    target = target.to(device)
    if target.anchors is not None and len(target.anchors) != len(x):
        raise CarprobeError(f"target has {len(target.anchors)} anchors for {len(x)} images")
    indices = list(range(len(x))) if indices is None else [int(i) for i in indices]
    if len(indices) != len(x):
        raise CarprobeError(f"indices: {len(indices)} image indices for {len(x)} images; expected one per image")
    f = target.forward_func(model)
    args = target.forward_args()
    ibs = o["internal_batch_size"]
    fork_devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=fork_devices), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*did not already require gradients.*")
        torch.manual_seed(int(o["seed"]))  # a model that draws at random (dropout left on) stays seeded
        attr = _run_method(method, model, x, target, f, args, o, ibs, indices)
    if method == "kobs2021":
        maps = attr
    else:
        maps = reduce_channels(attr, o["reduce"])
    maps = maps.detach().float().cpu().numpy()
    normalized = normalize_maps(maps, o["normalize"], float(o["percentile"]))
    if not return_peaks:
        return normalized
    magnitude = np.abs(maps).reshape(len(maps), -1) if maps.ndim == 3 else \
        np.abs(maps).sum(axis=1).reshape(len(maps), -1)
    return normalized, magnitude.argmax(axis=1).astype(np.int64)


def _run_method(method, model, x, target, f, args, o, ibs, indices) -> torch.Tensor:
    from captum.attr import IntegratedGradients, LayerAttribution, LayerGradCam, Occlusion, Saliency

    if method == "saliency":
        return Saliency(f).attribute(x, additional_forward_args=args, abs=False)
    if method == "ig":
        base = baseline_images(model, x, o["baseline"], o["seed"], indices)
        return IntegratedGradients(f).attribute(x, baselines=base, additional_forward_args=args,
                                                n_steps=int(o["n_steps"]), internal_batch_size=ibs)
    if method in ("gradshap", "smoothgrad", "kobs2021"):
        # internal_batch_size counts forward evaluations: that many noisy copies of the batch
        chunk = max(1, int(ibs) // len(x)) if ibs else int(o["n_samples"])
        return _noisy_gradients(method, model, x, target, int(o["n_samples"]), float(o["noise"]), chunk,
                                indices, int(o["seed"]), o.get("baseline", "black"))
    if method == "occlusion":
        c, h, w = x.shape[1:]
        window = int(o["window"] or max(2, round(min(h, w) / 8)))
        stride = int(o["stride"] or max(1, window // 2))
        base = baseline_images(model, x, o["baseline"], o["seed"], indices)
        return Occlusion(f).attribute(x, sliding_window_shapes=(c, window, window), strides=(c, stride, stride),
                                      baselines=base, additional_forward_args=args,
                                      perturbations_per_eval=int(ibs or 1))
    if method == "gradcam":
        layer = o["layer"]
        if not isinstance(layer, torch.nn.Module):
            layer = find_layer(model, x, layer)
        cam = LayerGradCam(f, layer).attribute(x, additional_forward_args=args, relu_attributions=True)
        return LayerAttribution.interpolate(cam, tuple(x.shape[2:]), interpolate_mode="bilinear")
    raise CarprobeError(f"unknown saliency method {method!r}; allowed: {', '.join(METHODS)}")


def options_for_store(method: str, **opts: Any) -> dict[str, Any]:
    """The options that define a map (JSON-able; the layer by name), for the map store key."""
    o = method_options(method, **opts)
    o.pop("internal_batch_size", None)  # batching changes speed, not maps (per-image noise streams)
    if isinstance(o.get("layer"), torch.nn.Module):
        raise CarprobeError("pass gradcam's layer by name to store maps")
    return o
