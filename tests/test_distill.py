"""Progressive distillation (`ddpm.train.distill`, `ddpm distill`): the targets make one DDIM
step land where the teacher's two do; a round brings the student's K steps nearer its
teacher's 2K; the student is an ordinary checkpoint that samples in its K steps."""

import argparse
import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import TINY_UNET, run, tiny_config
from ddpm.diffusion.schedule import make_schedule
from ddpm.errors import ConfigError
from ddpm.io import checkpoint as C
from ddpm.models.presets import PRESETS, ModelSpec
from ddpm.sampling.generate import generate
from ddpm.sampling.loaded import load_model
from ddpm.train.distill import Teacher, check_steps
from test_distributed import image_folder
from test_editing import C as DATA_STD

pytestmark = pytest.mark.usefixtures("tiny_preset")


def gaussian_teacher(steps: int, T: int = 100) -> Teacher:
    """The exact eps of pixels i.i.d. N(0, C²) as the teacher (no network)."""
    schedule = make_schedule("linear", T)

    def eps(x_t, t, y):
        a = schedule.alphas_cumprod[t].view(-1, *([1] * (x_t.ndim - 1))).float()
        return (1 - a).sqrt() * x_t / (a * DATA_STD**2 + 1 - a)

    return Teacher(eps, schedule, steps, clip=False)


@pytest.mark.parametrize("steps", [1, 2, 4])
def test_one_ddim_step_with_the_targets_lands_where_the_teachers_two_do(steps):
    teacher = gaussian_teacher(steps)
    g = torch.Generator().manual_seed(0)
    x_0 = torch.randn(32, 1, 4, 4, generator=g) * DATA_STD
    eps = torch.randn(32, 1, 4, 4, generator=g)
    i = teacher.draw_t(32, g, "cpu")
    x_t, e_t = teacher.targets(x_0, eps, i, None)
    t = teacher.timesteps(i)
    a, s = teacher._alpha_sigma(t, x_0)
    z = a * x_0 + s * eps
    torch.testing.assert_close(a * x_t + s * e_t, z)  # the same z_t as (x, ε)
    # the teacher's two DDIM steps from z_t, one at a time
    mid = teacher._ddim(z, t, teacher.t_mid[i], None)
    end = teacher._ddim(mid, teacher.t_mid[i], teacher.t_end[i], None)
    a_end, s_end = teacher._alpha_sigma(teacher.t_end[i], x_0)
    torch.testing.assert_close(a_end * x_t + s_end * e_t, end, rtol=1e-4, atol=1e-5)
    # the last student step ends at the data: there x̃ is the teacher's own end point
    last = i == steps - 1
    torch.testing.assert_close(x_t[last], end[last])


def test_the_students_grid_is_every_other_timestep_of_its_teachers():
    teacher = gaussian_teacher(4, T=1000)
    assert teacher.t.tolist() == [999, 749, 499, 249]
    assert teacher.t_mid.tolist() == [874, 624, 374, 124]
    assert teacher.t_end.tolist() == [749, 499, 249, -1]
    # kept on the student's device, so that no step copies it from the host
    on = Teacher(teacher.eps, teacher.schedule, 4, clip=False, device="meta")
    assert {v.device.type for v in (on.t, on.t_mid, on.t_end)} == {"meta"}


