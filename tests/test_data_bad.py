"""Bad data: unreadable files are skipped with one warning (or stop under --strict), and
every unusable source ends in one clear line and exit code 1, never a traceback."""

import io
import warnings
import zipfile

import numpy as np
import pytest
from PIL import Image

from datafixtures import stanford_cars_tree, write_images, zip_folder
from ddpm.cli import main
from ddpm.data.images import load_dataset
from ddpm.data.stream import batches
from ddpm.errors import DataError


def jpeg_bytes(seed=0, size=(16, 16)) -> bytes:
    rng = np.random.default_rng(seed)
    b = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(b, "JPEG")
    return b.getvalue()


def truncated_jpeg() -> bytes:
    """A JPEG whose header is whole but whose pixel data stops early."""
    return jpeg_bytes(size=(64, 64))[:-2000]


def folder_with_bad_files(tmp_path):
    folder = tmp_path / "mixed"
    write_images(folder, [f"good{i}.png" for i in range(4)], (8, 8))
    (folder / "bad_random.jpg").write_bytes(np.random.default_rng(0).bytes(500))
    (folder / "bad_text.png").write_text("hello, I am not a picture")
    (folder / "bad_truncated.jpg").write_bytes(truncated_jpeg())
    (folder / "readme.md").write_text("no image extension: ignored silently")
    return folder


def run_cli(capsys, argv) -> tuple[int, str]:
    code = main(argv)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err


