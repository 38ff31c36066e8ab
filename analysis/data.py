"""Reading images for the models: render sets (the contract of DESIGN.md), lists of image
paths, and ImageFolder-style benchmark data (CUB200, Cars196)."""

from __future__ import annotations

import hashlib
import os
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, Sequence

from blender_addon.core.errors import CarprobeError
from blender_addon.core.render_set import read_render_set
from blender_addon.core.sampling import column_types

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".ppm", ".tif", ".tiff")


class RenderSetData:
    """A render set on disk: metadata as a DataFrame, image and mask paths aligned with its rows
    (sorted by index), dataset.json as `info`, and `set_hash` for cache keys."""

    def __init__(self, path: str | Path):
        self._set = read_render_set(path)
        self.root = self._set.root
        self.info: dict[str, Any] = self._set.info
        self.rows: list[dict[str, Any]] = self._set.rows

    def __len__(self) -> int:
        return len(self.rows)

    @cached_property
    def metadata(self):
        """metadata.csv as a DataFrame with the column types of dataset.json (`column_types`;
        sets of format version 1: today's types of the columns they have): text columns stay
        text when every value is empty, matrices are numpy arrays, and an integer column with
        empty values (a box without a mask) is a nullable Int64."""
        import json

        import numpy as np
        import pandas as pd

        columns = self.info.get("columns") or (list(self.rows[0]) if self.rows else ["file_name", "index"])
        columns = ["mask_file_name" if c == "mask_file" else c for c in columns]  # format version 1
        frame = pd.DataFrame(self.rows, columns=columns)
        types = self.info.get("column_types") or column_types()
        for column in frame.columns:
            kind = types.get(column)
            if kind is None:
                continue  # a column this carprobe does not know: as read
            values = frame[column]
            if kind.startswith("float64["):
                shape = tuple(int(n) for n in kind[len("float64["):-1].split(","))
                frame[column] = [np.asarray(json.loads(v) if isinstance(v, str) else v, dtype=np.float64)
                                 .reshape(shape) for v in values]
            elif kind == "int64":
                frame[column] = values.astype("Int64" if values.isna().any() else "int64")
            elif kind in ("float64", "bool"):
                frame[column] = values.astype(kind)
            else:
                frame[column] = values.fillna("").astype("str")
        return frame

    @property
    def image_paths(self) -> list[Path]:
        return self._set.image_paths

    @property
    def mask_paths(self) -> list[Path | None]:
        return self._set.mask_paths

    @property
    def factors(self) -> list[str]:
        return list(self.info.get("factors") or [])

    @cached_property
    def set_hash(self) -> str:
        """sha256 of the spec hash and every image's name and content: an image re-rendered or
        damaged in place (same name, same size) gives a new key, a copy of the set the same key.
        Reads every image once (about 0.3 s per 100 MB), far less than embedding them."""
        digest = hashlib.sha256(f"{self.info.get('spec_hash')}|{self.info.get('blender_version')}|"
                                f"{len(self.rows)}\n".encode())
        for row, path in zip(self.rows, self.image_paths):
            digest.update(f"{row['file_name']}|{_content_hash(path)}\n".encode())
        return digest.hexdigest()


def class_sort_key(value):
    """Numbers numerically, everything else as text (numbers first)."""
    try:
        return (0, float(value), "")
    except (TypeError, ValueError):
        return (1, 0.0, str(value))


def label_classes(values: list, where: str) -> tuple[list[str], list[int]]:
    """(class names as text, sorted by class_sort_key; each value's class id): the one rule
    training and RenderSetDataset share. `where` names the rows in the error for a missing value."""
    if any(v is None or (isinstance(v, float) and v != v) or v == "" for v in values):
        raise CarprobeError(f"{where} have no value")
    names = sorted({str(v) for v in values}, key=class_sort_key)
    index = {name: i for i, name in enumerate(names)}
    return names, [index[str(v)] for v in values]