@pytest.mark.parametrize(
    "steps, start, T, message",
    [
        (3, 16, 100, "--steps 3: progressive distillation halves the steps"),
        (4, 12, 100, "--from-steps 12: progressive distillation halves"),
        (4, 4, 100, "--from-steps 4 must exceed --steps 4"),
        (4, 128, 100, "--from-steps 128 exceeds the teacher's T = 100"),
    ],
)
def test_impossible_rounds_are_refused(steps, start, T, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        check_steps(steps, start, T)
    assert check_steps(4, 32, 100) == [16, 8, 4]


@pytest.fixture(scope="module")
def trained_teacher(tmp_path_factory):
    """One trained teacher for the module's tests, which only read it (its run folder)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(PRESETS, "tiny", ModelSpec("unet", dict(TINY_UNET), (8, 8)))
        return teacher_run(tmp_path_factory.mktemp("teacher"))[1]


def teacher_run(tmp_path) -> tuple:
    from ddpm.cli import main

    data = image_folder(tmp_path / "data", 64)
    argv = ["train", "--data", str(data), "--channels", "1", "--image-size", "8", "--preset",
            "tiny", "--T", "40", "--steps", "150", "--batch-size", "16", "--lr", "3e-3",
            "--warmup", "5", "--log-every", "50", "--checkpoint-every", "1000",
            "--sample-every", "1000", "--num-samples", "4", "--quiet", "--no-final-pictures",
            "--threads", "1", "--out", str(tmp_path / "teacher")]  # fmt: skip
    assert main(argv) == 0
    return data, tmp_path / "teacher"


def distance(a, b) -> float:
    return float((a - b).pow(2).mean().sqrt())


def test_distill_gives_a_student_that_samples_in_its_steps_nearer_its_teacher(
    tmp_path, capsys, trained_teacher
):
    teacher = trained_teacher
    out = tmp_path / "student"
    # the teacher's own output (v, the default for 2 steps, is the next test's)
    argv = ["distill", "--checkpoint", str(teacher), "--out", str(out), "--steps", "2",
            "--from-steps", "8", "--round-steps", "60", "--lr", "1e-3", "--quiet",
            "--prediction", "eps"]  # fmt: skip
    code, said, err = run(capsys, argv)
    assert code == 0, err
    assert "distilled to 2 steps" in said
    assert [p.name for p in C.list_checkpoints(out / "round-4")] == ["ckpt-0000060.pt"]
    student, master = load_model(out), load_model(teacher)
    assert student.sampling["distilled"] == 2
    # by default the student takes its 2 steps (DDIM, eta 0, trailing)
    code, said, _ = run(capsys, ["sample", "--checkpoint", str(out), "--n", "2", "--out",
                                 str(tmp_path / "s.png")])  # fmt: skip
    assert code == 0 and "ddim, 2 steps (trailing), eta 0" in said
    # its 2 steps land nearer the teacher's 8 than the teacher's own 2 do
    same = dict(eta=0.0, spacing="trailing", seed=3)
    reference = generate(master, 64, steps=8, **same)
    ours = distance(generate(student, 64, **same), reference)
    theirs = distance(generate(master, 64, steps=2, **same), reference)
    assert ours < 0.8 * theirs, (ours, theirs)
    # more steps than it learned are refused in one line; a used --out without --resume too
    code, _, err = run(capsys, ["sample", "--checkpoint", str(out), "--steps", "4", "--out",
                                str(tmp_path / "t.png")])  # fmt: skip
    assert code != 0 and "distilled to draw in 2 steps" in err
    # inversion too: its own 2 steps by default, more refused before anything is written
    png = sorted((teacher.parent / "data").glob("*.png"))[0]
    z = tmp_path / "z.npy"
    code, said, err = run(capsys, ["invert", "--checkpoint", str(out), "--image", str(png),
                                   "--out", str(z), "--steps", "4"])  # fmt: skip
    assert code != 0 and "distilled to draw in 2 steps" in err and not z.exists()
    code, said, _ = run(capsys, ["invert", "--checkpoint", str(out), "--image", str(png),
                                 "--out", str(z), "--psnr"])  # fmt: skip
    assert code == 0 and "wrote the noise of 1 image to" in said and "(2 DDIM steps)" in said
    # its grid is the one it was trained for: tune-steps says so, not a flag never given
    code, _, err = run(capsys, ["tune-steps", "--checkpoint", str(out), "--nfe", "2"])
    assert code != 0 and "distilled to draw in 2 steps on its own grid" in err
    # a student is distilled on from its own 2 steps: other teacher steps are refused
    on = ["distill", "--checkpoint", str(out), "--out", str(tmp_path / "on"), "--steps", "1"]
    code, _, err = run(capsys, [*on, "--from-steps", "8"])
    assert code != 0 and "distilled to draw in 2 steps; distil it on from --from-steps 2" in err
    code, said, err = run(capsys, [*on, "--round-steps", "2"])
    assert code == 0 and "round 1 of 1: 2 teacher steps -> 1" in said, err
    code, _, err = run(capsys, argv)
    assert code != 0 and "pass --resume" in err
    # an export (weights without the training settings) is no teacher: one line saying so
    export = tmp_path / "teacher.safetensors"
    assert run(capsys, ["export", str(teacher), "--out", str(export)])[0] == 0
    code, _, err = run(capsys, ["distill", "--checkpoint", str(export), "--out",
                                str(tmp_path / "none")])  # fmt: skip
    assert code != 0 and "must be a training checkpoint (.pt), not an export" in err
    # a teacher that is not there is said to be missing (not an export)
    code, _, err = run(capsys, ["distill", "--checkpoint", str(tmp_path / "nope"), "--out",
                                str(tmp_path / "none")])  # fmt: skip
    assert code != 0 and "nope: no such file or folder" in err
    # data of another kind than the teacher's: one line, before any work
    code, _, err = run(capsys, ["distill", "--checkpoint", str(teacher), "--out",
                                str(tmp_path / "none"), "--data", "toy:moons"])  # fmt: skip
    assert code != 0 and "--data toy:moons: points or sequences, but the teacher" in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "none").exists()


def test_a_v_student_takes_one_step_where_an_eps_student_cannot(tmp_path, capsys, trained_teacher):
    """From pure noise an eps student's x̂_0 = (z - σ ε̂)/α multiplies its error by 1/α; a v
    student (the default below 2 steps) learns the output it needs from the teacher's weights."""
    teacher = trained_teacher
    master = load_model(teacher)
    same = dict(eta=0.0, spacing="trailing", seed=3)
    reference = generate(master, 64, steps=8, **same)
    ends = {}
    for prediction in ("eps", "v"):
        out = tmp_path / prediction
        argv = ["distill", "--checkpoint", str(teacher), "--out", str(out), "--steps", "1",
                "--from-steps", "2", "--round-steps", "60", "--lr", "1e-3"]  # fmt: skip
        # v by default for 1 step, and said so; eps asked for
        extra = ["--prediction", "eps", "--quiet"] if prediction == "eps" else []
        code, said, err = run(capsys, [*argv, *extra])
        assert code == 0 and "distilled to 1 step:" in said, err
        assert ("(the student predicts v, the teacher eps)" in said) == (prediction == "v")
        student = load_model(out)
        assert student.sampling["distilled"] == 1
        ends[prediction] = distance(generate(student, 64, **same), reference)
    last = C.load_checkpoint(C.list_checkpoints(tmp_path / "v")[-1])
    assert last["train_config"]["prediction"] == "v"
    assert ends["v"] < 0.7 * ends["eps"], ends


def test_a_cut_short_distillation_resumes_its_rounds(tmp_path, capsys, trained_teacher):
    teacher = trained_teacher
    out = tmp_path / "student"
    argv = ["distill", "--checkpoint", str(teacher), "--out", str(out), "--steps", "2",
            "--from-steps", "8", "--round-steps", "6", "--quiet"]  # fmt: skip
    assert run(capsys, argv)[0] == 0
    final = C.list_checkpoints(out)[-1]
    final.unlink()  # as if the last round had been stopped before its end
    code, said, err = run(capsys, [*argv, "--resume"])
    assert code == 0, err
    assert C.list_checkpoints(out)[-1].name == final.name
    round_4 = C.load_checkpoint(out / "round-4" / "ckpt-0000006.pt")
    assert round_4["train_config"]["distill_steps"] == 4
    assert C.load_checkpoint(final)["train_config"]["distill_from"].endswith("ckpt-0000006.pt")


def test_a_round_stopped_short_is_not_trained_again_once_the_next_began(
    tmp_path, capsys, trained_teacher
):
    teacher = trained_teacher
    # a time-limited round ends before its --round-steps; resuming with more steps a round
    # must continue the round in progress (the last), not reopen the one it was taught by
    out = tmp_path / "student"
    argv = ["distill", "--checkpoint", str(teacher), "--out", str(out), "--steps", "2",
            "--from-steps", "8", "--quiet"]  # fmt: skip
    assert run(capsys, [*argv, "--round-steps", "6"])[0] == 0
    code, _, err = run(capsys, [*argv, "--round-steps", "12", "--resume"])
    assert code == 0, err
    assert [p.name for p in C.list_checkpoints(out / "round-4")] == ["ckpt-0000006.pt"]
    final = C.list_checkpoints(out)[-1]
    assert final.name == "ckpt-0000012.pt"
    assert C.load_checkpoint(final)["train_config"]["distill_from"].endswith("ckpt-0000006.pt")


@pytest.mark.slow  # 12 s: CI runs it with the slow tests
@pytest.mark.subprocess
def test_distillation_under_torchrun_reproduces_one_process_and_says_it_once(tmp_path):
    from ddpm.cli import main
    from test_distributed import assert_same_weights, flags, torchrun

    data = image_folder(tmp_path / "data")
    assert main(flags(data, tmp_path / "teacher", 20)) == 0
    argv = ["distill", "--checkpoint", str(tmp_path / "teacher"), "--steps", "2",
            "--from-steps", "8", "--round-steps", "6", "--quiet"]  # fmt: skip
    proc = torchrun([*argv, "--out", str(tmp_path / "two")])
    assert main([*argv, "--out", str(tmp_path / "one")]) == 0  # meanwhile, one process here
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    assert out.count("distilled to 2 steps") == 1  # rank 0 alone speaks
    for name in ("round-4/ckpt-0000006.pt", "ckpt-0000006.pt"):
        assert_same_weights(tmp_path / "one" / name, tmp_path / "two" / name)


def test_a_guided_teacher_is_learnt_by_the_first_round_and_refused_when_unconditional(
    tmp_path, capsys, trained_teacher
):
    from ddpm.cli import main
    from ddpm.train.distill import load_teacher

    data = tmp_path / "data"
    for k, name in enumerate(["top", "bottom"]):
        (data / name).mkdir(parents=True)
        for i in range(8):
            img = np.zeros((8, 8), np.uint8)
            img[4 * k : 4 * k + 4, i % 8 :] = 255
            Image.fromarray(img).save(data / name / f"{i}.png")
    teacher = tmp_path / "teacher"
    argv = ["train", "--data", str(data), "--channels", "1", "--image-size", "8", "--preset",
            "tiny", "--T", "40", "--steps", "30", "--batch-size", "8", "--class-cond",
            "--checkpoint-every", "1000", "--sample-every", "1000", "--num-samples", "4",
            "--quiet", "--no-final-pictures", "--threads", "1", "--out", str(teacher)]  # fmt: skip
    assert main(argv) == 0
    out = tmp_path / "student"
    argv = ["distill", "--checkpoint", str(teacher), "--out", str(out), "--steps", "2",
            "--from-steps", "8", "--round-steps", "4", "--guidance", "2", "--quiet"]  # fmt: skip
    code, _, err = run(capsys, argv)
    assert code == 0, err
    first = C.load_checkpoint(out / "round-4" / "ckpt-0000004.pt")["train_config"]
    assert first["distill_guidance"] == 2.0  # the first round's teacher is guided...
    assert C.load_checkpoint(out / "ckpt-0000004.pt")["train_config"]["distill_guidance"] == 0
    # ...as sampling guides it: (1 + w) eps(x, t, y) - w eps(x, t, null)
    from ddpm.train.config import TrainConfig

    cfg = TrainConfig(**first)
    guided = load_teacher(cfg, torch.device("cpu"), None)
    master = load_model(teacher)
    z, t, y = torch.randn(4, 1, 8, 8), torch.tensor([30, 20, 10, 5]), torch.tensor([0, 1, 0, 1])
    want = master.eps_given(y, 2.0)(z, t)
    torch.testing.assert_close(guided.eps(z, t, y), want)
    assert not torch.allclose(master.eps_given(y, 0.0)(z, t), want)
    # an unconditional teacher has nothing to guide: one line, before --out is made
    plain = trained_teacher
    code, _, err = run(capsys, [*argv[:2], str(plain), "--out",
                                str(tmp_path / "nothing"), *argv[5:]])  # fmt: skip
    assert code != 0 and "is not class-conditional" in err
    assert not (tmp_path / "nothing").exists()


def test_a_round_takes_its_teachers_settings_but_not_its_step_graph(tmp_path):
    """A teacher trained with --step-graph (as --recipe cifar10-8min is) passes its settings
    on, but its rounds run without the one-graph step, which has not captured a teacher."""
    from ddpm.cli.distill import round_config

    teacher = dataclasses.asdict(
        tiny_config(tmp_path, step_graph=True, fused_norm=True, bf16=False)
    )
    flags = dict(steps=2, from_steps=8, round_steps=10, warmup=0, max_minutes=None, device="cpu")
    args = argparse.Namespace(
        **flags, guidance=0.0, lr=None, batch_size=None, data=None, prediction=None
    )
    cfg = round_config(teacher, args, 4, tmp_path / "teacher.pt", tmp_path / "round-4")
    assert (cfg.step_graph, cfg.bf16, cfg.distill_steps, cfg.steps) == (False, False, 4, 10)
    # the teacher's prediction, but v where an eps student would end in 1 or 2 steps
    assert teacher["prediction"] == "eps" and cfg.prediction == "v"
    for steps, given, want in [(4, None, "eps"), (4, "v", "v"), (1, "x0", "x0")]:
        args.steps, args.prediction = steps, given
        assert round_config(teacher, args, 8, tmp_path / "t.pt", tmp_path / "r").prediction == want
    # a new output takes its plain loss (for v: SNR + 1 on x_0), the teacher's output its weights
    weighted = dict(teacher, loss_weight="min-snr", min_snr_gamma=5.0)
    for steps, want in [(1, ("v", "none", None)), (4, ("eps", "min-snr", 5.0))]:
        args.steps, args.prediction = steps, None
        cfg = round_config(weighted, args, 8, tmp_path / "t.pt", tmp_path / "r")
        assert (cfg.prediction, cfg.loss_weight, cfg.min_snr_gamma) == want
    args.steps = 2
    # without --round-steps: 300 a round, or with --max-minutes as many as its share allows
    args.round_steps = None
    assert round_config(teacher, args, 4, tmp_path / "t.pt", tmp_path / "r").steps == 300
    args.max_minutes = 3.0
    cfg = round_config(teacher, args, 4, tmp_path / "t.pt", tmp_path / "r")
    assert cfg.steps >= 1_000_000 and cfg.max_minutes == 1.5  # two rounds: 4 and 2 steps
    assert not cfg.fused_norm  # its kernels gain only inside the one-graph step
