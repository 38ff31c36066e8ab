"""Roth et al.'s toy example (ICML 2020), on their own setup (toy_experiments/
toy_example_diagonal_lines.py in their repository), averaged over seeds.

Data: four training classes on consecutive intervals of the diagonal y = x ((0.1, 0.3),
(0.35, 0.55), (0.6, 0.8), (0.85, 1.05)), 15 points each drawn (seeded) from 100 evenly spaced
ones; four test classes on two vertical (x = 0.2) and two horizontal (y = 0.2) segments.
Network: MLP 2-30-30-2 with L2-normalised outputs (points on the unit circle); Adam, lr 0.03,
200 iterations, batches of 24 points drawn at random. Tuples: every triplet (a, p, n) of the
batch, a != p of one class, n of another.
- plain run: loss = mean relu(d(a, p)) + mean relu(0.1 - d(a, n));
- ρ run: the positive term is dropped, and with probability p = 0.001 a triplet becomes
  (a, a, j), j another sample of a's class (`RhoMiner`, the same code `carprobe train` uses);
  loss = mean relu(0.1 - d(a, n));
- push-only ablation (not in Roth's script): the positive term dropped, no swaps (p = 0), to
  tell how much of the ρ run's effect comes from the swaps and how much from the dropped pull.
Measured per seed: spectral decay ρ = KL(uniform ‖ normalised singular values) and π_ratio of the
train embeddings, Recall@1 / MAP@R / NMI on the test classes; reported as means with 95%
t-intervals over seeds and as "lower with ρ in k of N seeds".

What it can show is narrow, and `conclusions` says it from the numbers of the run: without the
pull term and with a few same-class pushes, the training classes no longer collapse onto one
direction of the circle, so the singular-value spectrum flattens (spectral decay falls). That is
the mechanism Roth et al. illustrate. The ablation shows how much of it the dropped pull term
alone does (in our runs: nearly all of it); the toy does not show that generalisation improves
(on these four test segments Recall@1 need not rise), and it is not a test of ρ-regularisation
in `carprobe train`, which keeps the positive term.

    python -m analysis.train.toy --out DIR [--seeds 8]   # DIR/toy.png, toy.csv, toy_summary.csv
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .rho import RhoMiner

POINTS_PER_LINE = 100          # evenly spaced candidates per segment
POINTS_PER_CLASS = 15          # drawn from them (Roth: 15 % of 100)
TRAIN_INTERVALS = [(0.1, 0.3), (0.35, 0.55), (0.6, 0.8), (0.85, 1.05)]          # on y = x
TEST_SEGMENTS = [((0.2, 0.2), (0.2, 0.4)), ((0.2, 0.55), (0.2, 0.85)),           # vertical, x = 0.2
                 ((0.4, 0.2), (0.6, 0.2)), ((0.7, 0.2), (0.9, 0.2))]             # horizontal, y = 0.2
MARGIN = 0.1
DEFAULT_RHO = 0.001
DEFAULT_SEEDS = 8
SETTINGS = ("plain", "push", "rho")   # (swap p, pull term): (0, yes), (0, no), (rho, no)
METRICS = ("train_spectral_decay", "train_pi_ratio", "test_recall@1", "test_map_at_r", "test_nmi")


def toy_data(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(train points, train labels, test points, test labels), points drawn with `seed`."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0.0, 1.0, POINTS_PER_LINE)
    segments = [((lo, lo), (hi, hi)) for lo, hi in TRAIN_INTERVALS] + TEST_SEGMENTS
    points = []
    for start, end in segments:
        chosen = np.sort(rng.choice(POINTS_PER_LINE, POINTS_PER_CLASS, replace=False))
        points.append(np.asarray(start) + t[chosen, None] * (np.asarray(end) - np.asarray(start)))
    labels = np.repeat(np.arange(4), POINTS_PER_CLASS)
    train = np.concatenate(points[:4]).astype(np.float32)
    test = np.concatenate(points[4:]).astype(np.float32)
    return train, labels, test, labels.copy()


def toy_network() -> nn.Module:
    return nn.Sequential(nn.Linear(2, 30), nn.ReLU(), nn.Linear(30, 30), nn.ReLU(), nn.Linear(30, 2))


def toy_loss(embeddings: torch.Tensor, triplets, pull: bool) -> torch.Tensor:
    """mean relu(0.1 - d(a, n)), plus mean d(a, p) in the plain run."""
    a, p, n = triplets
    push = F.relu(MARGIN - (embeddings[a] - embeddings[n]).norm(dim=1)).mean()
    if not pull:
        return push
    return (embeddings[a] - embeddings[p]).norm(dim=1).mean() + push


def train_toy(rho: float, seed: int = 0, iterations: int = 200, batch_size: int = 24, lr: float = 0.03,
              pull: bool | None = None):
    """Train on Roth's setup; rho = 0 is the plain run, rho > 0 the ρ run (pull term dropped, as
    Roth's script). pull overrides whether the positive term is used. Returns (net, losses)."""
    pull = rho == 0 if pull is None else pull
    torch.manual_seed(seed)
    x, y, _, _ = toy_data(seed)
    x_t, y_t = torch.from_numpy(x), torch.from_numpy(y)
    net = toy_network()
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    miner = RhoMiner(rho, base_miner=None, tuples="triplet", seed=seed)  # every triplet of the batch
    rng = np.random.default_rng(seed + 1)
    losses = []
    for _ in range(iterations):
        batch = rng.choice(len(x), batch_size, replace=False)
        embeddings = F.normalize(net(x_t[batch]), dim=1)
        loss = toy_loss(embeddings, miner(embeddings, y_t[batch]), pull=pull)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return net, losses