# --- unreadable files ---------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
def test_unreadable_files_are_skipped_with_one_warning(tmp_path, stream):
    folder = folder_with_bad_files(tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = load_dataset(str(folder), (8, 8), stream=stream)
        if stream:  # the truncated JPEG has a good header: caught when its batch is made
            for _ in zip(range(4), batches(data, 4, seed=0, workers=0)):
                pass
    messages = [str(w.message) for w in caught]
    if not stream:
        assert len(data) == 4
        assert len(messages) == 1, messages
        assert "skipped 3 unreadable" in messages[0]
        for name in ("bad_random.jpg", "bad_text.png", "bad_truncated.jpg"):
            assert name in messages[0]
    else:
        assert len(data) == 5  # the headers of the random and text files do not parse
        assert "skipped 2 unreadable" in messages[0]
        assert len(messages) == 2 and "bad_truncated.jpg" in messages[1], messages
        assert "replaced" in messages[1]
    assert "readme.md" not in " ".join(messages)


def test_strict_makes_an_unreadable_file_an_error(tmp_path, capsys):
    folder = folder_with_bad_files(tmp_path)
    with pytest.raises(DataError, match="bad_random.jpg is not a readable image"):
        load_dataset(str(folder), (8, 8), strict=True)
    code, err = run_cli(
        capsys, ["train", "--data", str(folder), "--strict", "--out", str(tmp_path)]
    )
    assert code == 1 and "bad_random.jpg is not a readable image" in err


def test_strict_streaming_stops_at_a_truncated_file(tmp_path):
    folder = tmp_path / "f"
    write_images(folder, ["a.png", "b.png"], (8, 8))
    (folder / "c.jpg").write_bytes(truncated_jpeg())
    data = load_dataset(str(folder), (8, 8), stream=True, strict=True)
    with pytest.raises(DataError, match=r"c\.jpg is not a readable image"):
        for _ in zip(range(3), batches(data, 3, seed=0, workers=0)):
            pass


def test_only_unreadable_files_is_an_error(tmp_path):
    folder = tmp_path / "f"
    folder.mkdir()
    (folder / "x.png").write_bytes(b"\x89PNG nope")
    with pytest.raises(DataError, match="none of the 1 image files could be read"):
        load_dataset(str(folder), (8, 8))


def test_damaged_zip_member_is_skipped(tmp_path):
    folder = tmp_path / "f"
    write_images(folder, ["a.png", "b.png"], (8, 8))
    z = zip_folder(folder, tmp_path / "x.zip")
    raw = bytearray(z.read_bytes())
    with zipfile.ZipFile(z) as zf:
        info = zf.getinfo("b.png")
    raw[info.header_offset + 30 + len("b.png") + 40] ^= 0xFF  # flip a byte of b.png's data
    z.write_bytes(bytes(raw))
    with pytest.warns(UserWarning, match=r"skipped 1 unreadable image file\(s\): b\.png"):
        assert len(load_dataset(str(z), (8, 8))) == 1


def test_macos_litter_in_zips_is_ignored(tmp_path):
    z = tmp_path / "mac.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("pics/a.jpg", jpeg_bytes())
        zf.writestr("__MACOSX/pics/._a.jpg", b"resource fork")
        zf.writestr("pics/._b.jpg", b"resource fork")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(load_dataset(str(z), (8, 8))) == 1


# --- small images -------------------------------------------------------------------------------


def test_small_images_are_upscaled_with_one_warning(tmp_path):
    folder = tmp_path / "f"
    write_images(folder, [f"small{i}.png" for i in range(7)], (6, 6))
    write_images(folder, ["big.png"], (20, 20))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = load_dataset(str(folder), (12, 12))
    assert data.images.shape == (8, 3, 12, 12)
    assert len(caught) == 1
    msg = str(caught[0].message)
    assert "7 image(s) smaller than 12x12 were upscaled" in msg and "big.png" not in msg


# --- unusable sources: one line, exit 1 -------------------------------------------------------


def _empty_zip(tmp_path):
    z = tmp_path / "empty.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("notes.txt", "no images in here")
    return z


@pytest.mark.parametrize(
    "make, expected",
    [
        (lambda p: p / "nowhere", "no such file or folder"),
        (lambda p: (p / "empty").mkdir() or p / "empty", "no images found"),
        (_empty_zip, "no images found"),
        (
            lambda p: (p / "fake.zip").write_text("not a zip") and p / "fake.zip",
            "not a readable zip",
        ),
        (
            lambda p: (p / "pic.png").write_bytes(jpeg_bytes()) and p / "pic.png",
            "expected a folder",
        ),
        (lambda p: f"cifar10:{p / 'none'}", "no such file or folder"),
        (lambda p: "cifar10", "needs a path"),
        (lambda p: f"imagenet:{p}/x", "unknown dataset kind 'imagenet'"),
    ],
)
def test_unusable_sources_give_one_clear_line(tmp_path, capsys, make, expected):
    spec = str(make(tmp_path))
    code, err = run_cli(capsys, ["train", "--data", spec, "--out", str(tmp_path / "run")])
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ddpm train: error: ") and expected in lines[0]


def test_stanford_cars_without_devkit_prints_the_expected_tree(tmp_path, capsys):
    write_images(tmp_path / "cars" / "cars_train", ["00001.jpg"], (8, 8))
    code, err = run_cli(
        capsys,
        ["train", "--data", f"stanford-cars:{tmp_path / 'cars'}", "--out", str(tmp_path / "run")],
    )
    assert code == 1 and "devkit/cars_meta.mat" in err
    for part in ("devkit/cars_train_annos.mat", "cars_train/00001.jpg", "cars_test/"):
        assert part in err  # the tree
    assert err.startswith("ddpm train: error: ")


def test_stanford_cars_missing_split_and_missing_photos(tmp_path, capsys):
    stanford_cars_tree(tmp_path)
    (tmp_path / "stanford_cars" / "cars_test" / "00002.jpg").unlink()
    with pytest.warns(UserWarning, match=r"skipped 1 unreadable.*cars_test/00002\.jpg"):
        assert len(load_dataset(f"stanford-cars:{tmp_path}", (8, 8))) == 9
    for p in (tmp_path / "stanford_cars" / "cars_test").iterdir():
        p.unlink()
    (tmp_path / "stanford_cars" / "cars_test").rmdir()
    assert len(load_dataset(f"stanford-cars:{tmp_path}", (8, 8))) == 6  # what is there
    with pytest.raises(DataError, match=r"test split's photos \(.*cars_test\) are missing"):
        load_dataset(f"stanford-cars:{tmp_path}", (8, 8), split="test")


def test_split_is_only_for_datasets_that_have_them(tmp_path):
    write_images(tmp_path / "f", ["a.png"], (8, 8))
    for spec in (str(tmp_path / "f"), None):
        with pytest.raises(DataError, match="--split applies to"):
            load_dataset(spec, (8, 8), split="test")


def test_bbox_needs_boxes(tmp_path, capsys):
    write_images(tmp_path / "f", ["a.png"], (8, 8))
    code, err = run_cli(
        capsys,
        [
            "train",
            "--data",
            str(tmp_path / "f"),
            "--resize",
            "bbox",
            "--out",
            str(tmp_path / "run"),
        ],
    )
    assert code == 1 and "bbox needs bounding boxes" in err


def test_cifar10_folder_without_batches_or_images(tmp_path, capsys):
    (tmp_path / "c" / "cifar-10-batches-py").mkdir(parents=True)
    (tmp_path / "c" / "cifar-10-batches-py" / "batches.meta").write_bytes(b"junk")
    code, err = run_cli(
        capsys, ["train", "--data", f"cifar10:{tmp_path / 'c'}", "--out", str(tmp_path / "run")]
    )
    assert code == 1 and "no data_batch_1" in err


@pytest.mark.parametrize(
    "spec, hint",
    [("mnsit", "did you mean mnist"), ("cifar-10", "did you mean --data cifar10:PATH")],
)
def test_a_misspelt_data_name_gets_a_hint_and_leaves_no_run_folder(tmp_path, capsys, spec, hint):
    out = tmp_path / "run"
    code, err = run_cli(capsys, ["train", "--data", spec, "--out", str(out)])
    assert code == 1 and err.startswith(f"ddpm train: error: --data {spec}: no such file")
    assert hint in err
    assert not out.exists()
