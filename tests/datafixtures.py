"""Builders for small datasets on disk, made at test time (never copied from ../shared)."""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

REAL_DEVKIT = Path(__file__).resolve().parents[2] / "shared" / "data" / "stanford_cars_devkit"
REAL_CIFAR_ZIP = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10" / "train.zip"


def random_rgb(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def write_images(folder: Path, names: list[str], size=(10, 12), seed=0, fmt=None) -> None:
    """Random RGB pictures (H, W) = size at folder/name (sub-folders made as needed)."""
    rng = np.random.default_rng(seed)
    for name in names:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(random_rgb(rng, *size)).save(path, format=fmt, quality=95)


def zip_folder(folder: Path, out: Path, compression=zipfile.ZIP_STORED) -> Path:
    with zipfile.ZipFile(out, "w", compression) as zf:
        for p in sorted(folder.rglob("*")):
            zf.write(p, p.relative_to(folder).as_posix())
    return out


def cifar_like_zip(path: Path, classes=("cat", "dog", "ship"), per_class=6, seed=0) -> Path:
    """A zip laid out as ../shared/data/cifar10/*.zip: one folder of 32x32 JPEGs per class,
    stored without compression, with the folder entries."""
    rng = np.random.default_rng(seed)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for c in classes:
            zf.writestr(f"{c}/", b"")
            for i in range(per_class):
                buf = _encode(Image.fromarray(random_rgb(rng, 32, 32)), "JPEG")
                zf.writestr(f"{c}/{i:04d}.jpg", buf)
    return path


def _encode(img: Image.Image, fmt: str) -> bytes:
    import io

    b = io.BytesIO()
    img.save(b, fmt, quality=95)
    return b.getvalue()


def write_cifar_batches(
    root: Path, per_batch=4, seed=0, label_names=None, protocol=2
) -> dict[str, tuple]:
    """torchvision's cifar-10-batches-py/: data_batch_1..5, test_batch, batches.meta.
    Returns {name: (data (n, 3072) uint8, labels)}."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    out = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, per_batch)]
        batch = {
            b"batch_label": name.encode(),
            b"labels": labels,
            b"data": data,
            b"filenames": [f"{name}_{i}.png".encode() for i in range(per_batch)],
        }
        (folder / name).write_bytes(pickle.dumps(batch, protocol=protocol))
        out[name] = (data, labels)
    names = label_names or [f"class{i}" for i in range(10)]
    meta = {b"label_names": [n.encode() for n in names], b"num_cases_per_batch": per_batch}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=protocol))
    return out


# --- Stanford Cars ------------------------------------------------------------------------------


def _mat_int(v: int) -> np.ndarray:
    # The devkit stores each number as a 1x1 matrix of the smallest unsigned type that holds it.
    return np.array([[v]], dtype=np.uint8 if v < 256 else np.uint16)


def write_cars_annotations(path: Path, rows: list[dict], with_class: bool = True) -> None:
    """An `annotations` struct array (1, N) as in cars_train_annos.mat / cars_test_annos.mat."""
    import scipy.io

    fields = ["bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2"] + (["class"] if with_class else [])
    arr = np.zeros((1, len(rows)), dtype=[(f, "O") for f in [*fields, "fname"]])
    for i, r in enumerate(rows):
        for f in fields:
            arr[0, i][f] = _mat_int(r[f])
        arr[0, i]["fname"] = np.array([r["fname"]])
    scipy.io.savemat(path, {"annotations": arr})


def write_cars_meta(path: Path, class_names: list[str]) -> None:
    import scipy.io

    names = np.empty((1, len(class_names)), dtype=object)
    for i, n in enumerate(class_names):
        names[0, i] = np.array([n])
    scipy.io.savemat(path, {"class_names": names})


def car_photo(w: int, h: int, box: tuple[int, int, int, int]) -> Image.Image:
    """Gray photo with the (1-based, inclusive) box painted red."""
    arr = np.full((h, w, 3), 128, dtype=np.uint8)
    x1, y1, x2, y2 = box
    arr[y1 - 1 : y2, x1 - 1 : x2] = (255, 0, 0)
    return Image.fromarray(arr)


def stanford_cars_tree(
    root: Path,
    n_train: int = 6,
    n_test: int = 4,
    test_labels: bool = True,
    classes=("AM General Hummer SUV 2000", "Acura RL Sedan 2012", "Acura TL Sedan 2012"),
) -> dict:
    """torchvision's layout: root/stanford_cars/{devkit/, cars_train/, cars_test/,
    cars_test_annos_withlabels.mat}. Photos are 48x32 gray JPEGs with a red 16x16 box."""
    base = root / "stanford_cars"
    devkit = base / "devkit"
    devkit.mkdir(parents=True)
    write_cars_meta(devkit / "cars_meta.mat", list(classes))
    made = {}
    for split, n in (("train", n_train), ("test", n_test)):
        folder = base / f"cars_{split}"
        folder.mkdir()
        rows = []
        for i in range(n):
            x1, y1 = 3 + 2 * i, 5 + i
            box = (x1, y1, x1 + 15, y1 + 15)
            fname = f"{i + 1:05d}.jpg"
            car_photo(48, 32, box).save(folder / fname, quality=95)
            rows.append(
                dict(
                    bbox_x1=box[0],
                    bbox_y1=box[1],
                    bbox_x2=box[2],
                    bbox_y2=box[3],
                    **{"class": i % len(classes) + 1},
                    fname=fname,
                )
            )
        made[split] = rows
    write_cars_annotations(devkit / "cars_train_annos.mat", made["train"])
    write_cars_annotations(devkit / "cars_test_annos.mat", made["test"], with_class=False)
    if test_labels:
        write_cars_annotations(base / "cars_test_annos_withlabels.mat", made["test"])
    return made


def stanford_cars_zip(
    root: Path,
    n_train: int = 6,
    classes=("AM General Hummer SUV 2000", "Acura RL Sedan 2012", "Acura TL Sedan 2012"),
    size=(24, 32),
) -> tuple[Path, list[dict]]:
    """The layout of the real photos: root/stanford_cars/cars_train_128x96.zip holding
    cars_train/00001.jpg ... (downscaled frames), and root/stanford_cars_devkit/ beside it.
    Picture i is a flat colour whose red channel is 40 * (class index + 1)."""
    devkit = root / "stanford_cars_devkit"
    devkit.mkdir(parents=True)
    write_cars_meta(devkit / "cars_meta.mat", list(classes))
    rows = []
    (root / "stanford_cars").mkdir()
    archive = root / "stanford_cars" / "cars_train_128x96.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zf:
        for i in range(n_train):
            c = i % len(classes)
            fname = f"{i + 1:05d}.jpg"
            arr = np.zeros((*size, 3), dtype=np.uint8)
            arr[..., 0] = 40 * (c + 1)
            zf.writestr(f"cars_train/{fname}", _encode(Image.fromarray(arr), "JPEG"))
            # boxes in the (unavailable) original photos' pixels, larger than these frames
            rows.append(
                dict(
                    bbox_x1=30,
                    bbox_y1=40,
                    bbox_x2=300,
                    bbox_y2=200,
                    **{"class": c + 1},
                    fname=fname,
                )
            )
    write_cars_annotations(devkit / "cars_train_annos.mat", rows)
    write_cars_annotations(devkit / "cars_test_annos.mat", rows[:2], with_class=False)
    return archive, rows
