"""Editing (`ddpm.sampling.editing`, `ddpm inpaint | edit | invert | interpolate`) against
oracle models whose exact noise predictor is known: a point mass (the data is one image),
independent Gaussian pixels (the exact eps acts on each pixel alone) and a 2-D mixture."""

import math

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from conftest import run
from ddpm.data.arrays import ArrayInfo, Standardizer
from ddpm.data.images import to_model_range, to_uint8
from ddpm.diffusion.process import predict_eps_from_x0
from ddpm.diffusion.schedule import make_schedule
from ddpm.errors import ConfigError
from ddpm.sampling import editing as E
from ddpm.sampling import inversion as V
from ddpm.sampling import noise
from ddpm.sampling.generate import generate
from ddpm.sampling.loaded import Loaded

C = 0.5  # the Gaussian data's standard deviation


class Oracle(nn.Module):
    """A "network" that returns a given eps(x_t, t) (a parameter tells its device)."""

    def __init__(self, eps):
        super().__init__()
        self.eps = eps
        self.anchor = nn.Parameter(torch.zeros(()))

    def forward(self, x_t, t):
        return self.eps(x_t, t)


def gaussian(shape=(1, 4, 4), T=100, data=None) -> Loaded:
    """Pixels i.i.d. N(0, C²): eps(x_t) = √(1-ᾱ) x_t / (ᾱ C² + 1 - ᾱ), pixel by pixel."""
    schedule = make_schedule("linear", T)

    def eps(x_t, t):
        a = schedule.alphas_cumprod[t].view(-1, *([1] * (x_t.ndim - 1))).float()
        return (1 - a).sqrt() * x_t / (a * C**2 + 1 - a)

    return Loaded(Oracle(eps), schedule, "eps", shape, 0, data=data)


def point_mass(x_star, T=100, data=None) -> Loaded:
    """The data is the one input x_star (*shape): x̂_0 is x_star from any x_t."""
    schedule = make_schedule("linear", T)

    def eps(x_t, t):
        return predict_eps_from_x0(schedule, x_t, t, x_star.expand_as(x_t))

    return Loaded(Oracle(eps), schedule, "eps", tuple(x_star.shape), 0, data=data)


def images(n=3, shape=(1, 4, 4), seed=1):
    """n inputs on the uint8 grid, in [-1, 1]."""
    g = torch.Generator().manual_seed(seed)
    return to_model_range(torch.randint(0, 256, (n, *shape), generator=g, dtype=torch.uint8))


# --- SDEdit -------------------------------------------------------------------------------------


def test_strength_0_returns_the_inputs_exactly():
    x = images()
    assert torch.equal(E.sdedit(gaussian(), x, 0.0), x)
    assert torch.equal(E.sdedit(gaussian(), x, 0.0, n=5)[3], x[0])  # output i edits input i % N


@pytest.mark.parametrize(
    "fields",
    [dict(sampler="ddim", steps=10), dict(sampler="ddpm"), dict(sampler="dpm-solver", steps=6)],
)
def test_strength_1_is_generate_with_the_same_spec_and_seed(fields):
    loaded = gaussian()
    out = E.sdedit(loaded, images(), 1.0, n=5, seed=3, batch_size=2, **fields)
    assert torch.equal(out, generate(loaded, 5, seed=3, **fields))


def test_sdedit_keeps_the_data_of_a_one_image_dataset():
    x_star = images(1)[0]
    out = E.sdedit(point_mass(x_star), images(2, seed=5), 0.6, n=2, steps=10)
    assert (out - x_star).abs().max() < 1e-4


# --- inpainting ---------------------------------------------------------------------------------


