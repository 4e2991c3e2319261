"""Points and sequences as data: toys, .npy / .csv / .ts reading, standardisation, the batch
stream, and which network each kind of data gets."""

import math

import numpy as np
import pytest
import torch

from ddpm.data import toys
from ddpm.data.arrays import (
    ArrayDataset,
    ArrayInfo,
    Standardizer,
    array_batches,
    is_array_spec,
    load_arrays,
    save_csv,
)
from ddpm.data.images import ImageDataset
from ddpm.data.timeseries import read_ts, resolve_timeseries
from ddpm.errors import ConfigError, DataError
from ddpm.models.layers import ClassEmbedding
from ddpm.models.presets import build_model, preset
from ddpm.train import TrainConfig
from ddpm.train.state import make_model

# --- toys -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", toys.TOYS)
def test_toys_are_a_function_of_the_generator(name):
    a = toys.sample_toy(name, 500, torch.Generator().manual_seed(1))
    b = toys.sample_toy(name, 500, torch.Generator().manual_seed(1))
    c = toys.sample_toy(name, 500, torch.Generator().manual_seed(2))
    assert a.shape == (500, 2) and a.dtype == torch.float32 and torch.isfinite(a).all()
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("name, blur", [("8gaussians", 0.0), ("checkerboard", 0.05)])
def test_exact_densities_integrate_to_one(name, blur):
    u = torch.linspace(-6, 6, 601, dtype=torch.float64)
    grid = torch.cartesian_prod(u, u)
    p = toys.log_density(name, grid, blur).exp()
    assert float(p.sum() * (u[1] - u[0]) ** 2) == pytest.approx(1.0, abs=2e-3)


def test_toy_samples_sit_in_their_modes_in_equal_shares():
    g = torch.Generator().manual_seed(0)
    for name in toys.WITH_DENSITY:
        x = toys.sample_toy(name, 8000, g)
        modes = toys.mode_of(name, x)
        assert (modes >= 0).all()  # checkerboard: every point in a square
        shares = torch.bincount(modes, minlength=8).double() / len(x)
        assert shares.min() > 0.11 and shares.max() < 0.14
    # the blurred checkerboard is finite far from every square, and matches the direct form
    far = torch.tensor([[30.0, -25.0], [-3.0, -3.0], [-1.9, -3.0], [4.05, 2.5]])
    lp = toys.log_density("checkerboard", far, blur=0.05)
    assert torch.isfinite(lp).all() and lp[0] < -1e5
    lo, hi = toys.CHECKER_SQUARES[None], toys.CHECKER_SQUARES[None] + toys.CHECKER_SIDE
    xs = far[1:, None, :].double()
    mass = torch.special.ndtr((hi - xs) / 0.05) - torch.special.ndtr((lo - xs) / 0.05)
    assert torch.allclose(lp[1:], (mass.prod(-1).sum(1) / 32).log())
    # the exact checkerboard density is 1/32 on its squares and zero elsewhere
    inside = toys.log_density("checkerboard", torch.tensor([[-3.0, -3.0], [-1.0, -3.0]]))
    assert inside[0] == pytest.approx(-math.log(32)) and inside[1] == -math.inf


# --- standardisation --------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(200, 3), (50, 2, 30)])
def test_standardisation_round_trip(shape):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(*shape, generator=g) * 7 + 3
    x[:, 1] = x[:, 1] * 0.01 - 50  # columns / channels on different scales
    s = Standardizer.fit(x)
    z = s.apply(x)
    dims = (0,) if x.ndim == 2 else (0, 2)
    assert torch.allclose(z.mean(dims), torch.zeros(shape[1]), atol=1e-4)
    assert torch.allclose(z.std(dims, correction=0), torch.ones(shape[1]), atol=1e-4)
    assert torch.allclose(s.invert(z), x, atol=1e-4, rtol=1e-5)
    again = Standardizer.from_state(s.state())  # as stored in a checkpoint
    assert torch.equal(again.apply(x), z)


def test_a_constant_column_keeps_unit_scale():
    x = torch.stack([torch.arange(10.0), torch.full((10,), 4.0)], 1)
    s = Standardizer.fit(x)
    assert torch.allclose(s.invert(s.apply(x)), x) and float(s.std[1]) == 1.0


# --- reading files ----------------------------------------------------------------------------


def test_npy_points_and_sequences(tmp_path):
    pts, seqs = tmp_path / "p.npy", tmp_path / "s.npy"
    np.save(pts, np.random.default_rng(0).normal(size=(100, 3)) * 5 + 2)
    np.save(seqs, np.random.default_rng(0).normal(size=(20, 2, 33)))
    p = load_arrays(str(pts))
    s = load_arrays(str(seqs))
    assert (p.kind, p.shape, len(p)) == ("points", (3,), 100)
    assert (s.kind, s.shape, len(s)) == ("sequences", (2, 33), 20)
    assert torch.allclose(p.raw(), torch.from_numpy(np.load(pts)).float(), atol=1e-4)


