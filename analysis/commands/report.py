"""`carprobe report SET --models M1 M2 …`: embed, measure, write tidy results and one HTML report.

    carprobe report sets/quick --models runs/ms/best.pt runs/arc/best.pt --names ms arcface --out out/quick
    carprobe report --results out/quick          # re-render the HTML from existing results

Writes into --out (default: <SET>/report): the tidy CSVs and arrays listed in
analysis.report.context, results.json, and report.html. Embeddings come from the per-set cache
(`carprobe embed`), so a second run with the same models only recomputes the metrics.
"""

from __future__ import annotations

import argparse
import io
import json
import re
from pathlib import Path

from blender_addon.commands import common

from ._embeddings import add_bins_argument

TSNE_MAX_POINTS = 2000  # t-SNE is O(n log n) but slow in absolute terms; larger sets are subsampled
TSNE_SEED = 0
NR_PRECISION_PER_VALUE = "nr_precision_per_value.csv"  # mean z per factor value (in the number tables)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("set", nargs="?", default=None,
                        help="render set folder (holds dataset.json and metadata.csv); with --results: "
                             "optional, where the set now lives (for the sample images)")
    common.add_models(parser, required=False, what="models to compare")
    parser.add_argument("--names", nargs="+", metavar="NAME", default=None,
                        help="display names of the models, in the order of --models (default: from the refs)")
    parser.add_argument("--out", type=Path, default=None,
                        help="results folder for the CSVs, arrays and report.html (default: SET/report)")
    parser.add_argument("--label", default="car_id",
                        help="metadata column used as the class for retrieval and density metrics (default: car_id)")
    parser.add_argument("--results", type=Path, default=None, metavar="DIR",
                        help="re-render DIR/report.html from the results already in DIR (no embedding, no metrics)")
    parser.add_argument("--title", default=None, help="report title (default: 'carprobe report: <set name>')")
    parser.add_argument("--tsne-points", type=int, default=TSNE_MAX_POINTS,
                        help=f"largest number of images in the t-SNE plots; larger sets are subsampled "
                             f"(seeded; default {TSNE_MAX_POINTS}; 0 = no t-SNE)")
    add_bins_argument(parser)
    parser.add_argument("--batch-size", type=int, default=64)
    common.add_workers(parser, "DataLoader processes decoding images", common.AUTO_LOADER_WORKERS)
    common.add_device(parser)
    common.add_progress(parser)


def run(args: argparse.Namespace) -> int:
    from blender_addon.core.errors import CarprobeError

    from ..report import write_report

    if args.results is not None:
        if args.models:
            raise CarprobeError("--results re-renders existing results; leave out --models (or drop --results "
                                "to compute new ones)")
        out = write_report(Path(args.results) / "report.html", args.set, args.results, title=args.title)
        print(out)
        _print_summary(Path(args.results))
        return 0
    if args.set is None:
        raise CarprobeError("give a render set: carprobe report SET --models M1 M2 … (or --results DIR to re-render)")
    if not args.models:
        raise CarprobeError("--models: give at least one model (checkpoint, TorchScript file, reality-check "
                            "folder or torchvision:<arch>[:dim])")
    if args.names is not None and len(args.names) != len(args.models):
        raise CarprobeError(f"--names: {len(args.names)} name(s) for {len(args.models)} model(s); give one per model")
    if args.tsne_points < 0:
        raise CarprobeError(f"--tsne-points {args.tsne_points}: must be >= 0")
    results_dir = compute_results(args)
    out = write_report(results_dir / "report.html", args.set, results_dir, title=args.title)
    print(out)
    _print_summary(results_dir)
    return 0


