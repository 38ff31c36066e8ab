"""ρ-regularisation (Roth et al., ICML 2020) as a pytorch-metric-learning miner.

Roth et al.'s `rho_distance` sampler turns, with probability p, a training triplet of an anchor
a into (a, a, j): j is a random *other* sample of a's own class, used as the negative, so the
loss pushes same-class samples apart. That keeps more directions of the embedding in use
(flatter singular-value spectrum, higher π_ratio) and helps on unseen classes.

`RhoMiner(p, base_miner, tuples)` wraps any pml miner (or "all tuples" when the base is None):
- ``tuples="triplet"`` (triplet, margin, contrastive losses): every mined triplet (a, p, n)
  becomes (a, a, j) with probability p — exactly Roth's tuple; the positive a→a has distance 0
  and so adds no pull, the "negative" j is pushed away.
- ``tuples="pair"`` (pair losses: multi-similarity, lifted structure): the tuple is an anchor
  with its mined pairs; with probability p per anchor, its negative pairs (a, n) are replaced
  by the one pair (a, j), and (a, j) leaves the positive pairs (a pair cannot be both; as in
  Roth's (a, a, j), a and j are only pushed apart). Other positive pairs are kept.
A tuple is eligible when its anchor has another sample of its class in the batch (always true
for a mined triplet). The coin flips and the choice of j use the miner's own seeded generator,
so the global RNG the base miner uses is untouched: with p = 0 the output is the base miner's.
"""

from __future__ import annotations

import torch
from pytorch_metric_learning.miners import BaseMiner
from pytorch_metric_learning.utils import loss_and_miner_utils as lmu


class RhoMiner(BaseMiner):
    def __init__(self, p: float, base_miner: BaseMiner | None = None, tuples: str = "triplet",
                 seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 <= float(p) <= 1.0:
            raise ValueError(f"rho p = {p!r}: must be a probability in [0, 1]")
        if tuples not in ("triplet", "pair"):
            raise ValueError(f"tuples = {tuples!r}: must be 'triplet' or 'pair'")
        self.p = float(p)
        self.base_miner = base_miner
        self.tuples = tuples
        self.generator = torch.Generator().manual_seed(int(seed))  # CPU: state saved with runs
        self.num_swapped = 0

    def base_tuples(self, embeddings, labels, ref_emb, ref_labels):
        """The base miner's tuples in this miner's format (all tuples when there is none)."""
        if self.base_miner is not None:
            mined = self.base_miner(embeddings, labels, ref_emb, ref_labels)
        else:
            mined = None
        if self.tuples == "triplet":
            if mined is None:
                return lmu.get_all_triplets_indices(labels, ref_labels)
            return lmu.convert_to_triplets(mined, labels, ref_labels)
        return lmu.convert_to_pairs(mined, labels, ref_labels)

    def mine(self, embeddings, labels, ref_emb, ref_labels):
        tuples = self.base_tuples(embeddings, labels, ref_emb, ref_labels)
        same = labels.unsqueeze(1) == ref_labels.unsqueeze(0)
        if ref_labels is labels or ref_emb is embeddings:
            same.fill_diagonal_(False)  # j must be another sample, not the anchor itself
        if self.tuples == "triplet":
            return self._swap_triplets(tuples, same)
        return self._swap_pairs(tuples, same)

    def _pick(self, candidates: torch.Tensor) -> torch.Tensor:
        """One uniformly random True column per row of `candidates` (every row has one)."""
        noise = torch.rand(candidates.shape, generator=self.generator).to(candidates.device)
        return torch.where(candidates, noise + 1.0, torch.zeros_like(noise)).argmax(dim=1)

    def _swap_triplets(self, tuples, same):
        a, p, n = tuples
        swap = (torch.rand(len(a), generator=self.generator) < self.p).to(a.device)
        swap &= same[a].any(dim=1)
        self.num_swapped = int(swap.sum())
        if self.num_swapped == 0:
            return a, p, n
        p, n = p.clone(), n.clone()
        p[swap] = a[swap]  # Roth's (a, a, j): the anchor is its own positive
        n[swap] = self._pick(same[a[swap]])
        return a, p, n

    def _swap_pairs(self, tuples, same):
        a1, p, a2, n = tuples
        anchors = torch.unique(a2)  # sorted: the coin flips follow a fixed order
        swap = (torch.rand(len(anchors), generator=self.generator) < self.p).to(anchors.device)
        swap &= same[anchors].any(dim=1)
        self.num_swapped = int(swap.sum())
        if self.num_swapped == 0:
            return a1, p, a2, n
        flipped = anchors[swap]
        j = self._pick(same[flipped])
        # a flipped anchor's negatives become its one same-class sample j (one pair, not copies)
        keep_neg = ~torch.isin(a2, flipped)
        a2 = torch.cat([a2[keep_neg], flipped])
        n = torch.cat([n[keep_neg], j])
        # (a, j) cannot also be a positive pair: like Roth's (a, a, j), it is only pushed apart
        bad_pos = torch.zeros(same.shape, dtype=torch.bool, device=same.device)
        bad_pos[flipped, j] = True
        keep_pos = ~bad_pos[a1, p]
        return a1[keep_pos], p[keep_pos], a2, n
