"""benchmarks/profile_step.py on the CPU with a tiny setting: every category is in the table,
and the category times add up to the total time of the ops."""

import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1]
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

import profile_step  # noqa: E402

pytestmark = pytest.mark.usefixtures("tiny_preset")


def test_a_cpu_step_is_split_into_categories_that_add_up(capsys, tmp_path):
    argv = "--device cpu --preset tiny --batch 2 --variant fp32 --steps 1 --warmup 0"
    (rec,) = profile_step.main([*argv.split(), "--windows", "1", "--json", str(tmp_path / "p")])
    out = capsys.readouterr().out
    rows = {c["category"]: c for c in rec["categories"]}
    for c in profile_step.ALWAYS:
        assert c in rows
        assert f"| {c} |" in out
    assert sum(c["ms"] for c in rec["categories"]) == pytest.approx(rec["kernel_ms"], rel=1e-9)
    printed = [line.split(" | ") for line in out.splitlines() if line.startswith("| ")]
    by_name = {cells[0][2:]: cells for cells in printed}
    total = float(by_name["all ops (CPU self time)"][1])
    parts = sum(float(by_name[c][1]) for c in rows)
    assert parts == pytest.approx(total, abs=0.005 * len(rows) + 1e-9)
    # convolutions, normalisation and the optimizer did run; the convolutions' FLOPs counted
    conv = [c for c in rows if c.startswith("conv")]
    assert sum(rows[c]["ms"] for c in conv) > 0 and rows[profile_step.OPT]["ms"] > 0
    assert rows[profile_step.NORM]["ms"] > 0
    assert sum(rows[c].get("gflop", 0.0) for c in conv) > 0
    assert (tmp_path / "p").exists()


def test_kernel_names_place_gpu_kernels():
    k = profile_step.classify
    assert k("sm90_xmma_fprop_implicit_gemm_bf16", ["aten::convolution"]) == profile_step.CONV_FWD
    assert k("sm90_xmma_dgrad_implicit_gemm", []) == profile_step.CONV_IN
    assert k("sm90_xmma_wgrad_implicit_gemm", []) == profile_step.CONV_W
    assert k("triton_per_fused_native_group_norm_silu_3", []) == profile_step.NORM
    assert k("triton_poi_fused_mul_sigmoid_sub_7", []) == profile_step.ACT
    assert k("triton_poi_fused__to_copy_add_2", []) == profile_step.ELEM
    assert k("pytorch_flash::flash_fwd_kernel", []) == profile_step.ATTN
    assert k("void multi_tensor_apply_kernel<...>", ["aten::_foreach_add_"]) == profile_step.OPT
    assert k("void nchwToNhwcKernel", ["aten::convolution_backward"]) == profile_step.ELEM
    assert k("nvjet_tst_128x64", ["aten::addmm", "aten::linear"]) == profile_step.MATMUL
    assert k("void at::native::elementwise_kernel", ["aten::silu"]) == profile_step.ACT
    gemm = ["sm90_xmma_dgrad_implicit", "nvjet_tst_64x8"]
    cats = [k(n, ["aten::convolution_backward"]) for n in gemm]
    assert profile_step.split_conv_backward(cats, gemm) == [
        profile_step.CONV_IN,
        profile_step.CONV_W,
    ]
