"""Training data: images with class labels from a render set (a metadata column) or an
ImageFolder (CUB200, Cars196, …), split by class into disjoint train and test halves.

Zero-shot split as in the DML benchmarks: the class names are sorted and the first half
(rounded up) trains, the second half tests, so test classes are never seen in training.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from blender_addon.core.errors import CarprobeError

MIN_CLASSES_PER_SPLIT = 2


@dataclass
class LabelledImages:
    paths: list[str]
    labels: list[int]            # 0..len(class_names)-1, contiguous within this split
    class_names: list[str]
    source: str                  # "render set" or "image folder"

    def __len__(self) -> int:
        return len(self.paths)


def load_labelled_images(path: str | Path, label: str = "car_id") -> LabelledImages:
    """All images of `path` with their classes. A render set (it has dataset.json) takes the
    class from metadata column `label`; otherwise `path` is read as an ImageFolder."""
    from analysis.data import RenderSetData, class_sort_key, image_folder, label_classes

    root = Path(path)
    if not root.exists():
        raise CarprobeError(f"--data {str(path)!r}: no such folder (a render set or an ImageFolder)")
    if (root / "dataset.json").is_file():
        data = RenderSetData(root)
        frame = data.metadata
        if label not in frame.columns:
            raise CarprobeError(f"--label {label!r}: not a column of {root / 'metadata.csv'}; columns: "
                                f"{', '.join(map(str, frame.columns))}")
        names, ids = label_classes(frame[label].tolist(), f"--label {label!r}: some rows of {root / 'metadata.csv'}")
        return LabelledImages([str(p) for p in data.image_paths], ids, names, "render set")
    paths, labels, names = image_folder(root)
    order = sorted(range(len(names)), key=lambda i: class_sort_key(names[i]))
    remap = {old: new for new, old in enumerate(order)}
    return LabelledImages([str(p) for p in paths], [remap[v] for v in labels],
                          [names[i] for i in order], "image folder")


def split_classes(data: LabelledImages) -> tuple[LabelledImages, LabelledImages]:
    """(train, test): the first half of the sorted class names and the second half."""
    n = len(data.class_names)
    if n < 2 * MIN_CLASSES_PER_SPLIT:
        raise CarprobeError(
            f"{n} class(es) ({', '.join(data.class_names[:8])}): a zero-shot split into train and test "
            f"halves needs at least {2 * MIN_CLASSES_PER_SPLIT} classes ({MIN_CLASSES_PER_SPLIT} each); "
            "pick a --label with more values or render more identities")
    n_train = (n + 1) // 2
    parts = []
    for lo, hi in ((0, n_train), (n_train, n)):
        keep = [i for i, y in enumerate(data.labels) if lo <= y < hi]
        parts.append(LabelledImages([data.paths[i] for i in keep], [data.labels[i] - lo for i in keep],
                                    data.class_names[lo:hi], data.source))
    return parts[0], parts[1]


class LabelledDataset:
    """(image tensor, label) pairs for a DataLoader; image errors name the file."""

    def __init__(self, images: LabelledImages, transform):
        from analysis.data import ImagePathsDataset

        self.images = ImagePathsDataset(images.paths, transform)
        self.labels = list(images.labels)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        return self.images[index], self.labels[index]


def train_transform(preprocess):
    """RandomResizedCrop to the model's input size + horizontal flip, then the model's own
    value scaling and normalisation (the test side is `preprocess.transform()`)."""
    from torchvision.transforms import v2

    from analysis.models import ModelInput

    return v2.Compose([v2.PILToTensor(), v2.RandomResizedCrop(preprocess.size, antialias=True),
                       v2.RandomHorizontalFlip(),
                       ModelInput(preprocess.scale, preprocess.bgr, preprocess.mean, preprocess.std)])
