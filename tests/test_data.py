"""Datasets: sources, geometry, colour, caching vs streaming, and the deterministic stream."""

import io
import pickle
import tarfile
import zipfile

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

from datafixtures import (
    REAL_CIFAR_ZIP,
    REAL_DEVKIT,
    cifar_like_zip,
    stanford_cars_tree,
    write_cifar_batches,
    write_images,
    zip_folder,
)
from ddpm.cli import main
from ddpm.data import images as D
from ddpm.data.datasets import read_cars_annotations
from ddpm.data.files import crop_window, to_mode
from ddpm.data.images import ImageDataset, StreamingDataset, load_dataset
from ddpm.data.stream import batches
from ddpm.errors import DataError


def png_folder(tmp_path, n=12, size=(10, 12)):
    folder = tmp_path / "imgs"
    write_images(folder, [f"a/{i:02d}.png" for i in range(n // 2)], size, seed=1)
    write_images(folder, [f"b/deeper/{i:02d}.png" for i in range(n - n // 2)], size, seed=2)
    (folder / "notes.txt").write_text("not an image, and ignored")
    return folder


# --- folders and zips ---------------------------------------------------------------------------


def test_a_folder_is_read_recursively_and_a_zip_gives_the_same(tmp_path):
    folder = png_folder(tmp_path)
    a = load_dataset(str(folder), (8, 8))
    b = load_dataset(str(zip_folder(folder, tmp_path / "x.zip", zipfile.ZIP_DEFLATED)), (8, 8))
    assert isinstance(a, ImageDataset) and a.images.shape == (12, 3, 8, 8)
    assert a.images.dtype == torch.uint8
    assert torch.equal(a.images, b.images)
    # the first file (sorted names) decodes to exactly what PIL gives
    with Image.open(folder / "a" / "00.png") as img:
        ref = np.asarray(img.resize((8, 8), Image.Resampling.BICUBIC, box=(1, 0, 11, 10)))
    assert np.array_equal(a.images[0].permute(1, 2, 0).numpy(), ref)


def test_a_zip_rewritten_in_place_is_read_afresh(tmp_path):
    write_images(tmp_path / "a", ["x.png"], (8, 8), seed=1)
    write_images(tmp_path / "b", ["x.png", "y.png"], (8, 8), seed=2)
    z = tmp_path / "d.zip"
    first = load_dataset(str(zip_folder(tmp_path / "a", z)), (8, 8))
    second = load_dataset(str(zip_folder(tmp_path / "b", z)), (8, 8))
    assert len(first) == 1 and len(second) == 2
    assert torch.equal(second.images, load_dataset(str(tmp_path / "b"), (8, 8)).images)


def test_class_sub_folders_give_labels(tmp_path):
    folder = png_folder(tmp_path)
    data = load_dataset(str(folder), (8, 8))
    assert data.class_names == ["a", "b/deeper"]
    assert data.labels.tolist() == [0] * 6 + [1] * 6
    flat = tmp_path / "flat"
    write_images(flat, ["x.png", "y.png"])
    assert load_dataset(str(flat), (8, 8)).labels is None


def test_the_default_size_is_the_datas_own(tmp_path):
    write_images(tmp_path / "f", ["a.png", "b.png"], (10, 12))
    assert load_dataset(str(tmp_path / "f")).image_size == (10, 12)
    write_cifar_batches(tmp_path / "c", per_batch=2)
    assert load_dataset(f"cifar10:{tmp_path / 'c'}").image_size == (32, 32)


def test_center_crop_keeps_the_middle_and_squash_keeps_everything(tmp_path):
    arr = np.zeros((10, 30), dtype=np.uint8)
    arr[:, 10:20] = 255  # black | white | black, each 10 wide
    Image.fromarray(arr).save(tmp_path / "wide.png")
    crop = load_dataset(str(tmp_path), (8, 8), resize="center-crop").images[0, 0]
    squash = load_dataset(str(tmp_path), (8, 8), resize="squash").images[0, 0]
    assert crop.min() > 240  # only the white middle (bicubic reaches a little past it)
    assert squash[:, 0].max() < 40 and squash[:, -1].max() < 40 and squash[:, 4].min() > 200
    tall = load_dataset(str(tmp_path), (4, 12), resize="center-crop").images
    assert tall.shape == (1, 1, 4, 12)


def test_crop_window_for_boxes_has_the_output_aspect_and_holds_the_box():
    for box, size in [
        ((10, 10, 50, 20), (8, 8)),
        ((0, 0, 5, 40), (8, 16)),
        ((90, 5, 100, 9), (4, 4)),
    ]:
        left, top, right, bottom = crop_window(100, 60, size, "bbox", box)
        assert left >= 0 and right <= 100 and top >= 0 and bottom <= 60
        assert left <= box[0] and right >= box[2] and top <= box[1] and bottom >= box[3]
        if right - left < 100 and bottom - top < 60:  # not clipped by the photo
            assert (right - left) / (bottom - top) == pytest.approx(size[1] / size[0])


# --- colour -------------------------------------------------------------------------------------


def test_channels_are_the_datas_own_unless_asked(tmp_path):
    gray = tmp_path / "gray"
    gray.mkdir()
    for i in range(3):
        Image.fromarray(np.full((8, 8), 40 * i, np.uint8)).save(gray / f"{i}.png")
    assert load_dataset(str(gray), (8, 8)).channels == 1
    assert load_dataset(str(gray), (8, 8), channels=3).channels == 3
    Image.fromarray(np.full((8, 8, 3), (200, 10, 10), np.uint8)).save(gray / "red.png")
    mixed = load_dataset(str(gray), (8, 8)).images
    assert mixed.shape == (4, 3, 8, 8)
    assert torch.equal(mixed[1, 0], mixed[1, 2]) and mixed[1, 0, 0, 0] == 40  # gray replicated
    assert mixed[3, :, 0, 0].tolist() == [200, 10, 10]
    one = load_dataset(str(gray), (8, 8), channels=1).images
    assert one.shape == (4, 1, 8, 8) and 60 < int(one[3, 0, 0, 0]) < 70  # ITU-R 601 luma of red


def _png(img: Image.Image) -> Image.Image:
    b = io.BytesIO()
    img.save(b, "PNG")
    return Image.open(io.BytesIO(b.getvalue()))


def test_palette_rgba_cmyk_16bit_and_gray_convert_correctly():
    rgba = Image.new("RGBA", (2, 1))
    rgba.putpixel((0, 0), (255, 0, 0, 255))
    rgba.putpixel((1, 0), (0, 0, 255, 0))  # fully transparent: white
    assert np.asarray(to_mode(_png(rgba), 3)).tolist() == [[[255, 0, 0], [255, 255, 255]]]

    pal = Image.new("P", (2, 1))
    pal.putpalette([0, 255, 0, 9, 9, 9] + [0] * 762)
    pal.putpixel((0, 0), 0)
    pal.putpixel((1, 0), 1)
    pal.info["transparency"] = 1
    assert np.asarray(to_mode(_png(pal), 3)).tolist() == [[[0, 255, 0], [255, 255, 255]]]

    cmyk = Image.new("CMYK", (3, 1))
    for x, v in enumerate([(0, 0, 0, 0), (255, 0, 0, 0), (0, 0, 0, 255)]):
        cmyk.putpixel((x, 0), v)
    b = io.BytesIO()
    cmyk.save(b, "JPEG", quality=100)
    got = np.asarray(to_mode(Image.open(io.BytesIO(b.getvalue())), 3)).astype(int)
    want = np.array([[[255, 255, 255], [0, 255, 255], [0, 0, 0]]])
    assert np.abs(got - want).max() <= 8  # white, cyan, black (JPEG is lossy)

    deep = _png(Image.fromarray(np.array([[0, 32768, 65535, 257]], dtype=np.uint16)))
    assert deep.mode.startswith("I")
    assert np.asarray(to_mode(deep, 1)).tolist() == [[0, 128, 255, 1]]

    la = Image.new("LA", (1, 1), (0, 0))
    assert np.asarray(to_mode(_png(la), 1)).tolist() == [[255]]
    bw = _png(Image.new("1", (1, 1), 1))
    assert np.asarray(to_mode(bw, None)).tolist() == [[255]]


def test_gray_palette_and_16_bit_files_count_as_gray(tmp_path):
    pal = Image.new("P", (4, 4))
    pal.putpalette([v for g in range(256) for v in (g, g, g)])
    pal.save(tmp_path / "p.png")
    Image.fromarray(np.full((4, 4), 1000, np.uint16)).save(tmp_path / "deep.png")
    assert load_dataset(str(tmp_path), (4, 4)).channels == 1


# --- CIFAR-10 -----------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", [2, 5])
def test_cifar10_python_batches(tmp_path, protocol):
    made = write_cifar_batches(tmp_path, per_batch=3, protocol=protocol)
    train = load_dataset(f"cifar10:{tmp_path}", (32, 32))
    assert train.images.shape == (15, 3, 32, 32) and train.channels == 3
    data, labels = made["data_batch_2"]
    # rows are R, G, B planes of 32x32, row-major
    assert torch.equal(train.images[3], torch.from_numpy(data[0].reshape(3, 32, 32)))
    assert train.labels[3:6].tolist() == labels
    assert train.class_names == [f"class{i}" for i in range(10)]
    test = load_dataset(f"cifar10:{tmp_path}/cifar-10-batches-py", (32, 32), split="test")
    assert len(test) == 3 and torch.equal(test.labels, torch.tensor(made["test_batch"][1]))
    both = load_dataset(f"cifar10:{tmp_path}", (16, 16), split="both", channels=1)
    assert both.images.shape == (18, 1, 16, 16)


def test_cifar10_from_torchvisions_tar_gz(tmp_path):
    write_cifar_batches(tmp_path / "src", per_batch=2)
    tgz = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(tgz, "w:gz") as tar:
        tar.add(tmp_path / "src" / "cifar-10-batches-py", "cifar-10-batches-py")
    assert len(load_dataset(f"cifar10:{tgz}", (32, 32), split="both")) == 12


def test_cifar10_pickle_that_runs_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    (folder / "data_batch_1").write_bytes(pickle.dumps({"data": Evil()}))
    with pytest.raises(DataError, match=r"builtins\.print is not allowed"):
        load_dataset(f"cifar10:{tmp_path}", (32, 32))


def test_cifar10_class_folder_zip_and_a_folder_of_split_zips(tmp_path):
    z = cifar_like_zip(tmp_path / "train.zip", per_class=4)
    data = load_dataset(f"cifar10:{z}", (32, 32))
    assert data.images.shape == (12, 3, 32, 32)
    assert data.class_names == ["cat", "dog", "ship"] and data.labels.tolist() == sorted(
        [0, 1, 2] * 4
    )
    cifar_like_zip(tmp_path / "test.zip", per_class=2, seed=1)
    test = load_dataset(f"cifar10:{tmp_path}", (32, 32), split="test")
    assert len(test) == 6 and test.class_names == ["cat", "dog", "ship"]
    assert len(load_dataset(f"cifar10:{tmp_path}", (32, 32), split="both")) == 18


# --- Stanford Cars ------------------------------------------------------------------------------


def test_the_fixture_devkit_has_the_real_devkits_format(tmp_path):
    if not REAL_DEVKIT.is_dir():
        pytest.skip("no ../shared/data/stanford_cars_devkit")
    stanford_cars_tree(tmp_path)
    for name in ("cars_train_annos.mat", "cars_test_annos.mat", "cars_meta.mat"):
        real = scipy.io.loadmat(REAL_DEVKIT / name)
        ours = scipy.io.loadmat(tmp_path / "stanford_cars" / "devkit" / name)
        key = "class_names" if name == "cars_meta.mat" else "annotations"
        assert real[key].dtype == ours[key].dtype and real[key].ndim == ours[key].ndim == 2
        first_real, first_ours = real[key][0, 0], ours[key][0, 0]
        if key == "annotations":
            for f in real[key].dtype.names:
                assert first_real[f].shape == first_ours[f].shape, f
                assert first_real[f].dtype.kind == first_ours[f].dtype.kind, f
        else:
            assert first_real.dtype.kind == first_ours.dtype.kind == "U"


def test_the_real_devkit_annotations_parse(tmp_path):
    if not REAL_DEVKIT.is_dir():
        pytest.skip("no ../shared/data/stanford_cars_devkit")
    train = read_cars_annotations(REAL_DEVKIT / "cars_train_annos.mat", tmp_path, "cars_train")
    test = read_cars_annotations(REAL_DEVKIT / "cars_test_annos.mat", tmp_path, "cars_test")
    assert len(train) == 8144 and len(test) == 8041
    assert train[0].name == "cars_train/00001.jpg" and train[0].box == (38, 115, 569, 375)
    assert train[0].label == 13 and {e.label for e in train} == set(range(196))
    assert all(e.label == -1 for e in test)


def test_stanford_cars_splits_labels_and_class_names(tmp_path):
    made = stanford_cars_tree(tmp_path)
    both = load_dataset(f"stanford-cars:{tmp_path}", (16, 16))
    assert len(both) == 10 and both.class_names[0] == "AM General Hummer SUV 2000"
    assert both.labels.tolist() == [r["class"] - 1 for r in made["train"] + made["test"]]
    train = load_dataset(f"stanford-cars:{tmp_path / 'stanford_cars'}", (16, 16), split="train")
    assert len(train) == 6 and torch.equal(train.images, both.images[:6])
    assert len(load_dataset(f"stanford-cars:{tmp_path}", (16, 16), split="test")) == 4


def test_stanford_cars_test_split_without_labels(tmp_path):
    stanford_cars_tree(tmp_path, test_labels=False)
    test = load_dataset(f"stanford-cars:{tmp_path}", (16, 16), split="test")
    assert len(test) == 4 and test.labels is None and len(test.class_names) == 3
    assert load_dataset(f"stanford-cars:{tmp_path}", (16, 16), split="both").labels is None


def test_bbox_frames_the_car(tmp_path):
    stanford_cars_tree(tmp_path)
    boxed = load_dataset(f"stanford-cars:{tmp_path}", (16, 16), resize="bbox").images.int()
    inner = boxed[:, :, 2:-2, 2:-2]  # JPEG chroma bleeds a pixel or two at the edges
    assert (inner[:, 0] > 230).all() and (inner[:, 1:] < 40).all()  # all red
    whole = load_dataset(f"stanford-cars:{tmp_path}", (16, 16), resize="squash").images.int()
    gray = (whole[:, 0] - whole[:, 1]).abs() < 20
    assert gray.float().mean() > 0.5  # mostly the gray background


# --- caching, streaming and the batch stream ------------------------------------------------


def test_parallel_decoding_equals_one_process(tmp_path, monkeypatch):
    folder = png_folder(tmp_path, n=10)
    (folder / "a" / "bad.png").write_bytes(b"not a png")
    with pytest.warns(UserWarning, match="skipped 1 unreadable"):
        one = load_dataset(str(folder), (8, 8), workers=1)
    monkeypatch.setattr(D, "PARALLEL_MIN_FILES", 0)
    monkeypatch.setattr(D, "CHUNK", 3)
    with pytest.warns(UserWarning, match="skipped 1 unreadable"):
        many = load_dataset(str(folder), (8, 8), workers=2)
    assert torch.equal(one.images, many.images) and torch.equal(one.labels, many.labels)


def _take(stream, k):
    return [next(stream) for _ in range(k)]


def test_batch_k_depends_only_on_seed_and_k(blobs):
    a = _take(batches(blobs, 16, seed=3), 9)  # 4 batches an epoch: crosses two epochs
    b = _take(batches(blobs, 16, seed=3, start_step=5), 4)
    for (xa, _), (xb, _) in zip(a[5:], b):
        assert torch.equal(xa, xb)
    c = _take(batches(blobs, 16, seed=4), 1)
    assert not torch.equal(a[0][0], c[0][0])
    # an epoch sees every image once
    seen = torch.cat([x for x, _ in a[:4]]).flatten(1)
    assert seen.shape[0] == 64 and not torch.equal(a[0][0], a[4][0])


def test_a_streamed_dataset_gives_the_cached_batches(tmp_path):
    folder = png_folder(tmp_path, n=12)
    cached = load_dataset(str(folder), (8, 8))
    streamed = load_dataset(str(folder), (8, 8), stream=True)
    assert isinstance(streamed, StreamingDataset) and len(streamed) == 12
    assert streamed.channels == 3 and streamed.image_size == (8, 8)
    want = _take(batches(cached, 5, seed=1, start_step=2, hflip=True), 4)
    for workers in (0, 2):
        got = _take(batches(streamed, 5, 1, 2, hflip=True, workers=workers), 4)
        for (xa, ya), (xb, yb) in zip(want, got):
            assert torch.equal(xa, xb) and torch.equal(ya, yb)
    on_cpu = _take(batches(cached, 5, 1, 2, hflip=True, cache_on_device=False), 4)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(want, on_cpu))


def test_streaming_is_chosen_above_the_cache_limit(tmp_path):
    folder = png_folder(tmp_path, n=4)
    assert isinstance(load_dataset(str(folder), (8, 8), stream=None), ImageDataset)
    small_limit = load_dataset(str(folder), (8, 8), stream=None, cache_limit_gb=1e-9)
    assert isinstance(small_limit, StreamingDataset)


# --- training through the CLI -------------------------------------------------------------------


def train_argv(data, out, *extra):
    return [
        "train",
        "--data",
        data,
        "--preset",
        "tiny",
        "--image-size",
        "8",
        "--steps",
        "3",
        "--batch-size",
        "4",
        "--T",
        "10",
        "--out",
        str(out),
        "--sample-every",
        "100",
        "--checkpoint-every",
        "100",
        "--num-samples",
        "2",
        "--quiet",
        *extra,
    ]


def _trained_shape(out):
    ckpt = torch.load(sorted(out.glob("ckpt-*.pt"))[-1], weights_only=True)
    return tuple(ckpt["shape"]), ckpt["step"]


def test_train_on_a_cifar10_style_zip(tmp_path, tiny_preset):
    z = cifar_like_zip(tmp_path / "train.zip", per_class=3)
    assert main(train_argv(f"cifar10:{z}", tmp_path / "run")) == 0
    assert _trained_shape(tmp_path / "run") == ((3, 8, 8), 3)


def test_train_on_stanford_cars_with_bbox(tmp_path, tiny_preset):
    stanford_cars_tree(tmp_path / "cars")
    argv = train_argv(f"stanford-cars:{tmp_path / 'cars'}", tmp_path / "run", "--resize", "bbox")
    assert main(argv) == 0
    assert _trained_shape(tmp_path / "run") == ((3, 8, 8), 3)


def test_train_streaming_with_workers(tmp_path, tiny_preset):
    folder = png_folder(tmp_path, n=8)
    argv = train_argv(str(folder), tmp_path / "run", "--stream", "--data-workers", "1")
    assert main(argv) == 0
    assert _trained_shape(tmp_path / "run") == ((3, 8, 8), 3)


def test_train_on_gray_images_above_the_cache_limit(tmp_path, tiny_preset, capsys):
    folder = tmp_path / "gray"
    folder.mkdir()
    for i in range(6):
        Image.fromarray(np.full((8, 8), 30 * i, np.uint8)).save(folder / f"{i}.png")
    argv = train_argv(str(folder), tmp_path / "run", "--cache-limit-gb", "1e-9")
    assert main([*argv, "--data-workers", "0", "--no-data-on-device"]) == 0
    assert _trained_shape(tmp_path / "run") == ((1, 8, 8), 3)  # the data's own 1 channel
    assert "(streamed by worker processes), 6 images 1x8x8" in capsys.readouterr().out


@pytest.mark.slow
def test_train_on_the_real_cifar10_zip(tmp_path, tiny_preset):
    if not REAL_CIFAR_ZIP.is_file():
        pytest.skip("no ../shared/data/cifar10/train.zip")
    assert main(train_argv(f"cifar10:{REAL_CIFAR_ZIP}", tmp_path / "run")) == 0
    assert _trained_shape(tmp_path / "run") == ((3, 8, 8), 3)