def test_repaint_schedule_jumps_back_and_resamples_each_stretch():
    assert E.repaint_schedule(6, 1, 1) == [5, 4, 3, 2, 1, 0, -1]
    states = E.repaint_schedule(20, 5, 3)
    downs = sum(b < a for a, b in zip(states, states[1:]))
    ups = sum(b > a for a, b in zip(states, states[1:]))
    assert (
        states[0] == 19
        and states[-1] == -1
        and all(abs(b - a) == 1 for a, b in zip(states, states[1:]))
    )
    assert ups == 5 * 2 * 3  # J steps back, R - 1 times, at 0, 5 and 10 (below K - J = 15)
    assert downs == 20 + ups


@pytest.mark.parametrize(("steps", "jump", "resample"), [(12, 3, 2), (12, 5, 3), (7, 1, 1)])
def test_repaint_calls_is_the_network_calls_inpainting_makes(steps, jump, resample):
    loaded = gaussian()
    calls = []
    eps = loaded.model.eps
    loaded.model.eps = lambda x_t, t: calls.append(t) or eps(x_t, t)
    keep = E.named_mask("center", loaded.shape)
    E.inpaint(loaded, images(2), keep, jump=jump, resample=resample, sampler="ddpm", steps=steps,
              batch_size=2)  # fmt: skip
    assert len(calls) == E.repaint_calls(steps, jump, resample)
    assert E.repaint_calls(steps, 1, 1) == steps  # replacement: one call a step


def test_the_default_jump_is_ten_or_a_fifth_of_a_short_chain_and_a_useless_one_is_refused():
    assert [E.resolve_jump(None, k, 10) for k in (3, 10, 49, 50, 250)] == [1, 2, 9, 10, 10]
    assert E.resolve_jump(4, 5, 2) == 4 and E.resolve_jump(9, 5, 1) == 9  # r = 1: no jumps
    with pytest.raises(ConfigError, match="--jump 5: the chain has only 5 steps"):
        E.resolve_jump(5, 5, 2)


@pytest.mark.parametrize("block", [1, 3])
@pytest.mark.parametrize("fields", [dict(sampler="ddpm"), dict(sampler="ddim", steps=10, eta=1.0)])
def test_with_a_per_pixel_oracle_the_filled_pixels_are_generates(fields, block, monkeypatch):
    """Each pixel of the Gaussian oracle evolves alone, so the filled ones take exactly the
    steps and the noise that `generate` takes for the same seed: the known region's noise
    comes from another stream. So too with the noise drawn ahead in blocks, as on a GPU."""
    monkeypatch.setattr(noise, "block_size", lambda shape, device: block)
    loaded = gaussian()
    keep = E.named_mask("center", loaded.shape)[0]
    out = E.inpaint(loaded, images(), keep, 5, method="replace", seed=2, batch_size=2, **fields)
    ref = generate(loaded, 5, seed=2, **fields)
    assert torch.equal(out[:, ~keep], ref[:, ~keep])


def test_repaint_without_jumps_is_the_replacement_method():
    loaded = gaussian()
    keep = E.named_mask("left", loaded.shape)
    ref = E.inpaint(loaded, images(), keep, method="replace", sampler="ddpm", seed=4)
    same = E.inpaint(
        loaded, images(), keep, method="repaint", jump=1, resample=1, sampler="ddpm", seed=4
    )
    other = E.inpaint(
        loaded, images(), keep, method="repaint", jump=2, resample=2, sampler="ddpm", seed=4
    )
    assert torch.equal(same, ref) and not torch.equal(other, ref)


@pytest.mark.parametrize("method", ["repaint", "replace"])
def test_the_kept_pixels_come_back_bit_exact(method):
    x = images(4)
    keep = E.named_mask("random:0.5", x.shape[1:], n=4, seed=0)
    out = E.inpaint(
        gaussian(), x, keep, method=method, jump=3, resample=2, sampler="ddim", steps=12, eta=0.5
    )
    assert torch.equal(out[keep.expand_as(x)], x[keep.expand_as(x)])
    assert torch.equal(to_uint8(x), to_uint8(to_model_range(to_uint8(x))))  # the uint8 round trip


