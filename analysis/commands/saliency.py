"""`carprobe saliency SET --models A B …`: attribution maps of embedding models on a render set,
compared between models (Kobs et al.'s model × model matrix) and measured against the render's
part masks, with Adebayo et al.'s cascading and independent randomisation sanity checks.

Writes into --out: maps/*.npz (float16, reused on the next run), saliency_compare.csv
(model_a, model_b, metric, mean, ci_low, ci_high, n), saliency_compare_per_image.csv,
saliency_masks.csv (model, part, share, area), saliency_mask_summary.csv,
saliency_masks_per_image.csv, saliency_sanity.csv (cascading), saliency_sanity_independent.csv,
PNG figures and saliency.json (what was run). Maps do not depend on --batch-size or
--internal-batch-size: noise is drawn per image from (seed, image index).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from blender_addon.commands import common

METHOD_CHOICES = ("saliency", "ig", "gradshap", "occlusion", "gradcam", "smoothgrad", "kobs2021")
TARGET_CHOICES = ("reference", "centroid", "baseline", "norm")
BASELINES = ("black", "blur", "mean", "uniform-noise")  # analysis.saliency.targets.BASELINES (torch-free here)
MANIFEST = "saliency.json"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("set", help="render set folder (holds dataset.json and metadata.csv)")
    common.add_models(parser, what="models to explain")
    parser.add_argument("--names", nargs="+", default=None, help="display names, one per model")
    parser.add_argument("--method", default="ig",
                        help=f"attribution method: {', '.join(METHOD_CHOICES)} (kobs2021: Kobs et al.'s noisy-"
                             "gradient recipe; its paper target is --target baseline, the default)")
    parser.add_argument("--target", default="baseline",
                        help="explained scalar: reference (cosine to another image of the same car), centroid "
                             "(cosine to the car's centroid), baseline (distance to a black image's embedding, "
                             "Kobs et al.), norm (squared embedding norm)")
    parser.add_argument("--baseline", choices=BASELINES, default=None,
                        help="the reference input of ig, gradshap and occlusion and of --target baseline: black "
                             "(default), blur (Gaussian, σ = 1/16 of the shorter side), mean (the preprocessing's "
                             "mean colour) or uniform-noise (seeded per image)")
    parser.add_argument("--images", nargs="+", default=["16"],
                        help="one number N: N images spread evenly over the set; several numbers, a comma "
                             "list or a:b ranges: those image indices (default 16)")
    common.add_device(parser)
    parser.add_argument("--out", type=Path, default=Path("out/saliency"), help="results folder (created)")
    parser.add_argument("--batch-size", type=int, default=4, help="images per attribution call")
    parser.add_argument("--internal-batch-size", type=int, default=None,
                        help="evaluations per forward pass inside a method (IG steps, noise samples, windows)")
    parser.add_argument("--steps", type=int, default=None, help="Integrated Gradients steps (default 32)")
    parser.add_argument("--samples", type=int, default=None,
                        help="noisy samples for smoothgrad/gradshap/kobs2021 (defaults 25/16/50)")
    parser.add_argument("--layer", default=None, help="gradcam layer name (default: the last conv block)")
    parser.add_argument("--top-k", type=float, default=0.1, help="fraction of pixels for the top-k IoU")
    parser.add_argument("--ci", choices=("t", "bootstrap"), default="t",
                        help="95%% interval over images: Student t (on Fisher z for correlations) or bootstrap")
    parser.add_argument("--masks", choices=("auto", "on", "off"), default="auto",
                        help="mask shares: auto (when the set has masks), on (required), off")
    parser.add_argument("--sanity-images", type=int, default=4,
                        help="images for the cascading-randomisation check (0: skip)")
    parser.add_argument("--sanity-steps", type=int, default=8, help="randomisation steps (layer groups)")
    parser.add_argument("--sanity-mode", choices=("cascading", "independent", "both"), default="both",
                        help="Adebayo et al.'s randomisation: layers re-initialised cumulatively from the top "
                             "(cascading), one at a time (independent), or both (default)")
    parser.add_argument("--sanity-all-models", action="store_true",
                        help="run the sanity check for every model (default: the first one)")
    parser.add_argument("--seed", type=int, default=0)
    common.add_progress(parser)


def parse_images(tokens: list[str], count: int) -> list[int]:
    """--images: one N -> N indices spread evenly; otherwise explicit indices/ranges."""
    from blender_addon.core.errors import CarprobeError

    parts = [p for t in tokens for p in str(t).split(",") if p.strip()]
    if count == 0:
        raise CarprobeError("the render set has no images")
    try:
        if len(parts) == 1 and ":" not in parts[0] and len(tokens) == 1 and "," not in tokens[0]:
            n = int(parts[0])
            if n < 1:
                raise CarprobeError(f"--images {n}: must be >= 1")
            n = min(n, count)
            return sorted({int(round(v)) for v in [i * (count - 1) / max(n - 1, 1) for i in range(n)]})
        indices: list[int] = []
        for p in parts:
            if ":" in p:
                a, b = p.split(":", 1)
                indices.extend(range(int(a or 0), int(b or count)))
            else:
                indices.append(int(p))
    except ValueError:
        raise CarprobeError(f"--images {' '.join(tokens)}: expected a count N, or indices like 0 5 9, 0,5,9 or "
                            "0:10") from None
    bad = [i for i in indices if not 0 <= i < count]
    if bad:
        raise CarprobeError(f"--images: indices {bad[:5]} are outside the set (0..{count - 1})")
    return list(dict.fromkeys(indices))


def _load_images(paths, transform):
    import torch
    from PIL import Image

    from blender_addon.core.errors import CarprobeError

    out = []
    for path in paths:
        try:
            with Image.open(path) as image:
                out.append(transform(image.convert("RGB")))
        except (OSError, ValueError) as exc:
            raise CarprobeError(f"image {path}: not readable ({exc})") from None
    return torch.stack(out)


def _display_image(path, preprocess):
    """The image as the model sees it geometrically (resize + crop), uint8 RGB, for overlays."""
    import numpy as np
    from PIL import Image
    from torchvision.transforms import v2

    steps = []
    if preprocess.resize:
        steps.append(v2.Resize(preprocess.resize, antialias=True))
    if preprocess.crop:
        steps.append(v2.CenterCrop(preprocess.crop))
    with Image.open(path) as image:
        image = image.convert("RGB")
        return np.asarray(v2.Compose(steps)(image) if steps else image)


def run(args: argparse.Namespace) -> int:
    import json

    import numpy as np
    import torch
    from blender_addon.core.progress import Progress

    from blender_addon.core.errors import CarprobeError
    from blender_addon.core.render_set import atomic_write_bytes, atomic_write_text

    from ..data import RenderSetData
    from ..embed import embed_render_set
    from ..models import describe_model, resolve_device
    from ._embeddings import load_models
    from ..saliency import compare, figures, masks, methods, sanity, targets
    from ..saliency.store import MapStore

    if args.method not in METHOD_CHOICES:
        raise CarprobeError(f"--method {args.method!r}: unknown; allowed: {', '.join(METHOD_CHOICES)}")
    if args.target not in TARGET_CHOICES:
        raise CarprobeError(f"--target {args.target!r}: unknown; allowed: {', '.join(TARGET_CHOICES)}")
    if args.names is not None and len(args.names) != len(args.models):
        raise CarprobeError(f"--names: {len(args.names)} names for {len(args.models)} models")
    if args.batch_size < 1:
        raise CarprobeError(f"--batch-size {args.batch_size}: must be >= 1")
    if not 0 < args.top_k <= 1:
        raise CarprobeError(f"--top-k {args.top_k}: must be a fraction in (0, 1]")
    baseline = args.baseline or "black"
    uses_baseline = args.method in methods.BASELINE_METHODS
    if args.baseline is not None and not uses_baseline and args.target != "baseline":
        raise CarprobeError(f"--baseline {args.baseline}: neither --method {args.method} nor --target {args.target} "
                            f"uses a baseline; methods {', '.join(methods.BASELINE_METHODS)} and --target baseline do")
    opts = {"n_steps": args.steps, "n_samples": args.samples, "layer": args.layer, "seed": args.seed,
            "baseline": baseline if uses_baseline else None}
    opts = {k: v for k, v in opts.items() if v is not None}
    store_opts = methods.options_for_store(args.method, **opts)
    # the stored maps' key names the target; a non-black baseline target is another scalar
    target_key = args.target if args.target != "baseline" or baseline == "black" else f"baseline:{baseline}"

    device = resolve_device(args.device)
    data = RenderSetData(args.set)
    meta = data.metadata
    indices = parse_images(args.images, len(data))
    rows = [int(np.flatnonzero(meta["index"].to_numpy() == i)[0]) if i in set(meta["index"]) else None
            for i in indices]
    if any(r is None for r in rows):
        missing = [i for i, r in zip(indices, rows) if r is None][:5]
        raise CarprobeError(f"--images: index {missing} not in the render set's metadata")
    car_labels = meta["car_id"].astype(str).tolist() if "car_id" in meta else [str(i) for i in range(len(meta))]
    mask_paths = [data.mask_paths[r] for r in rows]
    has_masks = all(p is not None and Path(p).is_file() for p in mask_paths)
    if args.masks == "on" and not has_masks:
        raise CarprobeError(f"{data.root}: mask shares need part masks for every selected image, and this render "
                            "set has none (or not for all); render it with render.masks = true")
    use_masks = has_masks and args.masks != "off"
    if args.masks == "auto" and not has_masks:
        print("mask shares skipped: the render set has no part masks (render it with render.masks = true)")

    models = load_models(args.models, args, device=device)
    names = list(args.names) if args.names else [m.name for m in models]
    seen: dict[str, int] = {}
    for k, name in enumerate(names):  # two refs with the same name must stay apart in every table
        seen[name] = seen.get(name, 0) + 1
        if seen[name] > 1:
            names[k] = f"{name} #{seen[name]}"
    for name, model in zip(names, models):
        print(f"{name}: {describe_model(model)}")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    store = MapStore(out / "maps")
    image_paths = [data.image_paths[r] for r in rows]
    tensors: dict[str, torch.Tensor] = {}

    def images_for(model, paths_key, paths):
        key = json.dumps(model.preprocess.to_dict(), sort_keys=True) + paths_key
        if key not in tensors:
            tensors[key] = _load_images(paths, model.preprocess.transform())
        return tensors[key]

    def make_target_factory(model, images):
        """target for `images` (the selected images) rebuilt for any model (sanity check)."""
        if args.target == "reference":
            refs = targets.reference_pairs(car_labels, rows)
            ref_images = images_for(model, "ref", [data.image_paths[r] for r in refs])
            return lambda m: targets.reference_target(m, ref_images)
        if args.target == "centroid":
            return lambda m: targets.centroid_target(m, _centroids(m, model))
        if args.target == "baseline":
            return lambda m: targets.baseline_target(m, images, baseline, args.seed, indices)
        return lambda m: targets.norm_target()

    def _centroids(m, original):
        if m is original:  # the whole set's embeddings, cached per model fingerprint
            emb = embed_render_set(data, m, device=device, progress=args.progress, normalize=m.normalize)
            return targets.identity_centroids(emb, car_labels, rows)
        # a randomised copy (sanity check): embed only the images of the identities involved
        wanted = sorted({j for r in rows for j in range(len(car_labels)) if car_labels[j] == car_labels[r]})
        imgs = images_for(m, "centroid-ids", [data.image_paths[j] for j in wanted])
        with torch.no_grad():
            emb = torch.cat([targets.embed(m, imgs[i:i + 32].to(device)) for i in range(0, len(imgs), 32)])
        full = np.zeros((len(car_labels), emb.shape[1]), dtype=np.float32)
        full[wanted] = emb.cpu().numpy()
        return targets.identity_centroids(full, car_labels, rows)

    maps: dict[str, np.ndarray] = {}
    peaks: dict[str, np.ndarray] = {}  # each map's strongest pixel before normalisation (pointing game)
    total = len(models) * len(indices)
    bar = Progress(total, label=f"saliency {args.method}", enabled=args.progress)
    for name, model in zip(names, models):
        images = images_for(model, "", image_paths)
        make_target = make_target_factory(model, images)
        full_target: list = []

        def compute(missing: list[int], model=model, images=images, make_target=make_target,
                    full_target=full_target) -> np.ndarray:
            if not full_target:
                full_target.append(make_target(model))
            pos = [indices.index(i) for i in missing]
            chunks, chunk_peaks = [], []
            for s in range(0, len(pos), args.batch_size):
                sel = pos[s:s + args.batch_size]
                got, peak = methods.attribute(model, images[sel], args.method, full_target[0].subset(sel),
                                              indices=[indices[p] for p in sel], return_peaks=True,
                                              internal_batch_size=args.internal_batch_size, **opts)
                chunks.append(got)
                chunk_peaks.append(peak)
                bar.update(len(sel))
            return np.concatenate(chunks), np.concatenate(chunk_peaks)

        maps[name], peaks[name] = store.get(indices, compute, model_name=name, fingerprint=model.fingerprint,
                                            method=args.method, target=target_key, options=store_opts,
                                            set_hash=data.set_hash, on_reuse=bar.update)
    bar.close()

    # Models with different crops give maps of different sizes: compare on the first model's grid.
    size = maps[names[0]].shape[1:]
    for name in names[1:]:
        if maps[name].shape[1:] != size:
            print(f"{name}: maps resized from {maps[name].shape[1:]} to {size} for the comparison")
            peaks[name] = masks.rescale_peaks(peaks[name], maps[name].shape[1:], size)
            maps[name] = torch.nn.functional.interpolate(torch.from_numpy(maps[name])[:, None], size=size,
                                                         mode="bilinear", align_corners=False)[:, 0].numpy()

    written: list[str] = []

    def write_csv(frame, file_name):
        atomic_write_text(out / file_name, frame.to_csv(index=False))
        written.append(file_name)

    def write_png(png, file_name):
        atomic_write_bytes(out / file_name, png)
        written.append(file_name)

    if len(models) >= 2:
        summary, per_image = compare.compare_models(maps, k=args.top_k, ci_method=args.ci, indices=indices)
        write_csv(summary, "saliency_compare.csv")
        write_csv(per_image, "saliency_compare_per_image.csv")
        mats = {}
        for metric in compare.METRICS:
            order, mean = compare.matrix(summary, metric, names)
            _, lo = compare.matrix(summary, metric, names, "ci_low")
            _, hi = compare.matrix(summary, metric, names, "ci_high")
            mats[metric] = (mean, lo, hi)
        write_png(figures.matrix_figure(names, mats), "saliency_matrix.png")
        sp = summary[summary["metric"] == "spearman"]
        for r in sp.itertuples():
            print(f"spearman {r.model_a} vs {r.model_b}: {r.mean:.3f} [{r.ci_low:.3f}, {r.ci_high:.3f}] (n={r.n})")

    parts = masks.part_names(data.info)
    if use_masks:
        raw_masks = [masks.read_mask(p) for p in mask_paths]
        model_masks = {}
        for name, model in zip(names, models):
            model_masks[name] = np.stack([masks.mask_to_input(m, models[0].preprocess) for m in raw_masks])
        shares, mask_summary, mask_per_image = masks.mask_tables(maps, model_masks, parts, indices, peaks=peaks)
        write_csv(shares, "saliency_masks.csv")
        write_csv(mask_summary, "saliency_mask_summary.csv")
        write_csv(mask_per_image, "saliency_masks_per_image.csv")
        write_png(figures.mask_share_bars(shares, parts), "saliency_masks.png")
        for r in mask_summary[mask_summary["metric"] == "car_share"].itertuples():
            print(f"{r.model}: car share of attribution {r.mean:.3f} [{r.ci_low:.3f}, {r.ci_high:.3f}]")

    if args.sanity_images > 0:
        import pandas as pd

        n_sanity = min(args.sanity_images, len(indices))
        chosen = list(zip(names, models)) if args.sanity_all_models else [(names[0], models[0])]
        modes = ("cascading", "independent") if args.sanity_mode == "both" else (args.sanity_mode,)
        tables: dict[str, list] = {mode: [] for mode in modes}
        sanity_bar = Progress(len(chosen), label="sanity check", enabled=args.progress)
        for name, model in chosen:
            images = images_for(model, "", image_paths)
            factory = make_target_factory(model, images)
            full = factory(model)

            def make_target(m, factory=factory, model=model, full=full):
                return (full if m is model else factory(m)).subset(slice(0, n_sanity))

            for mode in modes:
                check = sanity.cascading_randomization if mode == "cascading" else sanity.independent_randomization
                table = check(model, images[:n_sanity], args.method, make_target, max_steps=args.sanity_steps,
                              seed=args.seed, indices=indices[:n_sanity],
                              internal_batch_size=args.internal_batch_size,
                              **{k: v for k, v in opts.items() if k != "seed"})
                table.insert(0, "model", name)
                tables[mode].append(table)
            sanity_bar.update()
        sanity_bar.close()
        for mode, frames in tables.items():
            suffix = "" if mode == "cascading" else "_independent"
            sanity_table = pd.concat(frames, ignore_index=True)
            write_csv(sanity_table, f"saliency_sanity{suffix}.csv")
            write_png(figures.sanity_curve(sanity_table, cumulative=mode == "cascading"),
                      f"saliency_sanity{suffix}.png")

    shown = min(6, len(indices))
    display = [_display_image(p, models[0].preprocess) for p in image_paths[:shown]]
    if display[0].shape[:2] != tuple(size):
        display = [np.asarray(torch.nn.functional.interpolate(
            torch.from_numpy(d).permute(2, 0, 1)[None].float(), size=size, mode="bilinear")[0]
            .permute(1, 2, 0).clamp(0, 255).byte()) for d in display]
    labels = [f"#{i} {car_labels[r]}" for i, r in zip(indices[:shown], rows[:shown])]
    write_png(figures.overlay_grid(display, {n: maps[n][:shown] for n in names}, labels), "saliency_grid.png")

    manifest = {
        "format": "carprobe-saliency", "version": 1,
        "set": {"path": str(data.root), "name": data.info.get("name"), "set_hash": data.set_hash},
        "method": args.method, "target": target_key, "options": store_opts,
        "models": [{"name": n, "ref": str(ref), "fingerprint": m.fingerprint, "distance": m.distance,
                    "normalize": m.normalize} for n, ref, m in zip(names, args.models, models)],
        "images": indices, "masks": use_masks, "mask_parts": parts, "top_k": args.top_k,
        "files": written,
    }
    atomic_write_text(out / MANIFEST, json.dumps(manifest, indent=1) + "\n")
    print(f"{len(indices)} images x {len(models)} models ({args.method}, target {args.target}) -> {out}")
    return 0
