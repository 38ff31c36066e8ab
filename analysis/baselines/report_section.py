"""Report section: the models against the ImageNet-only and untrained baselines.

Shows the test-class Recall@1 of the training set (test_class_recall.csv, written by
`carprobe demo`) with intervals and chance, the analysis set's Recall@1, the factors each model
is significantly sensitive to next to the ImageNet-only network's, and saliency agreement next
to its untrained floor. Left out when the results hold none of these.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from . import (SIGNIFICANT_Z, TEST_CLASS_RECALL, baseline_kind, recall_verdict, saliency_floor,
               significant_factors)


def section(results_dir: Path, context) -> str | None:
    from analysis.report.html import escape

    results_dir = Path(results_dir)
    parts = []
    recall = context.table(TEST_CLASS_RECALL)
    if recall is not None and len(recall):
        first = recall.iloc[0]
        frame = pd.DataFrame({
            "model": recall["model"],
            "weights": [{"imagenet": "ImageNet only", "untrained": "random init"}.get(baseline_kind(m), "fine-tuned")
                        for m in recall["model"]],
            "Recall@1": recall["value"], "95% low": recall["ci_low"], "95% high": recall["ci_high"],
            "queries": recall["n"].astype(int)})
        verdict = recall_verdict(recall)
        parts.append(context.table_html(
            frame, f"Recall@1 on the {int(first['classes'])} test classes ({escape(str(first['label']))}) of the "
                   f"training set, which no model trained on; 95% Wilson interval over the queries. Chance: "
                   f"{first['chance']:.3f}. {escape(verdict)}", cell_html={"model": context.model_html}))
    significant = significant_factors(context.table("silhouettes.csv"), context.table("nr_precision.csv"))
    if significant:
        factors = sorted({f for found in significant.values() for f in found})
        imagenet = next((m for m in significant if baseline_kind(m) == "imagenet"), None)
        rows = []
        for model, found in significant.items():
            row = {"model": model}
            for factor in factors:
                mark = "yes" if factor in found else "–"
                if imagenet is not None and model != imagenet and (factor in found) != (factor in significant[imagenet]):
                    mark += " ≠ ImageNet"
                row[context.factor_label(factor, unit=False)] = mark
            rows.append(row)
        parts.append(context.table_html(
            pd.DataFrame(rows), f"Factors each model is significantly sensitive to, on the factor's own subset: "
                                f"NR-Prec mean z ≥ {SIGNIFICANT_Z} (two-sided p = 0.01) or a silhouette whose 95% "
                                "bootstrap interval lies above 0. <i>≠ ImageNet</i>: differs from the ImageNet-only "
                                "network.", cell_html={"model": context.model_html}))
    floor = saliency_floor(results_dir)
    if floor:
        frame = pd.DataFrame([{"kind": r["kind"], "map A": r["a"], "map B": r["b"], "Spearman": r["mean"],
                               "95% low": r["ci_low"], "95% high": r["ci_high"], "images": int(r["n"])}
                              for r in floor])
        parts.append(context.table_html(
            frame, "Saliency agreement between models next to its floor: a model against its copy with every "
                   "layer re-initialised, and two differently seeded untrained networks. Agreement at the floor "
                   "reflects the images and the method, not what the models learned."))
    if not parts:
        return None
    return context.section(
        "baselines", "Against the baselines",
        context.paragraph("Each fine-tuned model next to the same backbone with ImageNet weights only "
                          "(<code>imagenet:&lt;arch&gt;</code>) and with random weights "
                          "(<code>untrained:&lt;arch&gt;</code>): what DML training added, and what no "
                          "training at all gives."), *parts)