def compute_results(args: argparse.Namespace) -> Path:
    """Embed every model (cached), compute every table, write them and results.json; return the folder."""
    import numpy as np
    import pandas as pd

    from blender_addon.core.errors import CarprobeError
    from blender_addon.core.render_set import atomic_write_text
    from blender_addon.core.version import CARPROBE_VERSION

    from .. import effects, metrics
    from ..data import RenderSetData
    from ..embed import embed_render_set
    from ..models import resolve_device, weights_kind
    from ._embeddings import load_models
    from ..report import context as R

    bins = metrics.check_bins(args.bins)
    data = RenderSetData(args.set)
    continuous = metrics.continuous_factors(data.info)
    meta = data.metadata
    if meta.empty:
        raise CarprobeError(f"render set {args.set} holds no images yet; render it first")
    factors = [f for f in data.factors if f in meta and meta[f].nunique() > 1]
    if not factors:
        raise CarprobeError(f"render set {args.set}: no factor varies (dataset.json factors: "
                            f"{', '.join(data.factors) or 'none'}); property silhouettes need at least one "
                            "factor with two or more values")
    if args.label not in meta:
        raise CarprobeError(f"--label {args.label!r}: no such metadata column in {args.set}; use e.g. car_id "
                            f"or one of the factors ({', '.join(factors)})")
    names = list(args.names) if args.names else default_model_names(args.models, args.random_init)
    if len(set(names)) != len(names):
        dupes = sorted({n for n in names if names.count(n) > 1})
        raise CarprobeError(f"model names must differ; repeated: {', '.join(dupes)} (set them with --names)")
    out = Path(args.out) if args.out is not None else Path(args.set) / "report"
    common.output_folder(out)
    device = resolve_device(args.device)

    tables: dict[str, list] = {name: [] for name in (R.SILHOUETTES, R.SILHOUETTES_PER_VALUE, R.NR_PRECISION,
                                                     R.EMBEDDING_METRICS, R.RETRIEVAL, R.SPECTRA, R.TSNE,
                                                     NR_PRECISION_PER_VALUE, effects.EFFECTS_CSV,
                                                     effects.RESPONSE_CSV)}
    effect_plan, effect_notes = effects.optional_plan(meta, factors)
    for note in effect_notes:
        print(f"note: {note}")
    model_entries = []
    labels = meta[args.label].to_numpy()
    tsne_rows = _tsne_subsample(len(meta), args.tsne_points)
    ks = [k for k in (1, 2, 4, 8) if k <= len(meta) - 1]
    if pd.Series(labels).nunique() < 2:
        raise CarprobeError(f"--label {args.label!r}: every image has the same value ({labels[0]!r}); retrieval "
                            "and density need at least two classes (choose another --label)")
    for name, ref, model in zip(names, args.models, load_models(args.models, args, lazy=True)):
        embeddings = embed_render_set(data, model, batch_size=args.batch_size, num_workers=args.workers, device=device,
                                      progress=args.progress)
        model_entries.append({
            "name": name, "ref": str(ref), "fingerprint": model.fingerprint, "arch": getattr(model, "arch", ""),
            "embedding_dim": int(model.embedding_dim), "normalize": bool(model.normalize),
            "distance": model.distance, "preprocess": model.preprocess.to_dict(),
            "random_init": weights_kind(model) == "random init", "weights": weights_kind(model),
        })
        # silhouette (cosine, L2-normalised) and NR-Prec (Euclidean, raw) per factor and subset
        scores, per_value, notes = metrics.silhouette_by_factor({name: embeddings}, meta, factors=factors,
                                                                measure="both", bins=bins, continuous=continuous,
                                                                device=device)
        for note in notes:
            print(f"note: {note}")
        tables[R.SILHOUETTES].append(scores[scores["metric"] == "silhouette"])
        tables[R.NR_PRECISION].append(scores[scores["metric"] == "nr_precision"])
        tables[R.SILHOUETTES_PER_VALUE].append(per_value[per_value["metric"] == "silhouette"])
        tables[NR_PRECISION_PER_VALUE].append(per_value[per_value["metric"] == "nr_precision"])
        tables[R.EMBEDDING_METRICS].append(_tidy(metrics.embedding_space_metrics(embeddings, labels),
                                                 name, args.label))
        tables[R.RETRIEVAL].append(_tidy(metrics.retrieval_metrics(embeddings, labels, ks=ks, device=device), name, args.label))
        if effect_plan is not None:
            effect_rows, response_rows = effects.model_effects(name, embeddings, meta, effect_plan,
                                                               distance=model.distance, normalize=bool(model.normalize))
            tables[effects.EFFECTS_CSV].append(effect_rows)
            tables[effects.RESPONSE_CSV].append(response_rows)
        singular = metrics.singular_values(embeddings, normalize=True)
        spectrum = singular / singular.sum()
        tables[R.SPECTRA].append(pd.DataFrame({"model": name, "rank": np.arange(1, len(spectrum) + 1),
                                               "value": spectrum}))
        if tsne_rows is not None:
            xy = _tsne(embeddings[tsne_rows])
            tables[R.TSNE].append(pd.DataFrame({"model": name, "index": meta["index"].to_numpy()[tsne_rows],
                                                "x": xy[:, 0], "y": xy[:, 1]}))
    for file_name, frames in tables.items():
        path = out / file_name
        frames = [f for f in frames if f is not None and len(f)]
        if not frames:
            path.unlink(missing_ok=True)  # a stale table of an earlier run must not reappear
            continue
        frame = pd.concat(frames, ignore_index=True)
        buffer = io.StringIO()
        frame.to_csv(buffer, index=False, float_format="%.10g")
        atomic_write_text(path, buffer.getvalue())
    info = data.info
    perplexity = _perplexity(len(tsne_rows)) if tsne_rows is not None else None
    manifest = {
        "format": R.RESULTS_FORMAT, "version": 1, "carprobe_version": CARPROBE_VERSION,
        "set": {"path": str(Path(args.set).resolve()), "name": info.get("name", Path(args.set).name),
                "spec_hash": info.get("spec_hash", ""), "images": int(len(meta)), "counts": info.get("counts", {}),
                "factors": factors,
                "factor_values": {f: [_plain(v) for v in pd.unique(meta[f])] for f in factors}},
        "label": args.label,
        "models": model_entries,
        "tsne": None if tsne_rows is None else {"n": int(len(tsne_rows)), "total": int(len(meta)),
                                                "perplexity": perplexity, "seed": TSNE_SEED,
                                                "metric": "cosine", "init": "pca"},
    }
    atomic_write_text(out / R.RESULTS_JSON, json.dumps(manifest, indent=1) + "\n")
    return out


