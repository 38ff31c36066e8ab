"""Report section: training curves of the models carprobe trained itself.

A model of the report is a training run when its checkpoint sits in a run folder (config.json
written by `carprobe train` next to metrics.csv); run folders under `<results>/training/` are
shown too. Per run: Recall@1 and MAP@R on the test classes, and π_ratio (density) and spectral
decay of the train embeddings, over epochs (epoch 0 = untrained), plus a summary table.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from .config import CONFIG_FILE, CONFIG_FORMAT
from .loop import METRICS_FILE
from .losses import LOSSES, rho_label

PANELS = (("recall@1", "Recall@1 (test classes)"), ("map_at_r", "MAP@R (test classes)"),
          ("pi_ratio", "π_ratio, density (train)"), ("spectral_decay", "spectral decay ρ (train)"))


def _is_run(folder: Path) -> bool:
    config = folder / CONFIG_FILE
    if not (config.is_file() and (folder / METRICS_FILE).is_file()):
        return False
    try:
        return json.loads(config.read_text(encoding="utf-8")).get("format") == CONFIG_FORMAT
    except (ValueError, OSError, AttributeError):
        return False


def find_runs(results_dir: Path, manifest: dict[str, Any]) -> list[tuple[str, Path]]:
    """(display name, run folder) for every training run the report knows of, in model order."""
    runs: list[tuple[str, Path]] = []
    seen: set[Path] = set()
    for model in manifest.get("models", []):
        ref = model.get("ref")
        if not ref:
            continue
        path = Path(ref)
        if not path.is_absolute():
            path = (Path.cwd() / path)
        folder = path.parent if path.suffix else path
        if folder.resolve() not in seen and _is_run(folder):
            seen.add(folder.resolve())
            runs.append((model.get("name") or folder.name, folder))
    extra = results_dir / "training"
    if extra.is_dir():
        for folder in sorted(p for p in extra.iterdir() if p.is_dir()):
            if folder.resolve() not in seen and _is_run(folder):
                seen.add(folder.resolve())
                runs.append((folder.name, folder))
    return runs


def section(results_dir: Path, context) -> str | None:
    from analysis.report.figures import DOUBLE, new_figure
    from analysis.report.html import escape

    runs = find_runs(Path(results_dir), context.manifest)
    if not runs:
        return None
    tables = {name: pd.read_csv(folder / METRICS_FILE) for name, folder in runs}
    configs = {name: json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8")) for name, folder in runs}
    fig, axes = new_figure(DOUBLE, 4.4, 2, 2, sharex=True)
    for ax, (column, title) in zip(axes.flat, PANELS):
        for name, table in tables.items():
            if column in table and len(table):
                ax.plot(table["epoch"], table[column], marker="o", markersize=2.5, linewidth=1.1,
                        color=context.color(name), label=name)
        ax.set_title(title)
        ax.grid(True, axis="y")
    for ax in axes[1]:
        ax.set_xlabel("epoch (0 = untrained)")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="upper center", ncol=min(len(labels), 4), bbox_to_anchor=(0.5, 1.04))
    summary = []
    for name, table in tables.items():
        config = configs[name]
        trained = table[table["epoch"] > 0]
        best = trained.loc[trained["recall@1"].idxmax()] if len(trained) else None
        last = table.iloc[-1]
        loss_name = str(config.get("loss", ""))
        spec = LOSSES.get(loss_name)
        if float(config.get("rho_reg", 0.0)) > 0 and spec is not None and rho_label(spec) == "extension":
            loss_name += " (ρ: carprobe's extension)"
        summary.append({
            "model": name, "loss": loss_name,
            "ρ-reg p": float(config.get("rho_reg", 0.0)),
            "epochs": int(last["epoch"]),
            "Recall@1 untrained": float(table.iloc[0]["recall@1"]),
            "best Recall@1": float(best["recall@1"]) if best is not None else math.nan,
            "best epoch": int(best["epoch"]) if best is not None else 0,
            "MAP@R": float(last.get("map_at_r", math.nan)), "NMI": float(last.get("nmi", math.nan)),
            "π_ratio": float(last.get("pi_ratio", math.nan)), "spectral decay": float(last.get("spectral_decay", math.nan)),
        })
    frame = pd.DataFrame(summary)
    settings = sorted({(c.get("arch"), c.get("dim"), c.get("batch_size"), c.get("samples_per_class"), c.get("image_size"))
                       for c in configs.values()}, key=str)
    setting_text = "; ".join(f"{a}, {d}-d, batch {b} ({m} per class), {s} px" for a, d, b, m, s in settings)
    return context.section(
        "training", "Training runs",
        context.paragraph(f"Models trained with <code>carprobe train</code> ({escape(setting_text)}). "
                          "Classes are split in sorted order: the first half trains, the second half tests, "
                          "so Recall@1, MAP@R and NMI are measured on classes the model never saw."),
        context.measure("<b>π_ratio</b> = mean intra-class distance / mean distance between class centres "
                        "of the train embeddings (higher: classes less compressed). <b>Spectral decay ρ</b> = "
                        "KL divergence between the uniform distribution and the normalised singular values of "
                        "the train embeddings (lower: more directions in use). Roth et al. (ICML 2020) found "
                        "both to track generalisation to unseen classes; ρ-regularisation raises π_ratio and "
                        "lowers ρ. ρ-regularisation follows Roth et al. on triplet losses (distance-weighted "
                        "base sampler, no upper distance cap); on multi-similarity and lifted structure it is "
                        "carprobe's own extension, marked as such. Frozen BatchNorm freezes the running "
                        "statistics only; the loss's own parameters (β, proxies) get no weight decay."),
        context.figure(fig, "Per epoch: retrieval on the test classes (top) and the train embeddings' density "
                            "and spectral decay (bottom). Epoch 0 is the untrained model."),
        context.table_html(frame, "Training runs: untrained and best test Recall@1, and the last epoch's metrics.",
                           best={"best Recall@1": "max", "MAP@R": "max", "NMI": "max"}),
    )
