"""The lowest-FID case of `fid_sweep.py` JSON files within a budget of network evaluations,
printed as the `ddpm eval` / `ddpm sample` flags that draw the same samples, so that a round
can check a sweep's winner with `ddpm eval` and draw its grid in the same lease:

    python benchmarks/best_case.py --max-nfe 50 sweep-a.json sweep-b.json
    --checkpoint run/snapshot-8min.pt --sampler dpm-solver --steps 25 --guidance 1 ...
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

FLAGS = {  # fid_sweep option -> ddpm flag
    "eta": "--eta",
    "variance": "--variance",
    "guidance": "--guidance",
    "guide": "--guide-model",
    "guide_ema": "--guide-ema",
    "interval": "--guidance-interval",
}


def flags(row: dict) -> list[str]:
    """A sweep row's case as ddpm flags (sampling ones only, common to eval and sample)."""
    out = ["--checkpoint", row["checkpoint"], "--sampler", row["sampler"]]
    out += ["--steps", str(row["steps"])]
    if row["weights"] == "raw":
        out.append("--raw-weights")
    elif row["weights"] != "ema":
        out += ["--ema", row["weights"]]
    if row.get("spacing"):
        out += ["--spacing", row["spacing"]]
    for key, value in row.get("options", {}).items():
        if key == "classes":
            if value != "uniform":  # eval's --classes; ddpm sample draws uniformly
                raise SystemExit(f"{row['checkpoint']}: classes={value} has no ddpm sample flag")
            continue
        if key == "interval":
            value = ",".join(f"{v:g}" for v in value)
        out += [FLAGS[key], f"{value:g}" if isinstance(value, float) else str(value)]
    return out


def best(rows: list[dict], max_nfe: int) -> dict:
    within = [r for r in rows if r["nfe"] <= max_nfe]
    if not within:
        raise SystemExit(f"no case within {max_nfe} network evaluations")
    return min(within, key=lambda r: r["fid"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("sweeps", nargs="+", type=Path, help="fid_sweep.py --json files")
    p.add_argument("--max-nfe", type=int, default=50)
    args = p.parse_args()
    rows = [r for path in args.sweeps if path.exists() for r in json.loads(path.read_text())]
    row = best(rows, args.max_nfe)
    print(f"best: FID {row['fid']:.2f} at {row['nfe']} NFE", file=sys.stderr)
    print(" ".join(flags(row)))


if __name__ == "__main__":
    main()
