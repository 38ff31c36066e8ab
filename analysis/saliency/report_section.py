"""The saliency section of the HTML report (`section(results_dir, context)`).

Reads what `carprobe saliency … --out DIR` wrote, with DIR either `results_dir/saliency` or
`results_dir` itself: saliency.json, the tidy CSVs and the PNG figures (drawn by
analysis.saliency.figures, so the report and the command show the same pictures).
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from analysis.report import html as H

MANIFEST = "saliency.json"
METRIC_TEXT = {"spearman": "Spearman rank correlation", "pearson": "Pearson correlation",
               "js_nats": "Jensen–Shannon divergence (nats, 0..ln 2; 0 = same distribution)",
               "iou": "top-k % pixel overlap (IoU)", "ssim": "structural similarity (SSIM)"}


def saliency_dir(results_dir: str | Path) -> Path | None:
    for candidate in (Path(results_dir) / "saliency", Path(results_dir)):
        if (candidate / MANIFEST).is_file():
            return candidate
    return None


def _csv(folder: Path, name: str) -> pd.DataFrame | None:
    path = folder / name
    if not path.is_file() or path.stat().st_size == 0:
        return None
    frame = pd.read_csv(path)
    return None if frame.empty else frame


def _png(folder: Path, name: str) -> bytes | None:
    path = folder / name
    return path.read_bytes() if path.is_file() else None


def section(results_dir, context) -> str | None:
    folder = saliency_dir(results_dir)
    if folder is None:
        return None
    manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    models = [m["name"] for m in manifest.get("models", [])]
    method, target = manifest.get("method", "?"), manifest.get("target", "?")
    parts: list[str] = [context.paragraph(
        f"Attribution maps ({H.escape(method)}, explained scalar: {H.escape(target)}) of "
        f"{len(manifest.get('images', []))} images for {len(models)} model(s): "
        + ", ".join(H.escape(m) for m in models) + ".")]
    parts.append(context.measure(
        "An embedding has no class logit, so the explained scalar is explicit: <b>baseline</b> = distance, in the "
        "distance the model trains with, to the embedding of a black image (Kobs et al.); <b>reference</b> = "
        "cosine similarity to another image of the same car; <b>centroid</b> = cosine similarity to the car's "
        "centroid without the image; <b>norm</b> = squared embedding norm. Maps are compared image by image; "
        "correlations are averaged with Fisher's z; intervals are 95% over images. Jensen–Shannon divergence is "
        "in nats (natural log, 0 to ln 2 ≈ 0.693), as Kobs et al. computed it. Noisy methods draw each image's "
        "noise from (seed, image index), so a map does not depend on its batch. Pointing game: the strongest "
        "pixel of the map before normalisation (normalisation clips about 1% of pixels to the same top "
        "value)."))

    png = _png(folder, "saliency_grid.png")
    if png:
        parts.append(context.figure(png, "Images and attribution maps, one colour scale for the whole figure."))

    summary = _csv(folder, "saliency_compare.csv")
    if summary is not None:
        png = _png(folder, "saliency_matrix.png")
        if png:
            parts.append(context.figure(png, "Model × model agreement of the maps: mean over images with the "
                                             "95% interval in brackets."))
        table = summary.copy()
        table["metric"] = table["metric"].map(lambda m: METRIC_TEXT.get(m, m))
        parts.append(context.table_html(table, "Map agreement between models (every number of the matrix)."))

    shares = _csv(folder, "saliency_masks.csv")
    mask_summary = _csv(folder, "saliency_mask_summary.csv")
    if shares is not None:
        png = _png(folder, "saliency_masks.png")
        parts.append(context.measure(
            "Share of attribution mass (|map|) on each part of the render's own masks; shares sum to 1. "
            "'pixel area' is what a uniform map would give. Pointing game: is the strongest pixel (of the map "
            "before normalisation) on the car?"))
        if png:
            parts.append(context.figure(png, "Where the attribution mass falls, per car part."))
        wide = shares.pivot_table(index="model", columns="part", values="share", sort=False).reset_index()
        parts.append(context.table_html(wide, "Mean share of attribution mass per part."))
    if mask_summary is not None:
        parts.append(context.table_html(mask_summary, "Car share of attribution, car pixel area and pointing-game "
                                                      "hit rate, with 95% intervals over images."))

    sanity = _csv(folder, "saliency_sanity.csv")
    independent = _csv(folder, "saliency_sanity_independent.csv")
    if sanity is not None or independent is not None:
        parts.append(context.measure(
            "Sanity checks (Adebayo et al., 2018): <b>cascading</b> re-initialises layers from the top down, "
            "cumulatively; <b>independent</b> re-initialises one layer (group) at a time, every other layer "
            "trained. After each step the maps are compared with the original. Maps that stay similar while "
            "the weights are destroyed show the input (edges), not what the model learned."))
    for table, png_name, what in ((sanity, "saliency_sanity.png", "Cascading"),
                                  (independent, "saliency_sanity_independent.png", "Independent")):
        if table is None:
            continue
        png = _png(folder, png_name)
        if png:
            parts.append(context.figure(png, f"{what} randomisation: similarity to the original maps after each step."))
        parts.append(context.table_html(table, f"{what} randomisation: similarity to the original maps."))
    return context.section("saliency", "Saliency: where the models look", *parts)
