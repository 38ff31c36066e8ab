"""Render sets read by third-party tools (issue 15): one schema per format version for pandas and
Hugging Face `datasets`, masks as an HF image column, the labelled torch Dataset, and the box of
the car measured from the masks."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from analysis.data import RenderSetData, RenderSetDataset
from blender_addon.core import render_set as rs
from blender_addon.core.errors import CarprobeError
from blender_addon.core.mask_box import mask_bbox, rows_bbox
from blender_addon.core.sampling import BBOX_COLUMNS, column_types

from synthetic_set import QUICK_TOML, render_synthetic_set

# Another spec: no masks, one car, a random design; its string columns are all empty or constant.
OTHER_TOML = QUICK_TOML.replace("masks = true", "masks = false").replace('name = "tiny"', 'name = "other"') \
    .replace('kind = "one_at_a_time"\nacross = ["car.body"]', 'kind = "random"\ncount = 5') \
    .replace('body = { values = ["sedan", "suv"] }', 'body = "van"')


@pytest.fixture(scope="module")
def two_sets(tmp_path_factory):
    root = tmp_path_factory.mktemp("formats")
    return render_synthetic_set(QUICK_TOML, root / "quick"), render_synthetic_set(OTHER_TOML, root / "other")


def test_both_sets_record_the_same_column_types_and_pandas_applies_them(two_sets):
    quick, other = (RenderSetData(p) for p in two_sets)
    assert quick.info["column_types"] == other.info["column_types"] == column_types()
    assert quick.info["format_version"] == 2
    a, b = quick.metadata, other.metadata
    assert list(a.columns) == list(b.columns)
    # all empty in `other` (no masks, no model file, no subset): still text, not float64
    for column in ("mask_file_name", "car.model_file", "subset", "lighting.hdri", "background.image"):
        assert (b[column] == "").all() and b[column].dtype == a[column].dtype and b[column].dtype != "float64"
    # no masks, no box: nullable integers; with masks: plain integers
    assert str(b["bbox_x0"].dtype) == "Int64" and b["bbox_x0"].isna().all()
    assert a["bbox_x0"].dtype == "int64"
    for column in a.columns:
        if column not in BBOX_COLUMNS:
            assert a[column].dtype == b[column].dtype, column
    K, Rt = a["camera.K"].iloc[0], a["camera.Rt"].iloc[0]
    assert K.shape == (3, 3) and Rt.shape == (3, 4) and a["camera.matrix_world"].iloc[0].shape == (16,)
    np.testing.assert_allclose(Rt[:, :3] @ Rt[:, :3].T, np.eye(3), atol=1e-5)  # a rotation


def test_jsonl_has_real_lists_and_nulls(two_sets):
    quick, other = two_sets
    row = json.loads((other / rs.METADATA_JSONL).read_text().splitlines()[0])
    assert row["mask_file_name"] is None and row["car.model_file"] is None and row["bbox_x0"] is None
    assert isinstance(row["camera.K"], list) and len(row["camera.Rt"][2]) == 4
    assert len(row["camera.matrix_world"]) == 16
    row = json.loads((quick / rs.METADATA_JSONL).read_text().splitlines()[0])
    assert row["mask_file_name"] == "masks/000000.png" and isinstance(row["bbox_x1"], int)


def test_hugging_face_loads_masks_as_images_and_concatenates_two_different_sets(two_sets, tmp_path):
    datasets = pytest.importorskip("datasets")
    datasets.disable_progress_bars()
    quick, other = (datasets.load_dataset(str(p), split="train", cache_dir=str(tmp_path)) for p in two_sets)
    assert quick.features == other.features
    assert isinstance(quick.features["image"], datasets.Image) and isinstance(quick.features["mask"], datasets.Image)
    both = datasets.concatenate_datasets([quick, other])
    assert len(both) == len(quick) + len(other) == 16 + 5
    first = both[0]
    mask = np.asarray(Image.open(two_sets[0] / "masks/000000.png"))
    np.testing.assert_array_equal(np.asarray(first["mask"]), mask)
    assert first["image"].size == (48, 48) and np.asarray(first["camera.K"]).shape == (3, 3)
    assert both[16]["mask"] is None and both[16]["car.body"] == "van"


def test_bbox_columns_are_the_car_pixels_of_each_mask(two_sets):
    data = RenderSetData(two_sets[0])
    meta = data.metadata
    for i, path in enumerate(data.mask_paths):
        car = ~np.isin(np.asarray(Image.open(path)), [0, 6])  # not background, not ground
        ys, xs = np.nonzero(car)
        expected = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
        assert tuple(meta.loc[i, list(BBOX_COLUMNS)]) == expected


def test_mask_bbox_reads_filtered_pngs_and_empty_masks(tmp_path):
    rng = np.random.default_rng(0)
    ids = np.zeros((20, 30), np.uint8)
    ids[3:11, 7:25] = rng.integers(1, 6, size=(8, 18))  # noise: PIL picks several PNG filters
    ids[15:, :] = 6  # ground is not the car
    Image.fromarray(ids).save(tmp_path / "m.png", optimize=True)
    assert mask_bbox(tmp_path / "m.png") == (7, 3, 25, 11)
    assert rows_bbox([row.tobytes() for row in ids]) == (7, 3, 25, 11)  # the renderer's, from memory
    assert rows_bbox([bytes(30)] * 3 + [bytes([6]) * 30]) is None  # background and ground only
    Image.fromarray(np.dstack([ids] * 3)).save(tmp_path / "rgb.png")
    assert mask_bbox(tmp_path / "rgb.png") == (7, 3, 25, 11)
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "empty.png")
    assert mask_bbox(tmp_path / "empty.png") is None


def test_a_format_1_set_with_mask_file_still_reads(two_sets, tmp_path):
    import shutil

    old = tmp_path / "old"
    shutil.copytree(two_sets[0], old)
    csv_text = (old / "metadata.csv").read_text()
    (old / "metadata.csv").write_text(csv_text.replace("mask_file_name", "mask_file", 1))
    info = json.loads((old / "dataset.json").read_text())
    info.pop("column_types")
    info["columns"] = ["mask_file" if c == "mask_file_name" else c for c in info["columns"]]
    (old / "dataset.json").write_text(json.dumps(info))
    data = RenderSetData(old)
    assert data.mask_paths[0] == old / "masks/000000.png"
    assert (data.metadata["mask_file_name"] == RenderSetData(two_sets[0]).metadata["mask_file_name"]).all()


def test_render_set_dataset_in_a_dataloader(two_sets):
    import torch
    from torch.utils.data import DataLoader
    from torchvision.transforms import v2

    transform = v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True)])
    dataset = RenderSetDataset(two_sets[0], label="car_id", transform=transform, with_mask=True)
    assert dataset.classes == ["sedan-0000", "suv-0000"] and len(dataset) == 16
    images, labels, rows, masks = next(iter(DataLoader(dataset, batch_size=6, shuffle=False)))
    assert images.shape == (6, 3, 48, 48) and images.dtype == torch.float32
    assert masks.shape == (6, 48, 48) and masks.dtype == torch.uint8
    meta = RenderSetData(two_sets[0]).metadata
    assert [dataset.classes[i] for i in labels] == list(meta["car_id"][:6])
    assert rows["file_name"] == list(meta["file_name"][:6]) and rows["camera.K"].shape == (6, 3, 3)
    np.testing.assert_array_equal(masks[2].numpy(), np.asarray(Image.open(two_sets[0] / "masks/000002.png")))
    # no masks: the box is NaN, and with_mask is refused by name
    plain = RenderSetDataset(two_sets[1], label="paint.color")
    image, label, row = plain[0]
    assert isinstance(image, Image.Image) and plain.classes[label] == row["paint.color"]
    assert np.isnan(row["bbox_x0"])
    _, _, batch = next(iter(DataLoader(RenderSetDataset(two_sets[1], transform=transform), batch_size=5)))
    assert torch.isnan(batch["bbox_x0"]).all()
    with pytest.raises(CarprobeError, match="with_mask: render set .* has no masks"):
        RenderSetDataset(two_sets[1], with_mask=True)
    with pytest.raises(CarprobeError, match="label 'nope': not a column"):
        RenderSetDataset(two_sets[1], label="nope")


def test_render_set_dataset_gives_the_class_ids_training_gives(two_sets, tmp_path):
    from analysis.train.data import load_labelled_images

    # a text label whose values read as numbers: training orders them 9 < 10, never "10" < "9"
    copy = tmp_path / "set"
    shutil.copytree(two_sets[0], copy)
    meta = (copy / "metadata.csv").read_text().splitlines()
    header = meta[0].split(",")
    column = header.index("subset")
    rows = [line.split(",") for line in meta[1:]]
    for i, row in enumerate(rows):
        row[column] = "10" if i % 2 else "9"
    (copy / "metadata.csv").write_text("\n".join([meta[0], *(",".join(r) for r in rows)]) + "\n")
    for label in ("car_id", "subset"):
        dataset = RenderSetDataset(copy, label=label)
        trained = load_labelled_images(copy, label)
        assert dataset.classes == trained.class_names and dataset.targets == list(trained.labels)
    assert RenderSetDataset(copy, label="subset").classes == ["9", "10"]