@pytest.mark.parametrize("method", ["repaint", "replace"])
def test_the_fill_of_a_one_image_dataset_is_that_image(method):
    x_star = images(1)[0]
    damaged = x_star.clone()
    keep = E.named_mask("center", x_star.shape)
    damaged[~keep[0].expand_as(damaged)] = 1.0
    out = E.inpaint(point_mass(x_star), damaged, keep, 3, method=method, jump=2, resample=2)
    assert (out - x_star).abs().max() < 1e-4


def test_imputing_sequences_through_the_same_function():
    """A mask over time steps: the kept steps exact, the missing ones the data's."""
    info = ArrayInfo("sequences", Standardizer(torch.zeros(2, 1), torch.ones(2, 1)))
    x_star = torch.sin(torch.linspace(0, 6, 32)).expand(2, 32) * torch.tensor([[1.0], [0.5]])
    loaded = point_mass(x_star, data=info)
    assert loaded.kind == "sequences"
    keep = E.named_mask("left", loaded.shape)  # the region filled: the first half
    assert keep.shape == (1, 1, 32) and keep[..., 16:].all() and not keep[..., :16].any()
    noisy = x_star + torch.randn(2, 32)
    out = E.inpaint(loaded, noisy, keep, 2, sampler="ddpm", resample=2, jump=5)
    assert torch.equal(out[..., 16:], noisy.expand(2, 2, 32)[..., 16:])
    assert (out[..., :16] - x_star[:, :16]).abs().max() < 1e-4


# --- inversion ----------------------------------------------------------------------------------


def test_ddim_inversion_then_decoding_reconstructs_and_the_error_falls_with_steps():
    loaded = gaussian(T=1000)
    x = images(4) * C
    errors = [
        (V.decode(loaded, V.ddim_invert(loaded, x, k), k) - x).abs().max() for k in (10, 50, 200)
    ]
    assert errors[0] > errors[1] > errors[2] and errors[2] < 0.01
    z = V.ddim_invert(loaded, x, 200)
    assert 0.5 < z.std() < 2  # noise-like: x_0 / C is N(0, 1), and so is z


def test_slerp_ends_are_exact_and_the_middle_keeps_the_norm():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(3, 1, 4, 4, generator=g), torch.randn(3, 1, 4, 4, generator=g)
    assert torch.equal(V.slerp(a, b, 0.0), a) and torch.equal(V.slerp(a, b, 1.0), b)
    a2 = a / a.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    b2 = b / b.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    mid = V.slerp(a2, b2, 0.5).flatten(1).norm(dim=1)
    assert torch.allclose(mid, torch.ones(3), atol=1e-6)
    assert torch.allclose(V.slerp(a, 2 * a, 0.5), 1.5 * a)  # parallel: linear


def test_interpolation_ends_near_its_inputs():
    loaded = gaussian(T=1000)
    x = images(2) * C
    path = V.interpolate(loaded, x[0], x[1], 5, steps=100)
    assert path.shape == (5, 1, 4, 4)
    assert (path[0] - x[0]).abs().max() < 0.02 and (path[-1] - x[1]).abs().max() < 0.02


# --- class-conditional models ---------------------------------------------------------------


@pytest.fixture
def conditional(tmp_path, tiny_preset):
    """An untrained class-conditional tiny model (2 classes), loaded."""
    from ddpm.data.images import ImageDataset
    from ddpm.sampling.loaded import load_model
    from ddpm.train import TrainConfig, save_checkpoint, setup

    cfg = TrainConfig(preset="tiny", T=20, class_cond=True, out=str(tmp_path / "run"))
    data = ImageDataset(
        torch.zeros(4, 1, 8, 8, dtype=torch.uint8), torch.tensor([0, 1, 0, 1]), ["a", "b"]
    )
    _, _, arch, model_cfg, state = setup(cfg, data)
    with torch.no_grad():  # an untrained network outputs zeros: make its classes differ
        for p in state.model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    save_checkpoint(state, cfg, arch, model_cfg)
    return load_model(tmp_path / "run", raw_weights=True)


