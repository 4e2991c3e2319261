"""The named datasets: where their pictures and labels are, before any decoding.

`--data` names one of:
  PATH                 a folder (recursive) or .zip of images; class sub-folders give labels
  stanford-cars:PATH   Krause et al. 2013, in the layout torchvision's `StanfordCars` expects
  cifar10:PATH         Krizhevsky 2009: torchvision's python batches, or class folders / zip
  mnist                the bundled digits (see `ddpm.data.images.load_bundled_mnist`)

Each resolves to a `Source`: a list of files to decode (`Entry`), or pictures already decoded
(the CIFAR-10 batches), with labels and class names.
"""

from __future__ import annotations

import difflib
import pickle
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import ClassVar

import numpy as np

from ddpm.data.files import Entry, folder_classes, list_images
from ddpm.errors import DataError

SPLITS = ("train", "test", "both")


@dataclass
class Source:
    description: str
    entries: list[Entry] | None = None  # files to decode ...
    arrays: np.ndarray | None = None  # ... or decoded pictures: uint8 (N, H, W, 3)
    labels: np.ndarray | None = None  # int64 (N,) for `arrays`
    class_names: list[str] | None = None
    has_boxes: bool = False
    no_boxes: str = "resize mode bbox needs bounding boxes (stanford-cars:PATH)"  # why not


def resolve(spec: str, split: str | None = None) -> Source:
    """`--data` text -> Source. Raises DataError with what was expected."""
    if split is not None and split not in SPLITS:
        raise DataError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    kind, sep, path = spec.partition(":")
    if sep and kind in ("stanford-cars", "cifar10"):
        if not path:
            raise DataError(f"{kind} needs a path: --data {kind}:PATH")
        return (
            stanford_cars(Path(path), split)
            if kind == "stanford-cars"
            else cifar10(Path(path), split)
        )
    if spec in ("stanford-cars", "cifar10"):
        raise DataError(f"{spec} needs a path: --data {spec}:PATH")
    from ddpm.data.arrays import is_array_spec  # arrays imports this module, through images

    if is_array_spec(spec):
        raise DataError(f"{spec}: points or sequences, but this takes images")
    if sep and len(kind) > 1 and not Path(spec).exists():
        raise DataError(
            f"{spec}: unknown dataset kind {kind!r}; expected stanford-cars:PATH, cifar10:PATH, "
            "mnist, or a folder or .zip of images"
        )
    if split is not None:
        raise DataError(f"--split applies to stanford-cars:PATH and cifar10:PATH, not to {spec}")
    if not Path(spec).exists():
        close = difflib.get_close_matches(spec.lower(), ["mnist", "cifar10", "stanford-cars"], 1)
        hint = ""
        if close == ["mnist"]:
            hint = " (did you mean mnist, the bundled digits?)"
        elif close:
            hint = f" (did you mean --data {close[0]}:PATH?)"
        raise DataError(
            f"--data {spec}: no such file or folder; expected a folder or .zip of images, "
            f"mnist, cifar10:PATH or stanford-cars:PATH (ddpm train also takes toy:NAME, "
            f"PATH.csv, PATH.npy and timeseries:FOLDER){hint}"
        )
    return image_folder(Path(spec))


def image_folder(root: Path) -> Source:
    entries, classes = folder_classes(list_images(root))
    return Source(str(root), entries, class_names=classes)


# --- Stanford Cars ------------------------------------------------------------------------------

CARS_TREE = """\
  PATH/  (or PATH/stanford_cars/)
    devkit/cars_meta.mat
    devkit/cars_train_annos.mat
    devkit/cars_test_annos.mat              (test boxes; or, with labels,
    cars_test_annos_withlabels.mat           beside devkit/ as torchvision keeps it)
    cars_train/00001.jpg ...
    cars_test/00001.jpg ..."""


def _loadmat(path: Path) -> dict:
    import scipy.io

    try:
        return scipy.io.loadmat(path, squeeze_me=True)
    except Exception as e:  # scipy raises ValueError, TypeError, MatReadError... on junk
        raise DataError(f"{path}: not a readable MATLAB .mat file ({e})") from None


