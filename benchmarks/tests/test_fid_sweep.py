"""benchmarks/fid_sweep.py's case syntax and benchmarks/quality_curve.py's grouping: a case's
sampling options reach ddpm eval's settings, and the curves keep them apart."""

import pytest

from conftest import load_benchmark, tiny_config


def test_a_case_parses_its_fixed_fields_and_options():
    Case = load_benchmark("fid_sweep").Case
    plain = Case.parse("run/snapshot-8min.pt:ema:ddim:50")
    assert (plain.checkpoint, plain.weights, plain.sampler, plain.steps) == (
        "run/snapshot-8min.pt",
        "ema",
        "ddim",
        50,
    )
    assert plain.spacing is None and plain.options == {}
    assert Case.parse("c.pt:0.05:heun:25:karras").spacing == "karras"

    ddpm = Case.parse("c.pt:ema:ddpm:100::variance=large")
    assert ddpm.spacing is None and ddpm.options == {"variance": "large"}
    guided = Case.parse("c.pt:ema:ddim:50:trailing:guidance=0.5:classes=data")
    assert guided.spacing == "trailing"
    assert guided.options == {"guidance": 0.5, "classes": "data"}
    assert "guidance=0.5" in guided.label()


def test_the_options_are_sampler_settings_of_ddpm_eval():
    from ddpm.sampling.spec import SamplingSpec

    fid_sweep = load_benchmark("fid_sweep")
    fields = SamplingSpec.__dataclass_fields__
    assert all(o in fields for o in fid_sweep.OPTIONS if o not in fid_sweep.GUIDE_OPTIONS)
    guided = fid_sweep.Case.parse("c.pt:ema:ddim:25::guidance=1:guide=b.pt:interval=0.3,5")
    assert guided.options["interval"] == (0.3, 5.0)
    assert guided.settings_options() == {"guidance": 1.0}
    case = fid_sweep.Case.parse("c.pt:ema:ddpm:50::variance=small:eta=1")
    settings = SamplingSpec(case.sampler, case.steps, **case.options)
    assert (settings.variance, settings.eta) == ("small", 1.0)


@pytest.mark.parametrize(
    "text",
    [
        "c.pt:ema:ddim",
        "c.pt:ema:ddim:50:leading:extra",
        "c.pt:ema:ddim:50::colour=red",
        "c.pt:ema:ddim:50::interval=3,1",
    ],
)
def test_a_malformed_case_is_one_clear_error(text):
    with pytest.raises(SystemExit, match="--case"):
        load_benchmark("fid_sweep").Case.parse(text)


def test_curves_keep_the_ddpm_variances_apart():
    quality_curve = load_benchmark("quality_curve")
    rows = [
        {"checkpoint": "r/snapshot-8min.pt", "weights": "ema", "sampler": s, "steps": k,
         "spacing": None, "options": o, "nfe": k, "fid": f}
        for s, k, o, f in [
            ("ddim", 50, {}, 15.0),
            ("ddpm", 50, {"variance": "small"}, 20.0),
            ("ddpm", 50, {"variance": "large"}, 150.0),
        ]
    ]  # fmt: skip
    assert quality_curve.curve(rows, "ddpm", 50) == []  # options are not the plain sampler
    assert quality_curve.curve(rows, "ddim", 50) == [(8.0, 15.0)]
    groups = quality_curve.by_nfe(rows, 8.0)
    assert groups["ddpm (variance small)"] == [(50, 20.0)]
    assert groups["ddpm (variance large)"] == [(50, 150.0)]


def test_an_eval_point_costs_what_its_sampler_and_guide_do():
    eval_point = load_benchmark("quality_curve").eval_point
    fid = {"fid": 10.1, "sampler": "dpm-solver", "steps": 25, "guidance": 1.5}
    assert eval_point({"fid": dict(fid)}, "e.json") == (50, 10.1)  # two networks a step
    assert eval_point({"fid": {**fid, "guidance": 0.0}}, "e.json") == (25, 10.1)
    assert eval_point({"fid": {**fid, "sampler": "heun"}}, "e.json") == (98, 10.1)
    assert eval_point({"fid": {**fid, "nfe": 37}}, "e.json") == (37, 10.1)  # as recorded
    with pytest.raises(SystemExit, match='e.json: no "nfe" recorded'):
        eval_point({"fid": {**fid, "guidance_interval": [0.3, 5.0]}}, "e.json")