def test_a_class_conditional_model_with_guidance(conditional):
    x = images(2, (1, 8, 8))
    y = torch.tensor([1, 0, 1])
    keep = E.named_mask("top", (1, 8, 8))
    plain = E.inpaint(
        conditional, x, keep, 3, class_labels=y, sampler="ddim", steps=3, resample=2, jump=1
    )
    guided = E.inpaint(
        conditional,
        x,
        keep,
        3,
        class_labels=y,
        guidance=2.0,
        sampler="ddim",
        steps=3,
        resample=2,
        jump=1,
    )
    rows = torch.tensor([0, 1, 0])
    assert torch.equal(guided[keep.expand(3, 1, 8, 8)], x[rows][keep.expand(3, 1, 8, 8)])
    assert not torch.equal(plain, guided)
    spec = dict(steps=3, guidance=2.0, seed=1)
    assert torch.equal(
        E.sdedit(conditional, x, 1.0, 3, class_labels=y, **spec),
        generate(conditional, 3, class_labels=y, **spec),
    )


# --- the commands -------------------------------------------------------------------------------


@pytest.fixture
def run_folder(tmp_path, tiny_preset):
    """An untrained tiny model (T = 20, 1x8x8) and three 8x8 gray pictures."""
    from ddpm.data.images import ImageDataset
    from ddpm.train import TrainConfig, save_checkpoint, setup
    from ddpm.viz.grids import save_images

    cfg = TrainConfig(preset="tiny", T=20, out=str(tmp_path / "run"))
    _, _, arch, model_cfg, state = setup(
        cfg, ImageDataset(torch.zeros(4, 1, 8, 8, dtype=torch.uint8))
    )
    save_checkpoint(state, cfg, arch, model_cfg)
    save_images(images(3, (1, 8, 8)), tmp_path / "pics")
    return tmp_path


def png(path, array, mode="L"):
    Image.fromarray(np.asarray(array, dtype=np.uint8), mode).save(path)
    return str(path)


def test_the_commands_write_what_the_measurements_need(capsys, run_folder):
    d = run_folder
    c = ["--checkpoint", str(d / "run"), "--quiet"]
    code, out, _ = run(
        capsys,
        [
            "inpaint",
            *c,
            "--image",
            str(d / "pics"),
            "--mask",
            "center",
            "--steps",
            "4",
            "--resample",
            "2",
            "--jump",
            "2",
            "--out",
            str(d / "f.npy"),
            "--folder",
            str(d / "filled"),
        ],
    )
    assert code == 0 and "wrote 3 inpainted images" in out
    filled = np.load(d / "f.npy")
    inputs = np.stack([np.asarray(Image.open(d / "pics" / f"{i:06d}.png"))[None] for i in range(3)])
    keep = E.named_mask("center", (1, 8, 8))[0].numpy()
    assert np.array_equal(filled[:, keep], inputs[:, keep])
    assert sorted(p.name for p in (d / "filled").iterdir()) == [
        "000000.png",
        "000001.png",
        "000002.png",
    ]
    code, _, _ = run(
        capsys,
        ["edit", *c, "--image", str(d / "pics"), "--strength", "0", "--out", str(d / "e.npy")],
    )
    assert code == 0 and np.array_equal(np.load(d / "e.npy"), inputs)
    # a grid of edits is enlarged as ddpm sample's grid of as many images is
    grids = {}
    for cmd in (["edit", "--image", str(d / "pics"), "--strength", "0"], ["sample", "--n", "3"]):
        grids[cmd[0]] = d / f"{cmd[0]}.png"
        assert run(capsys, [cmd[0], *c, *cmd[1:], "--out", str(grids[cmd[0]])])[0] == 0
    assert Image.open(grids["edit"]).size == Image.open(grids["sample"]).size
    code, out, _ = run(
        capsys,
        [
            "invert",
            *c,
            "--image",
            str(d / "pics"),
            "--steps",
            "5",
            "--out",
            str(d / "z.npy"),
            "--psnr",
        ],
    )
    assert code == 0 and np.load(d / "z.npy").shape == (3, 1, 8, 8) and "PSNR" in out
    a, b = str(d / "pics" / "000000.png"), str(d / "pics" / "000001.png")
    code, _, _ = run(
        capsys,
        [
            "interpolate",
            *c,
            "--image",
            a,
            "--image",
            b,
            "--frames",
            "3",
            "--steps",
            "4",
            "--out",
            str(d / "i.gif"),
        ],
    )
    assert code == 0 and (d / "i.gif").is_file()