def embed(net: nn.Module, points: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return F.normalize(net(torch.from_numpy(points)), dim=1).numpy()


def evaluate(net: nn.Module, seed: int) -> dict[str, float | np.ndarray]:
    from analysis.metrics.retrieval import retrieval_metrics
    from analysis.metrics.space import embedding_space_metrics, singular_values

    x, y, xt, yt = toy_data(seed)
    train, test = embed(net, x), embed(net, xt)
    space = embedding_space_metrics(train, y)
    retrieval = retrieval_metrics(test, yt, ks=(1,), nmi=True)
    s = singular_values(train)
    return {"test_recall@1": retrieval["recall@1"], "test_map_at_r": retrieval["map_at_r"],
            "test_nmi": retrieval["nmi"], "train_pi_ratio": space["pi_ratio"], "train_spectral_decay": space["rho"],
            "spectrum": s / s.sum(), "train": train, "test": test, "x": x, "y": y, "xt": xt, "yt": yt}


def run_seeds(seeds: int = DEFAULT_SEEDS, rho: float = DEFAULT_RHO):
    """Every setting for seeds 0..seeds-1 -> (per-seed DataFrame: setting, seed, metric, value;
    {setting: evaluation of seed 0} for the plot)."""
    import pandas as pd

    if not isinstance(seeds, int) or seeds < 2:
        raise ValueError(f"seeds = {seeds!r}: need at least 2 for an interval")
    rows, first = [], {}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a 2-30-30-2 MLP: extra threads only cost (10x on a busy machine)
    try:
        for seed in range(seeds):
            for setting, p, pull in (("plain", 0.0, True), ("push", 0.0, False), ("rho", rho, False)):
                result = evaluate(train_toy(p, seed, pull=pull)[0], seed)
                rows.extend({"setting": setting, "seed": seed, "metric": m, "value": float(result[m])}
                            for m in METRICS)
                if seed == 0:
                    first[setting] = result
    finally:
        torch.set_num_threads(threads)
    return pd.DataFrame(rows), first


def summarize(per_seed):
    """setting, metric, mean, ci_low, ci_high, n (95% t-interval over seeds)."""
    import pandas as pd
    from scipy import stats

    rows = []
    for (setting, metric), group in per_seed.groupby(["setting", "metric"], sort=False):
        v = group["value"].to_numpy(dtype=float)
        half = stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v))
        rows.append({"setting": setting, "metric": metric, "mean": v.mean(), "ci_low": v.mean() - half,
                     "ci_high": v.mean() + half, "n": len(v)})
    return pd.DataFrame(rows)


