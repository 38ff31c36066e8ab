"""`carprobe metrics SET --models … --label car_id`: embedding-space metrics (Roth et al.:
pi_intra, pi_inter, pi_ratio, spectral decay rho and rho without the largest singular value) and
retrieval metrics (Recall@k, R-Precision, MAP@R, NMI) with the --label column as the class.

Writes embedding_metrics.csv and retrieval.csv (columns model, factor = the label column,
subset = "all", metric, value) into --out. Retrieval metric names, with pytorch-metric-learning's
in brackets: recall@1 (precision_at_1), recall@k, r_precision (r_precision), map_at_r
(mean_average_precision_at_r), nmi (NMI); the report reads either spelling.
"""

from __future__ import annotations

import argparse

from ._embeddings import add_model_arguments


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    parser.add_argument("--label", default="car_id", help="metadata column used as the class (default car_id)")
    parser.add_argument("--ks", type=int, nargs="+", default=[1, 2, 4, 8], help="k of Recall@k (default 1 2 4 8)")
    parser.add_argument("--retrieval-metric", choices=("cosine", "euclidean"), default="cosine",
                        help="distance for retrieval neighbours (default cosine)")
    parser.add_argument("--no-nmi", action="store_true", help="skip NMI (k-means)")


def run(args: argparse.Namespace) -> int:
    import pandas as pd

    from blender_addon.core.errors import CarprobeError

    from ..metrics import embedding_space_metrics, factor_labels, retrieval_metrics
    from ..data import RenderSetData
    from ._embeddings import embed_models, out_dir, print_pivot, write_csv

    metadata = RenderSetData(args.set).metadata  # check the label before embedding anything
    if args.label not in metadata.columns:
        raise CarprobeError(f"--label {args.label!r}: not a column of {args.set}/metadata.csv; available: "
                            f"{', '.join(metadata.columns)}")
    labels, _ = factor_labels(metadata[args.label], bins=None)  # never binned: classes as they are
    data, embeddings, device = embed_models(args)
    space_rows, retrieval_rows = [], []
    for model, X in embeddings.items():
        base = {"model": model, "factor": args.label, "subset": "all"}
        for metric, value in embedding_space_metrics(X, labels).items():
            space_rows.append({**base, "metric": metric, "value": value})
        for metric, value in retrieval_metrics(X, labels, ks=args.ks, metric=args.retrieval_metric,
                                               nmi=not args.no_nmi, device=device).items():
            retrieval_rows.append({**base, "metric": metric, "value": value})
    space, retrieval = pd.DataFrame(space_rows), pd.DataFrame(retrieval_rows)
    out = out_dir(args, data)
    write_csv(space, out / "embedding_metrics.csv")
    write_csv(retrieval, out / "retrieval.csv")
    print_pivot(space, ["metric"], f"embedding-space metrics (classes = {args.label}, cosine):")
    print_pivot(retrieval, ["metric"], f"retrieval ({args.retrieval_metric}, leave-one-out, classes = {args.label}):")
    print(f"wrote embedding_metrics.csv, retrieval.csv to {out}")
    return 0
