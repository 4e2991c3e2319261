"""Output paths are checked before any work, everywhere, with one line naming the path given:
permission bits do not tell root, a pseudo file system or a read-only mount, so the check
opens a nameless file where the output would go."""

import sys
from pathlib import Path

import pytest

from conftest import run

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or not Path("/proc/self").exists(),
    reason="uses Linux's /proc and /sys as places no one can write",
)


@pytest.mark.parametrize(
    "argv, path",
    [
        (["export", "missing.pt", "--out", "/proc/x.safetensors"], "/proc/x.safetensors"),
        (["export", "missing.pt", "--format", "diffusers", "--out", "/sys/nope"], "/sys/nope"),
        (["train", "--out", "/sys/nope", "--steps", "1"], "/sys/nope"),
        (["sample", "--checkpoint", "missing.pt", "--out", "/proc/x.png"], "/proc/x.png"),
        (["sample", "--checkpoint", "missing.pt", "--folder", "/sys/nope"], "/sys/nope"),
    ],
)
def test_an_unwritable_output_is_one_line_before_any_work(capsys, argv, path):
    # the checkpoints do not exist: the output is refused before anything is read
    code, _, err = run(capsys, argv)  # refused by a flag's parser (exit 2) or the command
    assert code != 0
    line = err.strip().splitlines()[0]
    assert path in line and "cannot write here" in line
    assert "missing.pt" not in line


def test_a_writable_output_passes_the_check(tmp_path):
    from ddpm.io.paths import check_output_file, check_output_folder

    assert check_output_file(tmp_path / "new" / "x.png", "image") == tmp_path / "new" / "x.png"
    assert check_output_folder(tmp_path / "out") == tmp_path / "out"
    assert list(tmp_path.iterdir()) == []  # nothing left behind