def paired(per_seed, metric: str, setting: str = "rho", than: str = "plain") -> tuple[int, int]:
    """(seeds where `setting` is lower than `than` on `metric`, seeds)."""
    wide = per_seed[per_seed["metric"] == metric].pivot(index="seed", columns="setting", values="value")
    return int((wide[setting] < wide[than]).sum()), len(wide)


def conclusions(per_seed, summary) -> list[str]:
    """What the run shows, in plain sentences built from its own numbers."""
    s = summary.set_index(["setting", "metric"])

    def interval(setting: str, metric: str) -> str:
        r = s.loc[(setting, metric)]
        return f"{r['mean']:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}]"

    def apart(metric: str, setting: str = "rho", than: str = "plain") -> str:
        """How `setting` compares with `than`: intervals apart, or not."""
        base, other = s.loc[(than, metric)], s.loc[(setting, metric)]
        if other["ci_high"] < base["ci_low"]:
            return "lower"
        if other["ci_low"] > base["ci_high"]:
            return "higher"
        return "not clearly different"

    def compared(word: str, other: str) -> str:
        return f"{word} from {other}" if word == "not clearly different" else f"{word} than {other}"

    n = int(s.loc[("plain", "train_spectral_decay"), "n"])
    lines = []
    for metric, name in (("train_spectral_decay", "spectral decay (train)"), ("train_pi_ratio", "π_ratio (train)"),
                         ("test_recall@1", "Recall@1 (test classes)")):
        lower, total = paired(per_seed, metric)
        lines.append(f"{name}: plain {interval('plain', metric)}, ρ {interval('rho', metric)} "
                     f"(means, 95% intervals over {n} seeds); lower with ρ in {lower}/{total} seeds")
    decay, recall = apart("train_spectral_decay"), apart("test_recall@1")
    lines.append(f"What it shows: with ρ the spectral decay is {compared(decay, 'without')}"
                 + (" — the train embeddings no longer collapse onto one direction of the circle (a flatter "
                    "singular-value spectrum), the effect Roth et al. illustrate." if decay == "lower" else "."))
    lower, total = paired(per_seed, "train_spectral_decay", "rho", "push")
    ablation = apart("train_spectral_decay", "rho", "push")
    lines.append(f"Ablation, push only without swaps (p = 0): spectral decay {interval('push', 'train_spectral_decay')}; "
                 f"the ρ run is {compared(ablation, 'it')} (lower in {lower}/{total} seeds)"
                 + (", so here the drop comes from dropping the pull term, not from the ρ swaps."
                    if ablation != "lower" else ", so the swaps add to what dropping the pull term does."))
    if recall == "higher":
        lines.append("On generalisation: test Recall@1 is higher with ρ here, but one toy whose ρ run also drops "
                     "the positive term is an illustration, not evidence that ρ-regularisation generalises better.")
    else:
        lines.append(f"What it does not show: better generalisation. Test Recall@1 is {recall} with ρ on these "
                     "four test segments; the toy illustrates the spectrum, not a gain on unseen classes, and its "
                     "ρ run also drops the positive term, which `carprobe train --rho-reg` keeps.")
    return lines