def test_bad_arrays_get_one_clear_error(tmp_path):
    np.save(tmp_path / "img.npy", np.zeros((4, 1, 8, 8)))
    with pytest.raises(DataError, match=r"img.npy: expected \(N, D\) points or \(N, C, L\)"):
        load_arrays(str(tmp_path / "img.npy"))
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match="obj.npy"):
        load_arrays(str(tmp_path / "obj.npy"))
    np.save(tmp_path / "nan.npy", np.array([[1.0, np.nan], [0, 0]]))
    with pytest.raises(DataError, match="nan.npy: non-finite value"):
        load_arrays(str(tmp_path / "nan.npy"))
    with pytest.raises(DataError, match="unknown toy 'spiral'"):
        load_arrays("toy:spiral")


def test_csv_with_a_header_and_a_non_numeric_cell(tmp_path):
    good = tmp_path / "t.csv"
    good.write_text("height,weight\n1.5,60\n1.8,80\n1.7,72\n")
    d = load_arrays(str(good))
    assert d.shape == (2,) and len(d) == 3
    assert torch.allclose(d.raw()[1], torch.tensor([1.8, 80.0]))
    # the header's names travel with the checkpoint's data entry into written CSVs
    info = ArrayInfo.from_dict(d.info().to_dict())
    assert d.columns == info.columns == ["height", "weight"]
    out = tmp_path / "out.csv"
    save_csv(d.raw().numpy(), out, info.columns)
    assert out.read_text().splitlines()[0] == "height,weight"
    assert load_arrays(str(out)).columns == ["height", "weight"]
    assert ArrayInfo.from_dict({**d.info().to_dict(), "columns": None}).columns is None
    bad = tmp_path / "b.csv"
    bad.write_text("height,colour\n1.5,3\n1.8,red\n")
    with pytest.raises(DataError, match=r"b.csv:3: 'red' in column 'colour' is not a number"):
        load_arrays(str(bad))


def write_ts(path, series, labels=None, names=("a", "b")):
    """A .ts file: series is a list of lists of channel value lists."""
    head = ["# a test file", "@problemName Test", "@univariate false"]
    head.append(f"@classLabel true {' '.join(names)}" if labels else "@classLabel false")
    lines = [*head, "@data"]
    for i, s in enumerate(series):
        line = ":".join(",".join(f"{v:g}" for v in c) for c in s)
        lines.append(line + (f":{labels[i]}" if labels else ""))
    path.write_text("\n".join(lines) + "\n")


def test_ts_files_labels_channels_and_splits(tmp_path):
    folder = tmp_path / "Test"
    folder.mkdir()
    tr = [[[1, 2, 3, 4], [0, 0, 1, 1]], [[2, 3, 4, 5], [1, 1, 0, 0]], [[0, 1, 0, 1], [5, 5, 5, 5]]]
    write_ts(folder / "Test_TRAIN.ts", tr, ["a", "b", "a"])
    write_ts(folder / "Test_TEST.ts", tr[:2], ["b", "b"])
    s = read_ts(folder / "Test_TRAIN.ts")
    assert s.x.shape == (3, 2, 4) and s.labels.tolist() == [0, 1, 0] and s.class_names == ["a", "b"]
    assert s.x[1, 1].tolist() == [1, 1, 0, 0]
    assert resolve_timeseries(folder).x.shape[0] == 3  # train by default
    assert resolve_timeseries(folder, "test").labels.tolist() == [1, 1]
    assert resolve_timeseries(folder, "both").x.shape[0] == 5
    d = load_arrays(f"timeseries:{folder}", "test")
    assert d.kind == "sequences" and d.shape == (2, 4) and d.class_names == ["a", "b"]
    assert is_array_spec(f"timeseries:{folder}") and is_array_spec(str(folder / "Test_TEST.ts"))


def test_ts_lengths_that_differ_are_refused_or_padded(tmp_path):
    f = tmp_path / "u.ts"
    write_ts(f, [[[1, 2, 3]], [[4, 5]]], ["a", "b"])
    with pytest.raises(DataError, match=r"u.ts: series lengths differ \(2 to 3\); pass --pad"):
        read_ts(f)
    s = read_ts(f, pad=True)
    assert s.x.shape == (2, 1, 3) and s.x[1, 0].tolist() == [4, 5, 5] and s.padded == 1


def test_ts_errors_name_the_line(tmp_path):
    f = tmp_path / "bad.ts"
    write_ts(f, [[[1, 2, 3]], [[4, 5, 6]]], ["a", "c"])
    with pytest.raises(DataError, match=r"bad.ts:7: class 'c' is not among"):
        read_ts(f)
    f.write_text("@classLabel false\n@data\n1,2,x\n")
    with pytest.raises(DataError, match=r"bad.ts:3: 'x' is not a number"):
        read_ts(f)
    f.write_text("1,2,3\n")
    with pytest.raises(DataError, match="expected a header line"):
        read_ts(f)


