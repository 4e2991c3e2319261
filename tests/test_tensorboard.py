"""`ddpm train --tensorboard`: event files with the log's scalars, FID, the sample grids and the
run's settings; a clear one-line skip when the tensorboard package is missing."""

import sys

import pytest

from ddpm.cli import main
from test_evaluate import fake_inception, image_folder  # noqa: F401  (a fixture)

pytestmark = pytest.mark.usefixtures("tiny_preset")


def run_argv(tmp_path, data, *extra):
    argv = ["train", "--data", str(data), "--preset", "tiny", "--image-size", "8", "--T", "20"]
    argv += ["--steps", "4", "--batch-size", "4", "--out", str(tmp_path / "run"), "--quiet"]
    argv += ["--log-every", "2", "--sample-every", "2", "--checkpoint-every", "2"]
    return [*argv, "--num-samples", "4", "--tensorboard", *extra]


@pytest.mark.usefixtures("fake_inception")
def test_tensorboard_event_files_hold_the_expected_tags(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    data = image_folder(tmp_path / "data", 8, 0)
    stats = tmp_path / "ref.npz"
    assert main(["fid-stats", str(data), "-o", str(stats), "--quiet"]) == 0
    argv = run_argv(tmp_path, data, "--eval-every", "4", "--eval-n", "4", "--fid-stats", str(stats))
    assert main(argv) == 0
    folder = tmp_path / "run" / "tensorboard"
    assert list(folder.glob("events.out.tfevents.*"))
    events = EventAccumulator(str(folder), size_guidance={"tensors": 0}).Reload()
    tags = events.Tags()
    scalars = {"train/loss", "train/lr", "train/img_per_s", "train/skipped_steps", "eval/fid"}
    assert scalars <= set(tags["scalars"])
    assert [e.step for e in events.Scalars("train/loss")] == [2, 4]
    assert [e.step for e in events.Scalars("eval/fid")] == [4]
    assert events.Scalars("train/skipped_steps")[-1].value == 0
    assert "samples" in tags["images"]
    grids = events.Images("samples")
    assert [g.step for g in grids] == [2, 4] and grids[0].width > 8
    text = events.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "| batch_size | `4` |" in text and "| tensorboard | `True` |" in text


def test_without_tensorboard_the_run_goes_on_and_says_so_once(tmp_path, capsys, monkeypatch):
    for name in [m for m in sys.modules if m == "tensorboard" or m.startswith("tensorboard.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.delitem(sys.modules, "torch.utils.tensorboard", raising=False)
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # import tensorboard -> ImportError
    data = image_folder(tmp_path / "data", 8, 0)
    assert main(run_argv(tmp_path, data)) == 0
    err = capsys.readouterr().err
    assert err.count("tensorboard package is not installed") == 1, err
    assert "Traceback" not in err
    assert (tmp_path / "run" / "log.csv").is_file()
    assert not (tmp_path / "run" / "tensorboard").exists()