def test_a_guided_curve_is_the_median_over_runs_at_each_cost():
    guided = load_benchmark("quality_curve").guided

    def row(seed, steps, fid, w=1.5, sampler="dpm-solver-3m", **more):
        options = {"guidance": w, "guide": f"seed{seed}/snapshot-4min.pt", **more}
        return {"sampler": sampler, "nfe": 2 * steps, "fid": fid, "options": options}

    rows = [row(4, 25, 9.1), row(5, 25, 9.6), row(6, 25, 9.4), row(4, 10, 16.8)]
    rows += [row(7, 25, 8.5, w=1.25), row(7, 25, 9.5, sampler="dpm-solver")]
    rows += [row(7, 25, 1.0, interval=[0.28, 5.42]), row(7, 25, 2.0, guide_ema="0.05")]
    rows += [{**row(7, 25, 3.0), "options": {"guidance": 1.5, "guide": "s7/snapshot-5min.pt"}}]
    rows += [{"sampler": "dpm-solver-3m", "nfe": 50, "fid": 12.0, "options": {}}]  # unguided
    assert guided(rows, "dpm-solver-3m", 1.5, "snapshot-4min.pt") == [(20, 16.8), (50, 9.4)]
    assert guided(rows, "dpm-solver-3m", 1.25, "snapshot-4min.pt") == [(50, 8.5)]
    assert guided(rows, "dpm-solver-3m", 1.5, "snapshot-5min.pt") == [(50, 3.0)]


def test_a_guided_spec_names_its_sampler_weight_guide_and_sweeps():
    guided_spec = load_benchmark("quality_curve").guided_spec
    spec = "3M=dpm-solver-3m:1.5:snapshot-4min.pt=a.json,b.json"
    assert guided_spec(spec) == (
        "3M",
        "dpm-solver-3m",
        1.5,
        "snapshot-4min.pt",
        ["a.json", "b.json"],
    )
    for bad in ("3M=dpm-solver-3m:1.5=a.json", "3M=dpm-solver-3m:x:g.pt=a.json", "3M=s:1:g.pt"):
        with pytest.raises(SystemExit, match="expected LABEL=SAMPLER:W:GUIDE=SWEEP.json"):
            guided_spec(bad)


def test_a_grid_must_name_one_of_the_cases():
    parse_grids = load_benchmark("fid_sweep").parse_grids

    def error(message):
        raise ValueError(message)

    assert parse_grids(["0:a.png", "2:dir/b.png"], 3, error) == {0: "a.png", 2: "dir/b.png"}
    for bad in ("3:c.png", "x:c.png", "1", "-1:c.png"):
        with pytest.raises(ValueError, match="--grid.*from 0 to 2"):
            parse_grids([bad], 3, error)


def test_a_case_keeps_its_own_checkpoints_settings_in_a_shared_network(tmp_path, tiny_preset):
    """Cases of one architecture share a compiled network, but each keeps its checkpoint's
    step and sampling defaults: a distilled student's 4 steps do not bind its teacher's
    8-step round after it (they did, refusing the case), nor the teacher's none the student."""
    import torch

    from ddpm.train import train

    weights_on_device = load_benchmark("fid_sweep").weights_on_device
    teacher = train(tiny_config(tmp_path, steps=10, checkpoint_every=10), progress=False)
    ckpt = torch.load(teacher.last_checkpoint, weights_only=True)
    paths = {}
    for k in (4, 8):
        ckpt["train_config"] = {**ckpt["train_config"], "distill_steps": k}
        ckpt["step"] = 100 + k
        paths[k] = tmp_path / f"student-{k}.pt"
        torch.save(ckpt, paths[k])
    cache: dict = {}
    order = [(paths[4], 4, 104), (paths[8], 8, 108), (teacher.last_checkpoint, None, 10)]
    for path, distilled, step in order:
        loaded = weights_on_device(str(path), "ema", cache, torch.device("cpu"), False)
        assert (loaded.sampling.get("distilled"), loaded.step) == (distilled, step)
    assert len(cache) == 1  # one network for all three
