"""analysis.data: render sets as DataFrames and paths, image datasets, ImageFolder layouts."""

from __future__ import annotations

import pytest
from embed_fixtures import write_render_set
from PIL import Image

from analysis.data import ImagePathsDataset, ImageReadError, RenderSetData, image_folder
from blender_addon.core.errors import CarprobeError


@pytest.fixture(scope="module")
def render_set(tmp_path_factory):
    return write_render_set(tmp_path_factory.mktemp("data") / "set")


def test_render_set_metadata_and_paths(render_set):
    data = RenderSetData(render_set)
    assert len(data) == 6
    frame = data.metadata
    assert list(frame.columns[:2]) == ["file_name", "index"]
    assert frame["index"].tolist() == list(range(6))
    assert frame["camera.azimuth"].dtype.kind == "f"
    assert sorted(set(frame["paint.color"])) == sorted({"red", "blue", "#00ff00"})
    assert data.image_paths[2] == render_set / "images" / "000002.png"
    assert all(p.is_file() for p in data.image_paths)
    assert data.mask_paths[0] == render_set / "masks" / "000000.png" and data.mask_paths[0].is_file()
    assert data.info["counts"]["images"] == 6
    assert data.factors == ["paint.color", "camera.azimuth"]


def test_set_hash_stable_and_changes_with_content(render_set, tmp_path):
    first = RenderSetData(render_set).set_hash
    assert RenderSetData(render_set).set_hash == first and len(first) == 64
    other = write_render_set(tmp_path / "copy")
    assert RenderSetData(other).set_hash == first  # same spec, same files: same key wherever it lives
    image = other / "images" / "000001.png"
    Image.new("RGB", (40, 32), (1, 2, 3)).save(image)  # a re-render with other pixels
    assert RenderSetData(other).set_hash != first


@pytest.mark.parametrize("damage, message", [
    (lambda lines: lines + [lines[3]], r"line 8: index 2 appears again \(first on line 4\)"),
    (lambda lines: [l.replace("index", "idx", 1) if i == 0 else l for i, l in enumerate(lines)],
     r"line 1: required column\(s\) index missing"),
    (lambda lines: [l.split(",", 1)[1] for l in lines], r"line 1: required column\(s\) file_name missing"),
    (lambda lines: lines[:2] + [lines[2].replace("images", "imag\udcffes")] + lines[3:],
     r"line 3: byte 0xff is not UTF-8"),
])
def test_damaged_metadata_is_a_clear_error_naming_file_and_line(render_set, tmp_path, damage, message):
    import shutil

    copy = tmp_path / "set"
    shutil.copytree(render_set, copy)
    metadata = copy / "metadata.csv"
    lines = metadata.read_text(encoding="utf-8").splitlines()
    text = "\n".join(damage(lines)) + "\n"
    metadata.write_bytes(text.encode("utf-8", "surrogateescape"))
    with pytest.raises(CarprobeError, match=f"metadata.csv, {message}"):
        RenderSetData(copy)


def test_not_a_render_set(tmp_path):
    with pytest.raises(CarprobeError, match="not a carprobe render set"):
        RenderSetData(tmp_path)


def test_image_dataset_reads_and_names_bad_files(render_set, tmp_path):
    paths = RenderSetData(render_set).image_paths
    dataset = ImagePathsDataset(paths, transform=lambda im: im.size)
    assert len(dataset) == 6 and dataset[0] == (40, 32)
    grey = tmp_path / "grey.png"
    Image.new("L", (5, 4), 100).save(grey)
    assert ImagePathsDataset([grey])[0].mode == "RGB"  # every image becomes RGB
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with pytest.raises(ImageReadError, match=r"corrupt\.png.*cannot be decoded"):
        ImagePathsDataset([corrupt])[0]
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(paths[0].read_bytes()[:60])
    with pytest.raises(CarprobeError, match=r"truncated\.png"):
        ImagePathsDataset([truncated])[0]
    with pytest.raises(CarprobeError, match=r"missing\.png: file not found"):
        ImagePathsDataset([tmp_path / "missing.png"])[0]


def _png(path, colour=(10, 20, 30)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 4), colour).save(path)


def test_image_folder_layouts(tmp_path):
    for name in ("b_class/x.png", "b_class/sub/y.jpg", "a_class/z.PNG", "empty/readme.txt"):
        if name.endswith("txt"):
            (tmp_path / "plain" / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / "plain" / name).write_text("not an image")
        else:
            _png(tmp_path / "plain" / name)
    paths, labels, classes = image_folder(tmp_path / "plain")
    assert classes == ["a_class", "b_class"]
    assert [p.name for p in paths] == ["z.PNG", "x.png", "y.jpg"]  # a folder's files, then its sub-folders
    assert labels == [0, 1, 1]
    # CUB-200-2011: the class folders are under images/
    _png(tmp_path / "CUB_200_2011" / "images" / "001.Black_footed_Albatross" / "a.jpg")
    _png(tmp_path / "CUB_200_2011" / "images" / "002.Laysan_Albatross" / "b.jpg")
    (tmp_path / "CUB_200_2011" / "classes.txt").write_text("1 001.Black_footed_Albatross\n")
    paths, labels, classes = image_folder(tmp_path / "CUB_200_2011")
    assert classes == ["001.Black_footed_Albatross", "002.Laysan_Albatross"] and labels == [0, 1]
    _png(tmp_path / "split" / "train" / "c1" / "a.png")
    _png(tmp_path / "split" / "test" / "c2" / "b.png")
    with pytest.raises(CarprobeError, match="split folders.*pass one split"):
        image_folder(tmp_path / "split")
    assert image_folder(tmp_path / "split" / "train")[2] == ["c1"]
    with pytest.raises(CarprobeError, match="no class sub-folders"):
        image_folder(tmp_path / "plain" / "empty")
    with pytest.raises(CarprobeError, match="not a folder"):
        image_folder(tmp_path / "nothing")


def test_image_folder_cars196_annotations(tmp_path):
    import numpy as np
    from scipy.io import savemat

    for i in range(3):
        _png(tmp_path / "car_ims" / f"{i:06d}.jpg")
    annotations = np.zeros(3, dtype=[("relative_im_path", "O"), ("class", "O"), ("test", "O")])
    for i, cls in enumerate((2, 1, 2)):
        annotations[i] = (f"car_ims/{i:06d}.jpg", cls, 0)
    class_names = np.array(["AM General Hummer SUV 2000", "Acura RL Sedan 2012"], dtype=object)
    savemat(tmp_path / "cars_annos.mat", {"annotations": annotations, "class_names": class_names})
    paths, labels, classes = image_folder(tmp_path)
    assert [p.name for p in paths] == ["000000.jpg", "000001.jpg", "000002.jpg"]
    assert labels == [1, 0, 1]
    assert classes == ["AM General Hummer SUV 2000", "Acura RL Sedan 2012"]
