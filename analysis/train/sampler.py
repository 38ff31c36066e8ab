"""Class-balanced batches: every batch holds `batch_size / m` classes with `m` images each.

Roth et al. found batch composition matters (more classes per batch beats more samples per
class); their fair setup is 112 images, m = 2. The order is a pure function of (seed, epoch):
classes are drawn from a shuffled queue (refilled when used up, never twice in one batch) and
each class's images from its own shuffled queue, so every image is seen about equally often.
A class with fewer than m images repeats some in a batch; classes with a single image are left
out (they give no positive pair).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from blender_addon.core.errors import CarprobeError


class ClassBalancedBatchSampler:
    """A torch ``batch_sampler``: yields lists of dataset indices. Call ``set_epoch(e)`` first."""

    def __init__(self, labels: Sequence[int], batch_size: int, samples_per_class: int, seed: int = 0,
                 batches_per_epoch: int | None = None):
        labels = np.asarray(labels)
        if batch_size % samples_per_class:
            raise CarprobeError(f"batch_size = {batch_size}: must be a multiple of samples_per_class "
                                f"= {samples_per_class}")
        self.m = int(samples_per_class)
        self.classes_per_batch = batch_size // self.m
        self.by_class = [np.flatnonzero(labels == c) for c in np.unique(labels)]
        # a class with one image gives no positive pair: it cannot anchor a tuple
        self.by_class = [idx for idx in self.by_class if len(idx) >= 2]
        if len(self.by_class) < self.classes_per_batch:
            raise CarprobeError(
                f"batch_size {batch_size} with {self.m} per class needs {self.classes_per_batch} training "
                f"classes with at least 2 images each; there are {len(self.by_class)}: lower --batch-size "
                f"or raise --samples-per-class")
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.epoch = 0
        n_images = sum(len(idx) for idx in self.by_class)
        self.batches_per_epoch = int(batches_per_epoch or max(1, n_images // self.batch_size))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.batches_per_epoch

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        class_queue: list[int] = []
        image_queues = [list(rng.permutation(idx)) for idx in self.by_class]
        for _ in range(self.batches_per_epoch):
            chosen: list[int] = []
            while len(chosen) < self.classes_per_batch:
                if not class_queue:
                    class_queue = [c for c in rng.permutation(len(self.by_class)) if c not in chosen]
                chosen.append(int(class_queue.pop()))
            batch: list[int] = []
            for c in chosen:
                queue = image_queues[c]
                while len(queue) < self.m:  # refill with a fresh permutation after the leftovers,
                    perm = rng.permutation(self.by_class[c]).tolist()  # leftovers' copies last
                    queue.extend([i for i in perm if i not in queue] + [i for i in perm if i in queue])
                batch.extend(int(queue.pop(0)) for _ in range(self.m))
            yield batch