BAD = [
    (["inpaint", "--image", "{big}"], "is 16x16 gray; the model's images are 8x8 gray: --resize"),
    (["inpaint", "--image", "{rgb}"], "is 8x8 RGB; the model's images are 8x8 gray"),
    (["inpaint", "--mask", "{big}"], "the model's images are 8x8"),
    (["inpaint", "--mask", "{white}"], "the mask keeps everything"),
    (["inpaint", "--mask", "{black}"], "the mask keeps nothing"),
    (["inpaint", "--mask", "random:2"], "random:P takes a fraction P in (0, 1)"),
    (["inpaint", "--sampler", "heun"], "argument --sampler"),
    (["edit", "--strength", "1.5"], "--strength must lie in [0, 1], got 1.5"),
    (["edit", "--strength", "-0.1"], "--strength must lie in [0, 1]"),
    (["edit", "--strength", "abc"], "--strength: expected a number, got 'abc'"),
    (
        ["interpolate", "--image", "{pic}", "--frames", "x"],
        "--frames: expected an integer, got 'x'",
    ),
    (["interpolate", "--image", "{pic}", "--frames", "1"], "--frames must be at least 2"),
    (["invert", "--out", "{d}/z.txt"], "must end in"),
    (["inpaint", "--steps", "5", "--jump", "5"], "--jump 5: the chain has only 5 steps, so"),
    (
        ["inpaint", "--sampler", "ddpm", "--eta", "0.5"],
        "--eta is DDIM's noise: give it with --sampler ddim, not ddpm",
    ),
    (["inpaint", "--sampler", "ddim", "--eta", "1.5"], "--eta 1.5: expected 0 to 1"),
    (["edit", "--sampler", "ddpm", "--spacing", "edm"], "--spacing applies to every sampler but"),
]


@pytest.mark.parametrize("argv, message", BAD)
def test_bad_input_is_one_line_exit_2_and_no_sampling(
    capsys, monkeypatch, run_folder, argv, message
):
    d = run_folder
    files = dict(
        d=d,
        pic=d / "pics" / "000000.png",
        big=png(d / "big.png", np.zeros((16, 16))),
        rgb=png(d / "rgb.png", np.zeros((8, 8, 3)), "RGB"),
        white=png(d / "white.png", np.full((8, 8), 255)),
        black=png(d / "black.png", np.zeros((8, 8))),
    )
    monkeypatch.setattr(Loaded, "eps_given", lambda *a, **k: pytest.fail("sampling started"))
    argv = [a.format(**files) for a in argv]
    if "--image" not in argv:
        argv += ["--image", str(files["pic"])]
    if argv[0] == "edit" and "--strength" not in argv:
        argv += ["--strength", "0.5"]
    code, _, err = run(capsys, [*argv, "--checkpoint", str(d / "run"), "--quiet"])
    assert code == 2 and message in err
    assert len(err.strip().splitlines()) <= 2 and err.startswith(f"ddpm {argv[0]}: error:")