class RenderSetDataset:
    """A labelled map-style torch Dataset over a render set (what torchvision's ImageFolder is for
    a folder tree). Item i is ``(image, label, row)``, or ``(image, label, row, mask)`` with
    ``with_mask=True``:

    - image: ``transform(PIL RGB image)`` (the PIL image without a transform);
    - label: the integer class of the row's `label` column; ``classes[label]`` is its value,
      classes in sorted order (like ImageFolder's ``class_to_idx``);
    - row: the metadata row as a dict with the types of ``RenderSetData.metadata`` (matrices as
      numpy arrays; a missing number, e.g. a box without a mask, is NaN), so DataLoader's default
      collate batches it;
    - mask: ``mask_transform(PIL part-id mask)``, by default a uint8 tensor (H, W) of part ids
      (``info["mask_parts"]``); give a geometric ``mask_transform`` that matches ``transform``
      (nearest-neighbour resizing) when ``transform`` resizes or crops.

        from torch.utils.data import DataLoader
        from torchvision.transforms import v2
        dataset = RenderSetDataset("sets/quick", label="car_id", with_mask=True,
                                   transform=v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True)]))
        for images, labels, rows, masks in DataLoader(dataset, batch_size=32, shuffle=True): ...
    """

    def __init__(self, set: str | Path | RenderSetData, label: str = "car_id", transform: Callable | None = None,
                 with_mask: bool = False, mask_transform: Callable | None = None):
        data = set if isinstance(set, RenderSetData) else RenderSetData(set)
        metadata = data.metadata
        if label not in metadata.columns:
            raise CarprobeError(f"label {label!r}: not a column of {data.root}/metadata.csv; available: "
                                f"{', '.join(metadata.columns)}")
        if with_mask and not all(data.mask_paths):
            raise CarprobeError(f"with_mask: render set {data.root} has no masks (render.masks = false in its "
                                "spec); render it with masks or leave with_mask off")
        self.data, self.label, self.transform = data, label, transform
        self.with_mask, self.mask_transform = with_mask, mask_transform
        # the class ids `carprobe train` gives the same label
        self.classes, self.targets = label_classes(metadata[label].tolist(),
                                                   f"label {label!r}: some rows of {data.root}/metadata.csv")
        self.class_to_idx = {value: i for i, value in enumerate(self.classes)}
        self._rows = [_collatable(row) for row in metadata.to_dict("records")]
        self._images = ImagePathsDataset(data.image_paths, transform)

    def __len__(self) -> int:
        return len(self._rows)

    def __getitem__(self, index: int):
        item = (self._images.load(index), self.targets[index], self._rows[index])
        if not self.with_mask:
            return item
        from PIL import Image

        path = self.data.mask_paths[index]
        try:
            with Image.open(path) as mask:
                mask = mask.convert("L")
        except (OSError, ValueError) as exc:
            raise ImageReadError(f"mask {path}: cannot be read ({exc})") from None
        if self.mask_transform is not None:
            return (*item, self.mask_transform(mask))
        import numpy as np
        import torch

        return (*item, torch.from_numpy(np.array(mask, dtype=np.uint8)))


def _collatable(row: dict[str, Any]) -> dict[str, Any]:
    """A metadata row DataLoader's default collate accepts: a missing value (pandas NA) is NaN."""
    import pandas as pd

    return {k: float("nan") if not hasattr(v, "shape") and pd.isna(v) else v for k, v in row.items()}


def _content_hash(path: Path) -> str:
    try:
        with open(path, "rb") as handle:
            return hashlib.file_digest(handle, "sha256").hexdigest()
    except OSError:
        return "unreadable"  # embedding will name the file; the key still differs


class ImageReadError(CarprobeError):
    """A missing or undecodable image file (the message names it)."""


