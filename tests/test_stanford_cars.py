"""Stanford Cars as the real photos come: a zip of `cars_train/NNNNN.jpg` beside the devkit."""

import zipfile

import pytest
import torch

from datafixtures import stanford_cars_zip, write_cars_annotations
from ddpm.data.images import load_dataset
from ddpm.errors import DataError


def test_zip_beside_the_devkit_gives_labels_and_class_names(tmp_path):
    archive, rows = stanford_cars_zip(tmp_path, n_train=6)
    data = load_dataset(f"stanford-cars:{archive}", (16, 16), resize="squash")
    assert data.images.shape == (6, 3, 16, 16)
    assert data.class_names == [
        "AM General Hummer SUV 2000",
        "Acura RL Sedan 2012",
        "Acura TL Sedan 2012",
    ]
    # labels follow the devkit's `class` of each file name, and the pictures carry them in red
    assert data.labels.tolist() == [r["class"] - 1 for r in rows]
    red = data.images[:, 0].float().mean((1, 2))
    assert torch.allclose(red, 40.0 * (data.labels + 1).float(), atol=3)
    both = load_dataset(f"stanford-cars:{archive}", (16, 16), resize="squash", split="train")
    assert torch.equal(both.images, data.images)


def test_a_devkit_in_a_folder_named_devkit_next_to_the_zip_works_too(tmp_path):
    archive, _ = stanford_cars_zip(tmp_path)
    moved = tmp_path / "stanford_cars" / "devkit"
    (tmp_path / "stanford_cars_devkit").rename(moved)
    assert len(load_dataset(f"stanford-cars:{archive}", (8, 8))) == 6


def test_missing_devkit_says_where_it_looked(tmp_path):
    archive, _ = stanford_cars_zip(tmp_path)
    for f in (tmp_path / "stanford_cars_devkit").iterdir():
        f.unlink()
    with pytest.raises(DataError, match="no devkit beside the zip.*stanford_cars_devkit"):
        load_dataset(f"stanford-cars:{archive}", (8, 8))


def test_a_photo_the_annotations_do_not_name_is_an_error(tmp_path):
    archive, rows = stanford_cars_zip(tmp_path)
    write_cars_annotations(tmp_path / "stanford_cars_devkit" / "cars_train_annos.mat", rows[:-1])
    with pytest.raises(DataError, match="00006.jpg has no entry in cars_train_annos.mat"):
        load_dataset(f"stanford-cars:{archive}", (8, 8))


def test_split_and_bbox_that_the_zip_cannot_give_are_clear_errors(tmp_path):
    archive, _ = stanford_cars_zip(tmp_path)
    with pytest.raises(DataError, match="no cars_test/ photos in the zip"):
        load_dataset(f"stanford-cars:{archive}", (8, 8), split="test")
    with pytest.raises(DataError, match="boxes are in original pixels"):
        load_dataset(f"stanford-cars:{archive}", (8, 8), resize="bbox")
    stray = tmp_path / "stray.zip"
    with zipfile.ZipFile(stray, "w") as zf, zipfile.ZipFile(archive) as src:
        zf.writestr("photos/00001.jpg", src.read("cars_train/00001.jpg"))
    (tmp_path / "devkit").symlink_to(tmp_path / "stanford_cars_devkit")
    with pytest.raises(DataError, match="not under cars_train/ or cars_test/"):
        load_dataset(f"stanford-cars:{stray}", (8, 8))
