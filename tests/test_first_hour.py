"""What a new user meets in the first hour: a quick FID reference on a CPU (`fid-stats --n`)."""

import numpy as np
import pytest

from ddpm.cli import main
from ddpm.eval import evaluate
from ddpm.eval.evaluate import images_stats, load_fid_images, load_stats
from ddpm.eval.nll import select_images
from test_evaluate import FakeInception, fake_inception, image_folder  # noqa: F401


@pytest.mark.usefixtures("fake_inception")
def test_fid_stats_of_n_images_are_the_stats_of_that_seeded_subset(tmp_path):
    folder = image_folder(tmp_path / "imgs", 8, 0)
    out = tmp_path / "sub.npz"
    assert main(["fid-stats", str(folder), "-o", str(out), "--n", "5", "--seed", "2"]) == 0
    sub = load_stats(out)
    assert sub.n == 5
    images = select_images(load_fid_images(str(folder)), 5, 2)
    want = images_stats(FakeInception(), images)
    np.testing.assert_allclose(sub.mu, want.mu, rtol=1e-6)
    np.testing.assert_allclose(sub.sigma, want.sigma, rtol=1e-5, atol=1e-7)
    whole = tmp_path / "all.npz"
    assert main(["fid-stats", str(folder), "-o", str(whole), "--n", "100"]) == 0  # n > the set
    assert load_stats(whole).n == 8
    assert evaluate.FEATURE_DIM == 16  # the fake network's features were used


@pytest.mark.parametrize("n", ["0", "-3", "x"])
def test_fid_stats_n_must_be_a_positive_count(tmp_path, capsys, n):
    with pytest.raises(SystemExit):
        main(["fid-stats", str(tmp_path), "-o", str(tmp_path / "s.npz"), "--n", n])
    assert "--n" in capsys.readouterr().err