class ImagePathsDataset:
    """Images by path → `transform(PIL RGB image)`. A missing or corrupt file raises
    ImageReadError naming it (in DataLoader workers too; see `loader_error_message`)."""

    def __init__(self, paths: Sequence[str | Path], transform: Callable | None = None):
        self.paths = [str(p) for p in paths]  # str: cheap to pickle to workers
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        return self.load(index)

    def load(self, index: int):
        from PIL import Image

        path = self.paths[index]
        try:
            with Image.open(path) as image:
                image = image.convert("RGB")  # also forces the full decode, so truncation shows here
        except FileNotFoundError:
            raise ImageReadError(f"image {path}: file not found") from None
        except Exception as exc:  # noqa: BLE001 - PIL raises many types for bad files
            raise ImageReadError(f"image {path}: cannot be decoded ({type(exc).__name__}: {exc}); "
                                 "re-render or remove it") from None
        return self.transform(image) if self.transform is not None else image


def loader_error_message(exc: BaseException) -> str:
    """The message of an ImageReadError, also when a DataLoader worker re-raised it (torch then
    puts the worker's whole traceback into the message)."""
    text = str(exc)
    marker = f"{ImageReadError.__name__}: "
    if "Original Traceback" in text and marker in text:
        return text.rsplit(marker, 1)[1].strip()
    return text


def image_folder(path: str | Path) -> tuple[list[Path], list[int], list[str]]:
    """ImageFolder-style data → (paths, labels, class_names), classes in sorted folder order.

    Accepts `root/<class>/<image>`, CUB-200-2011 (`root/images/<class>/…`) and Cars196 in its
    original layout (`cars_annos.mat` + `car_ims/`, labels from the annotation file).
    """
    root = Path(path)
    if not root.is_dir():
        raise CarprobeError(f"image folder {root}: not a folder")
    if (root / "cars_annos.mat").is_file():
        return _cars196(root)
    classes = _class_dirs(root)
    if [c.name for c in classes] == ["images"] and _class_dirs(root / "images"):
        classes = _class_dirs(root / "images")  # CUB_200_2011/images/001.Black_footed_Albatross/…
    splits = {"train", "test", "val", "valid", "validation"}
    if classes and {c.name.lower() for c in classes} <= splits and all(_class_dirs(c) for c in classes):
        raise CarprobeError(f"image folder {root}: holds split folders ({', '.join(c.name for c in classes)}), "
                            f"not classes; pass one split, e.g. {classes[0]}")
    if not classes:
        raise CarprobeError(f"image folder {root}: no class sub-folders with images "
                            f"({', '.join(IMAGE_EXTENSIONS)}); expected <folder>/<class>/<image>")
    paths, labels = [], []
    for label, folder in enumerate(classes):
        for dirpath, dirnames, filenames in os.walk(folder):
            dirnames.sort()
            for name in sorted(filenames):
                if name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith("."):
                    paths.append(Path(dirpath) / name)
                    labels.append(label)
    return paths, labels, [c.name for c in classes]


def _class_dirs(folder: Path) -> list[Path]:
    found = []
    for child in sorted(folder.iterdir()):
        if child.is_dir() and not child.name.startswith("."):
            if any(f.lower().endswith(IMAGE_EXTENSIONS) for _, _, files in os.walk(child) for f in files):
                found.append(child)
    return found


def _cars196(root: Path) -> tuple[list[Path], list[int], list[str]]:
    from scipy.io import loadmat

    try:
        mat = loadmat(str(root / "cars_annos.mat"), squeeze_me=True)
        annotations = mat["annotations"]
        names = [str(n) for n in mat["class_names"]]
        paths = [root / str(a["relative_im_path"]) for a in annotations]
        labels = [int(a["class"]) - 1 for a in annotations]  # 1-based in the file
    except Exception as exc:  # noqa: BLE001
        raise CarprobeError(f"{root / 'cars_annos.mat'}: not a Cars196 annotation file ({exc})") from None
    return paths, labels, names