# --- the batch stream -------------------------------------------------------------------------


def test_batches_depend_only_on_seed_and_step():
    data = load_arrays("toy:moons")
    a = array_batches(data, 64, seed=3)
    first = [next(a)[0] for _ in range(5)]
    resumed = next(array_batches(data, 64, seed=3, start_step=4))[0]
    assert torch.equal(first[4], resumed) and not torch.equal(first[0], first[1])
    assert abs(float(first[0].mean())) < 0.3  # standardised
    seqs = ArrayDataset(torch.randn(10, 2, 5), "sequences", Standardizer.fit(torch.randn(10, 2, 5)))
    seqs.labels = torch.arange(10)
    x, y = next(array_batches(seqs, 4, seed=0))
    assert x.shape == (4, 2, 5) and torch.equal(seqs.x[y], x)  # rows and labels stay paired


# --- networks by the data's shape -------------------------------------------------------------


def make(data, **kw):
    return make_model(TrainConfig(**kw), data)


def test_the_network_follows_the_data_shape(blobs):
    points = load_arrays("toy:8gaussians")
    seqs = ArrayDataset(torch.randn(8, 3, 50), "sequences", Standardizer.fit(torch.randn(8, 3, 50)))
    arch, cfg, model = make(points)
    assert arch == "mlp" and cfg["in_features"] == 2
    arch, cfg, model = make(seqs)
    assert arch == "unet1d" and cfg["in_channels"] == 3
    arch, cfg, model = make(blobs)
    assert arch == "unet" and (arch, cfg) == make(blobs, preset="small")[:2]
    # --preset can say otherwise where the network fits the data ...
    arch, cfg, _ = make(seqs, preset="mlp")
    assert arch == "mlp" and cfg["in_features"] == 150
    # ... and is refused where it does not
    with pytest.raises(
        ConfigError, match=r"preset small \(unet\) is for images; the data is points"
    ):
        make(points, preset="small")
    with pytest.raises(ConfigError, match="preset unet1d"):
        make(blobs, preset="unet1d")


@pytest.mark.parametrize("L", [150, 100, 37])
def test_unet1d_takes_any_length_and_keeps_the_shape(L):
    model = build_model("unet1d", preset("unet1d", in_channels=2).config)
    x, t = torch.randn(3, 2, L), torch.tensor([0, 10, 999])
    out = model(x, t)
    assert out.shape == x.shape
    # the output at position l does not see the padding's end of the batch: a longer
    # sequence with the same prefix changes the output (convolutions are local but mixed)
    assert torch.isfinite(out).all()


def test_networks_with_learned_sigma_and_classes():
    mlp = build_model("mlp", dict(in_features=3, width=32, num_blocks=2, learn_sigma=True))
    assert mlp(torch.randn(4, 3), torch.arange(4)).shape == (4, 6)
    cond = build_model("mlp", dict(in_features=3, width=32, num_blocks=2, num_classes=5))
    assert isinstance(cond.class_emb, ClassEmbedding)  # the U-Net's, shared
    assert cond.class_emb.table.num_embeddings == 6  # the null class is index num_classes
    x, t = torch.randn(2, 3), torch.tensor([5, 5])
    for p in cond.parameters():  # make the output depend on everything
        torch.nn.init.normal_(p, std=0.3)
    assert not torch.allclose(cond(x, t, torch.tensor([0, 0])), cond(x, t, torch.tensor([1, 1])))
    assert torch.equal(cond(x, t), cond(x, t, torch.tensor([5, 5])))  # None: the null class
    u1 = build_model("unet1d", dict(in_channels=2, learn_sigma=True, num_classes=3))
    assert u1(torch.randn(2, 2, 30), t, torch.tensor([0, 2])).shape == (2, 4, 30)


def test_checkpoint_info_round_trip():
    d = load_arrays("toy:checkerboard")
    info = d.info()
    again = ArrayInfo.from_dict(info.to_dict())
    assert again.kind == "points" and again.toy == "checkerboard"
    assert torch.equal(again.scaler.mean, d.scaler.mean) and again.reference.shape == (2000, 2)


def test_image_flags_are_refused_for_points():
    with pytest.raises(ConfigError, match="--image-size applies to images"):
        TrainConfig(data="toy:moons", image_size="16")
    with pytest.raises(ConfigError, match="--flip applies to images"):
        TrainConfig(data="x.npy", hflip=True)


def test_image_data_has_no_data_info(blobs, tiny_preset):
    assert isinstance(blobs, ImageDataset)
    from ddpm.train.state import setup

    *_, state = setup(TrainConfig(preset="tiny"), blobs)
    assert state.data_info is None and state.shape == (1, 8, 8)