def read_cars_annotations(path: Path, folder: Path, prefix: str) -> list[Entry]:
    """`annotations` of a devkit .mat -> entries with boxes (0-based, end exclusive) and
    labels (`class` - 1; -1 where the file has no `class`, as cars_test_annos.mat)."""
    mat = _loadmat(path)
    if "annotations" not in mat:
        raise DataError(f"{path}: no 'annotations' struct array (not a Stanford Cars devkit file)")
    annos = np.atleast_1d(mat["annotations"])
    fields = annos.dtype.names or ()
    needed = ("bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "fname")
    missing = [f for f in needed if f not in fields]
    if missing:
        raise DataError(f"{path}: annotations lack the field(s) {', '.join(missing)}")
    entries = []
    for a in annos:
        fname = str(a["fname"])
        # MATLAB boxes are 1-based and inclusive: pixel columns x1..x2.
        box = (int(a["bbox_x1"]) - 1, int(a["bbox_y1"]) - 1, int(a["bbox_x2"]), int(a["bbox_y2"]))
        label = int(a["class"]) - 1 if "class" in fields else -1
        entries.append(Entry(f"{prefix}/{fname}", str(folder / fname), box=box, label=label))
    return entries


DEVKIT_NAMES = ("devkit", "stanford_cars_devkit")


def find_devkit(archive: Path) -> Path | None:
    """The devkit folder beside a zip of photos: `devkit/` or `stanford_cars_devkit/` next to the
    zip or next to the folder that holds it (as `data/stanford_cars/x.zip` and
    `data/stanford_cars_devkit/`)."""
    for folder in (archive.parent, archive.parent.parent):
        for name in DEVKIT_NAMES:
            if (folder / name / "cars_meta.mat").is_file():
                return folder / name
    return None


def stanford_cars_zip(archive: Path, split: str | None) -> Source:
    """Stanford Cars photos in a zip (`cars_train/00001.jpg` ...) with the devkit beside it.

    Labels come from the devkit's annotations by file name. The devkit's boxes are in the
    original photos' pixels, so they are not used: the zips hold downscaled frames (or crops
    made already), which `--resize squash` or `center-crop` take as they are.
    """
    devkit = find_devkit(archive)
    if devkit is None:
        looked = ", ".join(
            str(f / n) for f in (archive.parent, archive.parent.parent) for n in DEVKIT_NAMES
        )
        raise DataError(
            f"stanford-cars:{archive}: no devkit beside the zip (cars_meta.mat and "
            f"cars_train_annos.mat); looked in {looked}"
        )
    class_names = [str(c) for c in np.atleast_1d(_loadmat(devkit / "cars_meta.mat")["class_names"])]
    members = list_images(archive)
    by_split: dict[str, list[Entry]] = {}
    for e in members:
        top = e.name.split("/", 1)[0] if "/" in e.name else ""
        s = {"cars_train": "train", "cars_test": "test"}.get(top)
        if s is None:
            raise DataError(
                f"stanford-cars:{archive}: {e.name} is not under cars_train/ or cars_test/ "
                "(the devkit's file names)"
            )
        by_split.setdefault(s, []).append(e)
    wanted = (
        sorted(by_split) if split is None else ["train", "test"] if split == "both" else [split]
    )
    entries: list[Entry] = []
    for s in wanted:
        if s not in by_split:
            raise DataError(f"stanford-cars:{archive}: no cars_{s}/ photos in the zip")
        annos = devkit / f"cars_{s}_annos.mat"
        if not annos.is_file():
            raise DataError(f"stanford-cars:{archive}: the devkit has no {annos.name}")
        label = {
            Path(a.name).name: a.label for a in read_cars_annotations(annos, devkit, f"cars_{s}")
        }
        for e in by_split[s]:
            fname = Path(e.name).name
            if fname not in label:
                raise DataError(f"stanford-cars:{archive}: {e.name} has no entry in {annos.name}")
            entries.append(replace(e, label=label[fname]))
    if any(e.label < 0 for e in entries):
        entries = [replace(e, label=-1) for e in entries]
    elif any(not 0 <= e.label < len(class_names) for e in entries):
        raise DataError(f"stanford-cars:{archive}: a class id is outside 1..{len(class_names)}")
    description = f"Stanford Cars ({'+'.join(wanted)}) in {archive}"
    no_boxes = (
        "resize mode bbox needs the photos at their original size: the devkit's boxes are in "
        "original pixels and this zip holds downscaled frames (a zip of box crops, such as "
        "cars_train_bbox_crops_s64.zip, is the cropped version)"
    )
    return Source(description, entries, class_names=class_names, no_boxes=no_boxes)


def stanford_cars(path: Path, split: str | None) -> Source:
    """The Stanford Cars photos of `split` (None: every split whose folder is there).

    PATH is torchvision's layout (CARS_TREE), or a zip of `cars_train/NNNNN.jpg` photos with the
    devkit beside it (`stanford_cars_zip`).
    """
    if not path.exists():
        raise DataError(f"stanford-cars:{path}: no such folder or zip")
    if path.is_file():
        if path.suffix.lower() != ".zip":
            raise DataError(f"stanford-cars:{path}: expected a folder or a .zip of photos")
        return stanford_cars_zip(path, split)
    base = path / "stanford_cars" if (path / "stanford_cars" / "devkit").is_dir() else path
    devkit = base / "devkit"
    meta = devkit / "cars_meta.mat"
    if not meta.is_file():
        raise DataError(
            f"stanford-cars:{path}: no {meta.relative_to(path)}; expected the Stanford Cars "
            f"layout (as torchvision's StanfordCars):\n{CARS_TREE}"
        )
    class_names = [str(c) for c in np.atleast_1d(_loadmat(meta)["class_names"])]
    test_annos = next(
        (
            p
            for p in (
                base / "cars_test_annos_withlabels.mat",
                devkit / "cars_test_annos_withlabels.mat",
            )
            if p.is_file()
        ),
        devkit / "cars_test_annos.mat",
    )
    parts = {
        "train": (devkit / "cars_train_annos.mat", base / "cars_train"),
        "test": (test_annos, base / "cars_test"),
    }
    if split is None:
        wanted = [s for s, (_, folder) in parts.items() if folder.is_dir()]
        if not wanted:
            raise DataError(
                f"stanford-cars:{path}: neither cars_train/ nor cars_test/ is there; expected:\n"
                f"{CARS_TREE}"
            )
    else:
        wanted = ["train", "test"] if split == "both" else [split]
    entries: list[Entry] = []
    for s in wanted:
        annos, folder = parts[s]
        for p, what in ((annos, "annotations"), (folder, "photos")):
            if not p.exists():
                raise DataError(
                    f"stanford-cars:{path}: the {s} split's {what} ({p.relative_to(path)}) are "
                    f"missing; expected:\n{CARS_TREE}"
                )
        entries += read_cars_annotations(annos, folder, folder.name)
    if any(e.label < 0 for e in entries):  # test photos without labels: none are kept
        entries = [replace(e, label=-1) for e in entries]
    elif any(not 0 <= e.label < len(class_names) for e in entries):
        raise DataError(f"stanford-cars:{path}: a class id is outside 1..{len(class_names)}")
    description = f"Stanford Cars ({'+'.join(wanted)}) at {path}"
    return Source(description, entries, class_names=class_names, has_boxes=True)


# --- CIFAR-10 -----------------------------------------------------------------------------------

CIFAR_BATCHES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists, strings and numpy arrays and nothing else: a CIFAR batch is a
    pickle, and a pickle may otherwise run any code it names."""

    ALLOWED: ClassVar[set[tuple[str, str]]] = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a CIFAR-10 batch")


def load_cifar_pickle(data: bytes, where: str) -> dict:
    import io

    try:
        obj = _ArrayUnpickler(io.BytesIO(data), encoding="latin1").load()
    except Exception as e:
        raise DataError(f"{where}: not a CIFAR-10 python batch ({e})") from None
    if not isinstance(obj, dict):
        raise DataError(f"{where}: not a CIFAR-10 python batch (a {type(obj).__name__})")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _batch_reader(path: Path) -> Callable[[str], bytes | None]:
    """name -> bytes for the batches in a folder or in torchvision's cifar-10-python.tar.gz."""
    if path.is_file() and path.name.endswith((".tar.gz", ".tgz", ".tar")):
        found: dict[str, bytes] = {}
        try:
            with tarfile.open(path) as tar:
                for m in tar.getmembers():
                    name = Path(m.name).name
                    f = tar.extractfile(m) if m.isfile() else None
                    if f is not None and (name == "batches.meta" or "_batch" in name):
                        found[name] = f.read()
        except (tarfile.TarError, OSError, EOFError) as e:
            raise DataError(f"cifar10:{path}: not a readable tar archive ({e})") from None
        return found.get
    folder = path / "cifar-10-batches-py" if (path / "cifar-10-batches-py").is_dir() else path

    def read_dir(name: str) -> bytes | None:
        return (folder / name).read_bytes() if (folder / name).is_file() else None

    return read_dir


def cifar10(path: Path, split: str | None) -> Source:
    """CIFAR-10 from the python batches (N x 3072 rows, R then G then B planes of 32x32), or
    from a folder / zip with one sub-folder per class."""
    if not path.exists():
        raise DataError(f"cifar10:{path}: no such file or folder")
    split = split or "train"
    is_batches = path.name.endswith((".tar.gz", ".tgz", ".tar")) or any(
        (p / n).is_file()
        for p in (path, path / "cifar-10-batches-py")
        for n in ("batches.meta", "data_batch_1", "test_batch")
    )
    if not is_batches:
        return _cifar_images(path, split)
    read = _batch_reader(path)
    names = (
        CIFAR_BATCHES["train"] + CIFAR_BATCHES["test"] if split == "both" else CIFAR_BATCHES[split]
    )
    arrays, labels = [], []
    for name in names:
        raw = read(name)
        if raw is None:
            raise DataError(
                f"cifar10:{path}: no {name}; expected torchvision's cifar-10-batches-py/ with "
                "data_batch_1..5, test_batch and batches.meta (or class folders / a zip)"
            )
        batch = load_cifar_pickle(raw, f"cifar10:{path}/{name}")
        try:
            data = np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
            y = np.asarray(batch["labels"], dtype=np.int64).reshape(-1)
        except (KeyError, ValueError) as e:
            raise DataError(f"cifar10:{path}/{name}: not a CIFAR-10 batch ({e})") from None
        if len(y) != len(data):
            raise DataError(f"cifar10:{path}/{name}: {len(data)} images but {len(y)} labels")
        arrays.append(data.transpose(0, 2, 3, 1))
        labels.append(y)
    meta = read("batches.meta")
    classes = None
    if meta is not None:
        names = load_cifar_pickle(meta, f"cifar10:{path}").get("label_names", [])
        classes = [c.decode() if isinstance(c, bytes) else str(c) for c in names]
    return Source(
        f"CIFAR-10 {split} at {path}",
        arrays=np.concatenate(arrays),
        labels=np.concatenate(labels),
        class_names=classes or None,
    )


def _cifar_images(path: Path, split: str) -> Source:
    """A class-folder zip or folder; or a folder holding train/test (zips or folders) of them."""
    if path.is_dir():
        halves = {
            s: next((p for p in (path / f"{s}.zip", path / s) if p.exists()), None)
            for s in ("train", "test")
        }
        if halves["train"] is not None or halves["test"] is not None:
            wanted = ["train", "test"] if split == "both" else [split]
            entries: list[Entry] = []
            for s in wanted:
                if halves[s] is None:
                    raise DataError(f"cifar10:{path}: no {s}.zip or {s}/ for the {s} split")
                entries += [replace(e, name=f"{s}/{e.name}") for e in list_images(halves[s])]
            entries, classes = folder_classes(
                [replace(e, name=e.name.split("/", 1)[1]) for e in entries]
            )
            return Source(f"CIFAR-10 {split} at {path}", entries, class_names=classes)
    entries, classes = folder_classes(list_images(path))
    return Source(f"CIFAR-10 images at {path}", entries, class_names=classes)
