"""Roth et al.'s toy example (ICML 2020): why ρ-regularisation helps on unseen classes.

Four training classes lie on consecutive segments of the diagonal y = x (15 points each); an
MLP 2-30-30-2 maps points onto the unit circle; Adam (lr 0.03), batches of 24 (6 per class),
200 iterations, loss mean over triplets of d(a, p) + relu(0.1 - d(a, n)) with one random
positive and one random negative per anchor. Test classes lie on horizontal and vertical
segments off the diagonal. Without ρ-regularisation the network only has to order the diagonal
and may fold every other direction onto it; with it (`RhoMiner`, p = 0.35 by default: with
probability p a triplet (a, p, n) becomes (a, a, j), j another sample of a's class) same-class
points are also pushed apart, the embedding keeps more of the input's structure, and the
unseen horizontal/vertical classes stay apart. Both embeddings and their normalised
singular-value spectra are plotted.

    python -m analysis.train.toy --out DIR      # DIR/toy.png, DIR/toy.csv; seconds on a CPU
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from pytorch_metric_learning.miners import BaseMiner
from pytorch_metric_learning.utils import loss_and_miner_utils as lmu
from torch import nn

from .rho import RhoMiner

POINTS_PER_CLASS = 15
TRAIN_SEGMENTS = [((k - 2.0, k - 2.0), (k - 1.2, k - 1.2)) for k in range(4)]  # along y = x, gaps of 0.2
TEST_SEGMENTS = [((-1.8, 1.2), (-1.0, 1.2)), ((-0.6, 0.8), (-0.6, 1.6)),      # horizontal, vertical
                 ((1.0, -1.2), (1.8, -1.2)), ((0.6, -1.6), (0.6, -0.8))]


def segment_points(segments, n: int = POINTS_PER_CLASS) -> tuple[np.ndarray, np.ndarray]:
    t = np.linspace(0.0, 1.0, n)[:, None]
    points = [np.asarray(a) + t * (np.asarray(b) - np.asarray(a)) for a, b in segments]
    return np.concatenate(points).astype(np.float32), np.repeat(np.arange(len(segments)), n)


class RandomTripletMiner(BaseMiner):
    """One random positive and one random negative per anchor (the toy's plain sampling)."""

    def mine(self, embeddings, labels, ref_emb, ref_labels):
        return lmu.get_random_triplet_indices(labels, t_per_anchor=1)


def toy_network() -> nn.Module:
    return nn.Sequential(nn.Linear(2, 30), nn.ReLU(), nn.Linear(30, 30), nn.ReLU(), nn.Linear(30, 2))


def toy_loss(embeddings: torch.Tensor, triplets, margin: float = 0.1) -> torch.Tensor:
    a, p, n = triplets
    d_ap = (embeddings[a] - embeddings[p]).norm(dim=1)
    d_an = (embeddings[a] - embeddings[n]).norm(dim=1)
    return (d_ap + F.relu(margin - d_an)).mean()


def train_toy(rho: float, seed: int = 0, iterations: int = 200, batch_size: int = 24, lr: float = 0.03):
    """Train the toy network; returns (net, losses)."""
    torch.manual_seed(seed)
    x, y = segment_points(TRAIN_SEGMENTS)
    x_t, y_t = torch.from_numpy(x), torch.from_numpy(y)
    net = toy_network()
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    miner = RhoMiner(rho, base_miner=RandomTripletMiner(), tuples="triplet", seed=seed)
    rng = np.random.default_rng(seed)
    per_class = batch_size // len(TRAIN_SEGMENTS)
    losses = []
    for _ in range(iterations):
        batch = np.concatenate([rng.choice(np.flatnonzero(y == c), per_class, replace=False)
                                for c in range(len(TRAIN_SEGMENTS))])
        embeddings = F.normalize(net(x_t[batch]), dim=1)
        loss = toy_loss(embeddings, miner(embeddings, y_t[batch]))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return net, losses


def embed(net: nn.Module, points: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return F.normalize(net(torch.from_numpy(points)), dim=1).numpy()


def evaluate(net: nn.Module) -> dict[str, float | np.ndarray]:
    from analysis.metrics.retrieval import retrieval_metrics
    from analysis.metrics.space import embedding_space_metrics, singular_values

    x, y = segment_points(TRAIN_SEGMENTS)
    xt, yt = segment_points(TEST_SEGMENTS)
    train, test = embed(net, x), embed(net, xt)
    space = embedding_space_metrics(train, y)
    retrieval = retrieval_metrics(test, yt, ks=(1,), nmi=True)
    s = singular_values(train)
    return {"test_recall@1": retrieval["recall@1"], "test_map_at_r": retrieval["map_at_r"],
            "test_nmi": retrieval["nmi"], "train_pi_ratio": space["pi_ratio"], "train_spectral_decay": space["rho"],
            "spectrum": s / s.sum(), "train": train, "test": test}


def plot(results: dict[str, dict], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x, y = segment_points(TRAIN_SEGMENTS)
    xt, yt = segment_points(TEST_SEGMENTS)
    train_colors = ["#0072B2", "#E69F00", "#009E73", "#CC79A7"]
    test_colors = ["#D55E00", "#56B4E9", "#000000", "#999933"]
    fig, axes = plt.subplots(1, 4, figsize=(13.5, 3.6))
    ax = axes[0]
    for c in range(4):
        ax.scatter(*x[y == c].T, s=10, color=train_colors[c], label=f"train {c}")
        ax.scatter(*xt[yt == c].T, s=14, marker="x", color=test_colors[c], label=f"test {c}")
    ax.set_title("input: train (dots, diagonal)\ntest (crosses, horizontal/vertical)")
    ax.set_aspect("equal")
    ax.legend(fontsize=6, ncol=2, loc="lower right", frameon=False)
    theta = np.linspace(0, 2 * np.pi, 200)
    for ax, (name, result) in zip(axes[1:3], results.items()):
        ax.plot(np.cos(theta), np.sin(theta), color="#D0D0D0", linewidth=0.8)
        for c in range(4):
            ax.scatter(*(result["train"][y == c] * 1.0).T, s=10, color=train_colors[c])
            ax.scatter(*(result["test"][yt == c] * 0.85).T, s=14, marker="x", color=test_colors[c])
        ax.set_title(f"{name}\ntest Recall@1 {result['test_recall@1']:.2f}, NMI {result['test_nmi']:.2f}")
        ax.set_aspect("equal")
        ax.set_xlim(-1.2, 1.2)
        ax.set_ylim(-1.2, 1.2)
        ax.text(0, 0, "train on the circle\ntest at r = 0.85", ha="center", va="center", fontsize=6, color="#777")
    ax = axes[3]
    width = 0.35
    for i, (name, result) in enumerate(results.items()):
        s = result["spectrum"]
        ax.bar(np.arange(1, len(s) + 1) + (i - 0.5) * width, s, width=width,
               label=f"{name} (ρ = {result['train_spectral_decay']:.3f})")
    ax.set_xticks(range(1, len(s) + 1))
    ax.set_xlabel("singular value index")
    ax.set_title("normalised singular values\n(train embeddings)")
    ax.legend(fontsize=7, frameon=False)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=150)
    plt.close(fig)
    return path


def run_toy(out: str | Path, rho: float = 0.35, seed: int = 0) -> dict[str, dict]:
    """Train without and with ρ-regularisation, write toy.png and toy.csv to `out`."""
    out = Path(out)
    results = {}
    for name, p in (("no ρ-reg", 0.0), (f"ρ-reg p={rho:g}", rho)):
        net, losses = train_toy(p, seed)
        results[name] = {**evaluate(net), "final_loss": losses[-1]}
    plot(results, out / "toy.png")
    lines = ["model,metric,value"]
    for name, result in results.items():
        for key in ("test_recall@1", "test_map_at_r", "test_nmi", "train_pi_ratio", "train_spectral_decay", "final_loss"):
            lines.append(f"{name},{key},{float(result[key])!r}")
    (out / "toy.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m analysis.train.toy", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for toy.png and toy.csv")
    parser.add_argument("--rho", type=float, default=0.35, help="ρ-regularisation probability (default 0.35)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    results = run_toy(args.out, args.rho, args.seed)
    for name, result in results.items():
        print(f"{name}: test Recall@1 {result['test_recall@1']:.3f}, NMI {result['test_nmi']:.3f}, "
              f"train π_ratio {result['train_pi_ratio']:.3f}, spectral decay {result['train_spectral_decay']:.4f}")
    print(f"wrote {args.out / 'toy.png'} and {args.out / 'toy.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