def plot(first: dict[str, dict], summary, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train_colors = ["#0072B2", "#E69F00", "#009E73", "#CC79A7"]
    test_colors = ["#D55E00", "#56B4E9", "#000000", "#999933"]
    some = next(iter(first.values()))
    x, y, xt, yt = some["x"], some["y"], some["xt"], some["yt"]
    fig, axes = plt.subplots(1, 4, figsize=(13.5, 3.6))
    ax = axes[0]
    for c in range(4):
        ax.scatter(*x[y == c].T, s=10, color=train_colors[c], label=f"train {c}")
        ax.scatter(*xt[yt == c].T, s=14, marker="x", color=test_colors[c], label=f"test {c}")
    ax.set_title("input (seed 0): train on y = x (dots)\ntest on x = 0.2 and y = 0.2 (crosses)")
    ax.set_aspect("equal")
    ax.legend(fontsize=6, ncol=2, loc="lower right", frameon=False)
    theta = np.linspace(0, 2 * np.pi, 200)
    titles = {"plain": "plain (pull + push)", "push": "push only (ablation)", "rho": "ρ run (push only, p swaps)"}
    for ax, setting in zip(axes[1:3], ("plain", "rho")):
        result = first[setting]
        ax.plot(np.cos(theta), np.sin(theta), color="#D0D0D0", linewidth=0.8)
        for c in range(4):
            ax.scatter(*result["train"][y == c].T, s=10, color=train_colors[c])
            ax.scatter(*(result["test"][yt == c] * 0.85).T, s=14, marker="x", color=test_colors[c])
        ax.set_title(f"{titles[setting]}, seed 0\ntest Recall@1 {result['test_recall@1']:.2f}")
        ax.set_aspect("equal")
        ax.set_xlim(-1.2, 1.2)
        ax.set_ylim(-1.2, 1.2)
        ax.text(0, 0, "train on the circle\ntest at r = 0.85", ha="center", va="center", fontsize=6, color="#777")
    ax = axes[3]
    rows = summary[summary["metric"] == "train_spectral_decay"].set_index("setting")
    for i, setting in enumerate(SETTINGS):
        r = rows.loc[setting]
        ax.bar(i, r["mean"], yerr=[[r["mean"] - r["ci_low"]], [r["ci_high"] - r["mean"]]], capsize=4,
               color=["#999999", "#E69F00", "#0072B2"][i])
    ax.set_xticks(range(len(SETTINGS)), [titles[s].split(" (")[0] for s in SETTINGS])
    ax.set_ylabel("spectral decay ρ (train)")
    ax.set_title(f"spectral decay (train)\nmean, 95% interval, {int(rows['n'].iloc[0])} seeds")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=150)
    plt.close(fig)
    return path


def run_toy(out: str | Path, rho: float = DEFAULT_RHO, seeds: int = DEFAULT_SEEDS):
    """Both runs over `seeds` seeds; writes toy.png, toy.csv (per seed), toy_summary.csv.
    Returns (per_seed, summary, conclusion lines)."""
    out = Path(out)
    per_seed, first = run_seeds(seeds, rho)
    summary = summarize(per_seed)
    out.mkdir(parents=True, exist_ok=True)
    plot(first, summary, out / "toy.png")
    per_seed.to_csv(out / "toy.csv", index=False)
    summary.to_csv(out / "toy_summary.csv", index=False)
    return per_seed, summary, conclusions(per_seed, summary)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m analysis.train.toy", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for toy.png, toy.csv, toy_summary.csv")
    parser.add_argument("--rho", type=float, default=DEFAULT_RHO,
                        help=f"ρ swap probability of the ρ run (default {DEFAULT_RHO:g}, as Roth et al.'s toy)")
    parser.add_argument("--seeds", type=int, default=DEFAULT_SEEDS,
                        help=f"seeds to average over (default {DEFAULT_SEEDS}; at least 2)")
    args = parser.parse_args(argv)
    if args.seeds < 2:
        parser.error(f"--seeds {args.seeds}: need at least 2 for an interval")
    if not 0 < args.rho <= 1:
        parser.error(f"--rho {args.rho}: must be a probability in (0, 1]")
    _, _, lines = run_toy(args.out, args.rho, args.seeds)
    for line in lines:
        print(line)
    print(f"wrote {args.out / 'toy.png'}, toy.csv and toy_summary.csv")
    return 0


if __name__ == "__main__":
    sys.exit(main())