def test_the_replacement_method_takes_no_jump_to_refuse(capsys, run_folder):
    d = run_folder
    argv = ["inpaint", "--checkpoint", str(d / "run"), "--image", str(d / "pics" / "000000.png"),
            "--method", "replace", "--steps", "4", "--jump", "5", "--n", "1",
            "--out", str(d / "replaced.png"), "--quiet"]  # fmt: skip
    code, said, err = run(capsys, argv)
    assert code == 0 and "(replace; ddim, 4 steps" in said, err


def test_a_points_model_given_a_picture_is_refused(capsys, monkeypatch, run_folder):
    info = ArrayInfo("points", Standardizer(torch.zeros(2), torch.ones(2)))
    points = point_mass(torch.zeros(2), data=info)
    monkeypatch.setattr("ddpm.sampling.loaded.load_model", lambda *a, **k: points)
    picture = run_folder / "pics" / "000000.png"
    code, _, err = run(capsys, ["inpaint", "--checkpoint", "x.pt", "--image", str(picture)])
    assert code == 2
    assert (
        err.strip()
        == f"ddpm inpaint: error: --image {picture}: a points model takes a .npy or .csv"
    )


MU, S = torch.tensor([[1.0, 1.0], [1.0, -1.0], [-1.0, 0.0]]), 0.3  # a 2-D mixture, std S


def mixture(T=100) -> Loaded:
    """Points from an equal mixture of N(MU_k, S² I): the exact eps of its noised density,
    -√(1-ᾱ) ∇ log p_t with p_t = Σ_k N(√ᾱ MU_k, (ᾱ S² + 1 - ᾱ) I) / 3."""
    schedule = make_schedule("linear", T)

    def eps(x_t, t):
        a = schedule.alphas_cumprod[t].float().view(-1, 1)
        var = a * S**2 + 1 - a
        d = x_t[:, None, :] - a.sqrt()[..., None] * MU[None]  # (B, 3, 2)
        r = (-(d**2).sum(-1) / (2 * var)).softmax(1)  # each component's share
        return (1 - a).sqrt() * (r[..., None] * d).sum(1) / var

    info = ArrayInfo("points", Standardizer(torch.zeros(2), torch.ones(2)))
    return Loaded(Oracle(eps), schedule, "eps", (2,), 0, data=info)


@pytest.mark.parametrize("x", [1.0, -1.0])
def test_repaint_with_a_mixtures_exact_eps_draws_y_given_x(x):
    """Conditioning a 2-D sample on one coordinate: given x, y follows p(y | x), whose
    components are weighted by N(x; MU_k,x, S²); at x = 1 half the draws are near +1, half near
    -1, at x = -1 all near 0. Compared with exact draws by the 1-D Wasserstein distance."""
    g = torch.Generator().manual_seed(0)
    n = 1000
    w = torch.exp(-((x - MU[:, 0]) ** 2) / (2 * S**2))
    k = torch.multinomial(w / w.sum(), n, replacement=True, generator=g)
    exact = MU[k, 1] + S * torch.randn(n, generator=g)
    keep = torch.tensor([[True, False]])
    out = E.inpaint(mixture(), torch.tensor([[x, 0.0]]), keep, n, sampler="ddpm", steps=50,
                  jump=5, resample=5, seed=1, batch_size=n)  # fmt: skip
    assert bool((out[:, 0] == x).all())  # the given coordinate, exactly
    w1 = float((out[:, 1].sort().values - exact.sort().values).abs().mean())
    assert w1 < 0.08, w1
    # and hardly a draw between the components' y
    far = (out[:, 1, None] - MU[None, :, 1]).abs().min(1).values > 3 * S
    assert float(far.float().mean()) < 0.02


def test_inversion_psnr_is_defined_for_images():
    x = images(2)
    assert math.isinf(V.psnr(x, x)[0]) is False and V.psnr(x, x)[0] > 100
    assert torch.allclose(
        V.psnr(x, x + 0.02), torch.full((2,), 10 * math.log10(4 / 0.0004), dtype=torch.float64)
    )