def _tidy(result, model: str, factor: str, subset: str = "all"):
    """A metrics result (dict of name → number, or a DataFrame with metric/value) as a tidy table."""
    import pandas as pd

    if isinstance(result, pd.DataFrame):
        frame = result.copy()
        if "metric" not in frame or "value" not in frame:
            raise TypeError(f"metrics table without metric/value columns: {list(frame.columns)}")
    else:
        frame = pd.DataFrame({"metric": list(result), "value": [float(v) for v in result.values()]})
    frame["model"], frame["factor"] = model, factor
    if "subset" not in frame:
        frame["subset"] = subset
    first = ["model", "factor", "subset", "metric", "value"]
    return frame[first + [c for c in frame.columns if c not in first]]


def _plain(value):
    return value.item() if hasattr(value, "item") else value


def default_model_names(refs: list[str], random_init: bool = False) -> list[str]:
    """Short display names: the checkpoint's run folder or file stem, the arch of torchvision refs;
    imagenet:/untrained: specs keep their whole spec (the report finds its baselines by it)."""
    names = []
    for ref in refs:
        text = str(ref)
        if text.startswith("torchvision:"):
            names.append(("untrained:" if random_init else "") + text.split(":", 1)[1])
            continue
        if text.startswith(("imagenet:", "untrained:")):
            names.append(text)
            continue
        path = Path(text)
        stem = path.stem if path.suffix else path.name
        if stem in ("best", "last", "model", "checkpoint") and path.parent.name:
            stem = path.parent.name
        names.append(re.sub(r"_reproduction\d+$", "", stem))
    return names


def _tsne_subsample(n: int, max_points: int):
    import numpy as np

    if max_points == 0 or n < 5:
        return None
    if n <= max_points:
        return np.arange(n)
    return np.sort(np.random.default_rng(TSNE_SEED).choice(n, size=max_points, replace=False))


def _perplexity(n: int) -> float:
    return float(max(2.0, min(30.0, (n - 1) / 3.0)))


def _tsne(embeddings):
    """2-D t-SNE (scikit-learn, seeded) of L2-normalised embeddings with the cosine distance."""
    import numpy as np
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    x = np.asarray(embeddings, dtype=np.float64)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    tsne = TSNE(n_components=2, perplexity=_perplexity(len(x)), metric="cosine", init="pca",
                random_state=TSNE_SEED, n_jobs=1)
    # One OpenMP thread: Barnes-Hut's threads spin-wait, and on a busy 2-core machine that made a
    # 42-point t-SNE take 25 s instead of 0.4 s; one thread is also bit-for-bit reproducible.
    with threadpool_limits(1):
        return tsne.fit_transform(x)


def _print_summary(results_dir: Path) -> None:
    """Per model: the factor its embedding clusters by most (highest controlled silhouette)."""
    import pandas as pd

    from ..report.context import SILHOUETTES, factor_label
    from ..report.sections import primary_rows

    path = results_dir / SILHOUETTES
    if not path.is_file():
        return
    frame = pd.read_csv(path)
    for column in ("model", "factor", "subset", "metric"):
        frame[column] = frame[column].fillna("").astype(str)
    frame = primary_rows(frame[frame["metric"].str.startswith("silhouette")])
    manifest = json.loads((results_dir / "results.json").read_text(encoding="utf-8"))
    order = [m["name"] for m in manifest.get("models", [])]
    print("most clustered-by factor per model (property silhouette, cosine):")
    for model in order + sorted(set(frame["model"]) - set(order)):
        rows = frame[frame["model"] == model]
        if rows.empty:
            continue
        top = rows.loc[rows["value"].idxmax()]
        runner = rows.drop(index=top.name).sort_values("value", ascending=False)
        tail = f" (next: {factor_label(runner.iloc[0]['factor'])} {runner.iloc[0]['value']:.3f})" if len(runner) else ""
        print(f"  {model}: {factor_label(top['factor'])} {top['value']:.3f}{tail}")
