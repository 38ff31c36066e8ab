"""Test doubles for the saliency tests: tiny embedding models with the EmbeddingModel
attributes, and a tiny render set with part masks written by a fake renderer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torch.nn import functional as F

from blender_addon.core import render_set, spec as spec_module

CAR_BOX = (8, 10, 32, 22)  # x0, y0, x1, y1 of the car body in the 40 x 32 renders


class TinyEmbedder(nn.Module):
    """conv -> conv -> global average -> linear; `rows` limits what the model sees (top half)."""

    def __init__(self, dim: int = 8, seed: int = 0, rows: slice | None = None, distance: str = "cosine"):
        super().__init__()
        generator = torch.random.fork_rng()
        with generator:
            torch.manual_seed(seed)
            self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
                                          nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())
            self.head = nn.Linear(8, dim)
        self.rows = rows
        self.normalize = True
        self.distance = distance
        self.preprocess = None
        self.embedding_dim = dim
        self.name = f"tiny-{seed}"
        self.fingerprint = f"tiny-{seed}-{rows}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.rows is not None:
            x = x[:, :, self.rows]
        return self.head(self.features(x).mean(dim=(2, 3)))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.forward(x), dim=1)


def write_image(path: Path, index: int, masks: Path | None) -> None:
    rng = np.random.default_rng(index)
    image = np.zeros((32, 40, 3), dtype=np.uint8)
    image[:] = rng.integers(40, 90, size=3)
    x0, y0, x1, y1 = CAR_BOX
    image[y0:y1, x0:x1] = rng.integers(120, 255, size=3)
    image[y1 - 3:y1, x0 + 2:x0 + 6] = 20  # wheels
    image[26:] = 100  # ground
    Image.fromarray(image).save(path, format="PNG")
    if masks is not None:
        mask = np.zeros((32, 40), dtype=np.uint8)
        mask[26:] = 6
        mask[y0:y1, x0:x1] = 1
        mask[y1 - 3:y1, x0 + 2:x0 + 6] = 3
        Image.fromarray(mask, mode="L").save(masks, format="PNG")


def make_render_set(root: Path, masks: bool = True) -> Path:
    """6 images of 2 cars (3 colours each), 40 x 32, with part masks when `masks`."""
    spec = spec_module.parse_spec({
        "schema": 1, "name": "saliency-test",
        "design": {"kind": "grid"},
        "render": {"width": 40, "height": 32, "masks": masks},
        "car": {"shape_seed": {"values": [0, 1]}},
        "paint": {"color": {"values": ["red", "blue", "#00ff00"]}},
    })

    def render_image(row, image_path, mask_path):
        write_image(Path(image_path), row["index"], Path(mask_path) if mask_path else None)

    render_set.render_samples(spec, root, render_image, progress=False)
    render_set.finalize(spec, root)
    return root


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Tiny models gain nothing from threads, and on a busy 2-core runner OpenMP's spinning
    threads make every conv ~50x slower; restored after the module."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