def test_a_corrupt_picture_is_named_in_one_line_before_sampling(capsys, monkeypatch, run_folder):
    bad = run_folder / "bad.png"
    bad.write_bytes(b"not a png")
    monkeypatch.setattr(Loaded, "eps_given", lambda *a, **k: pytest.fail("sampling started"))
    argv = ["inpaint", "--image", str(bad), "--mask", "center"]
    code, _, err = run(capsys, [*argv, "--checkpoint", str(run_folder / "run"), "--quiet"])
    assert code == 1
    line = err.strip().splitlines()[-1]
    assert f"--image {bad}: not a readable picture (not an image format Pillow" in line
    assert "BytesIO" not in err


def test_editing_a_trained_network_keeps_no_autograd_graph(run_folder):
    # the network's parameters require grad: without no_grad every step of every batch would
    # be kept for a backward pass that never comes (and the results could not become arrays)
    from ddpm.sampling.loaded import load_model

    loaded = load_model(run_folder / "run")
    x = torch.zeros(2, *loaded.shape)
    keep = E.named_mask("center", loaded.shape)
    assert not E.inpaint(loaded, x, keep, sampler="ddpm", steps=3, resample=2).requires_grad
    assert not E.sdedit(loaded, x, 0.5, steps=3).requires_grad


def test_points_through_the_cli_fill_their_nan_coordinates(capsys, monkeypatch, tmp_path):
    monkeypatch.setattr("ddpm.sampling.loaded.load_model", lambda *a, **k: mixture())
    given = tmp_path / "given.csv"
    given.write_text("x,y\n1.0,\nnan,-1.0\n")  # a header row of names; empty or nan: missing
    argv = ["inpaint", "--checkpoint", "x.pt", "--image", str(given), "--n", "4", "--steps", "10"]
    code, said, err = run(capsys, [*argv, "--out", str(tmp_path / "filled.csv")])
    assert code == 0, err
    assert "wrote 4 inpainted points" in said
    lines = (tmp_path / "filled.csv").read_text().splitlines()
    assert lines[0] == "x,y"  # the input's names (the model has none)
    rows = np.array([[float(v) for v in line.split(",")] for line in lines[1:]])
    assert rows.shape == (4, 2) and np.isfinite(rows).all()
    assert rows[0::2, 0].tolist() == [1.0, 1.0] and rows[1::2, 1].tolist() == [-1.0, -1.0]
    assert run(capsys, [*argv, "--out", str(tmp_path / "filled.png")])[0] == 0
    # a built-in mask means nothing for points; a point of another dimension is refused
    refused = ["--out", str(tmp_path / "refused.csv")]  # never into the working directory
    code, _, err = run(capsys, [*argv, "--mask", "center", *refused])
    assert code == 2 and "a points model fills the NaN coordinates of --image" in err
    np.save(tmp_path / "three.npy", np.zeros((2, 3)))
    code, _, err = run(capsys, [*argv[:4], str(tmp_path / "three.npy"), *refused])
    assert code == 2 and "holds points of 3 coordinates; the model's have 2" in err
    # a cell that is not a number is named, not taken for a missing value; nothing known: no
    (tmp_path / "typo.csv").write_text("x,y\n1.0,\n2.0,abc\n")
    code, _, err = run(capsys, [*argv[:4], str(tmp_path / "typo.csv"), *refused])
    assert code != 0 and "typo.csv:3: 'abc' in column 'y' is not a number (leave a missing" in err
    (tmp_path / "none.csv").write_text("x,y\n1.0,\nnan,nan\n")
    code, _, err = run(capsys, [*argv[:4], str(tmp_path / "none.csv"), *refused])
    assert code == 2 and "an input has no known value: that is plain sampling" in err
    assert not (tmp_path / "refused.csv").exists()
