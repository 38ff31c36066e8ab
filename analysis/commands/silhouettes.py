"""`carprobe silhouettes SET --models …`: per-factor property silhouettes and Kobs et al.'s NR-Prec.

Writes tidy tables (columns model, factor, subset, metric, value, ci_low, ci_high (95% bootstrap
over images), n, n_labels, distance, binned, binning, max_attainable) into --out: silhouettes.csv + silhouettes_per_value.csv, and nr_precision.csv +
nr_precision_per_value.csv; subset = the factor (its one-factor-at-a-time subset) or "all".
"""

from __future__ import annotations

import argparse

from ._embeddings import add_bins_argument, add_model_arguments


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    parser.add_argument("--metric", choices=("cosine", "euclidean"), default="cosine",
                        help="silhouette distance (default cosine, on L2-normalised embeddings)")
    parser.add_argument("--measure", choices=("silhouette", "nrprec", "both"), default="both",
                        help="silhouette, NR-Prec (Kobs et al.; Euclidean on raw embeddings) or both")
    parser.add_argument("--factors", nargs="+", default=None,
                        help="only these factor columns (default: the set's varying factors)")
    add_bins_argument(parser)


def run(args: argparse.Namespace) -> int:
    from ..metrics import check_bins, continuous_factors, silhouette_by_factor
    from ._embeddings import embed_models, out_dir, print_pivot, write_csv

    bins = check_bins(args.bins)  # before embedding anything
    data, embeddings, device = embed_models(args)
    metadata = data.metadata
    factors = args.factors if args.factors is not None else (data.factors or None)
    tables = silhouette_by_factor(embeddings, metadata, metric=args.metric, factors=factors,
                                  measure=args.measure, bins=bins,
                                  continuous=continuous_factors(data.info), device=device)
    out = out_dir(args, data)
    written = []
    for metric, stem in (("silhouette", "silhouettes"), ("nr_precision", "nr_precision")):
        if args.measure not in ("both", "silhouette" if metric == "silhouette" else "nrprec"):
            continue
        scores = tables.scores[tables.scores["metric"] == metric]
        per_value = tables.per_value[tables.per_value["metric"] == metric]
        write_csv(scores, out / f"{stem}.csv")
        write_csv(per_value, out / f"{stem}_per_value.csv")
        written += [f"{stem}.csv", f"{stem}_per_value.csv"]
        label = (f"silhouette ({args.metric})" if metric == "silhouette"
                 else "NR-Prec mean z (euclidean; Kobs et al. call a mean >= 2.576, the two-sided p = 0.01 "
                      "per-image threshold, significant)")
        print_pivot(scores, ["factor", "subset"], f"{label}, {len(metadata)} images:")
    for note in tables.notes:
        print(f"note: {note}")
    print(f"wrote {', '.join(written)} to {out}")
    return 0
