"""benchmarks/few_step_curve.py: each side's best FID per NFE out of few_step_peers.py's rows,
the minutes at which each distillation round ended (an equal share of --max-minutes), and a
picture with both panels from the three JSON files."""

import json

import pytest
from PIL import Image

from conftest import load_benchmark

curve = load_benchmark("few_step_curve")

PEERS = {
    "rows": [
        {"side": "ours", "sampler": "unipc", "spacing": "tuned", "fid": {"5": 22.0, "10": 13.0}},
        {"side": "ours", "sampler": "ipndm", "spacing": "edm", "fid": {"5": 25.0, "10": 12.5}},
        {"side": "diffusers", "sampler": "2M", "spacing": "karras", "fid": {"5": 64.0}},
        {"side": "diffusers", "sampler": "2M", "spacing": "trailing", "fid": {"5": 37.0}},
    ]
}


def test_each_side_keeps_its_best_row_at_each_nfe():
    assert curve.envelope(PEERS, "ours") == [(5, 22.0, "unipc tuned"), (10, 12.5, "ipndm edm")]
    assert curve.envelope(PEERS, "diffusers") == [(5, 37.0, "2M trailing")]


def test_a_round_ends_at_its_share_of_the_minutes():
    # 32 teacher steps to 1: five rounds (16, 8, 4, 2, 1) of 8 / 5 minutes each
    assert [curve.student_minutes(k, 32, 1, 8.0) for k in (16, 4, 1)] == [1.6, 4.8, 8.0]
    with pytest.raises(SystemExit, match="a student of 3 steps is no round"):
        curve.student_minutes(3, 32, 1, 8.0)


def test_the_picture_and_tables_from_the_three_files(tmp_path, capsys):
    (tmp_path / "peers.json").write_text(json.dumps(PEERS))
    rows = [{"steps": k, "nfe": k, "fid": f} for k, f in ((4, 14.0), (2, 17.0), (1, 25.0))]
    (tmp_path / "students.json").write_text(json.dumps(rows))
    teacher = [{"sampler": "dpm-solver", "steps": 50, "nfe": 50, "fid": 11.7}]
    (tmp_path / "teacher.json").write_text(json.dumps(teacher))
    out = tmp_path / "few.png"
    curve.main(["--peers", str(tmp_path / "peers.json"), "--students",
                str(tmp_path / "students.json"), "--teacher", str(tmp_path / "teacher.json"),
                "--distill-minutes", "4", "--from-steps", "8", "--steps", "1",
                "--out", str(out)])  # fmt: skip
    said = capsys.readouterr().out
    assert "| ours: best solver and grid | 5 | 22.00 | unipc tuned |" in said
    assert "| teacher | 50 | 11.70 | dpm-solver |" in said
    # rounds 4, 2, 1 of 8 -> 1 in 4 minutes: each ends 4/3 minutes after the last
    assert "| 4 | 1.3 | 14.00 |" in said and "| 1 | 4.0 | 25.00 |" in said
    img = Image.open(out)
    assert img.width > 1.5 * img.height  # two panels side by side
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(SystemExit, match="--students .*bad.json: not a readable JSON file"):
        curve.main(["--peers", str(tmp_path / "peers.json"), "--students",
                    str(tmp_path / "bad.json")])  # fmt: skip


def test_an_out_it_cannot_write_is_said_before_any_table(tmp_path, capsys):
    from ddpm.errors import ConfigError

    (tmp_path / "peers.json").write_text(json.dumps(PEERS))
    for out, why in ((tmp_path / "few.txt", "must end in .png"), (tmp_path, "is a folder")):
        with pytest.raises(ConfigError, match=why):
            curve.main(["--peers", str(tmp_path / "peers.json"), "--out", str(out)])
        assert capsys.readouterr().out == ""
