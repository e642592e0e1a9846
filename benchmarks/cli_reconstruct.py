"""`recon reconstruct` end to end, with recon's allocator settings against glibc's defaults.

    python benchmarks/cli_reconstruct.py [--repeats 3] [--json out.json]

Each run is a fresh ``recon reconstruct`` process with the bundled default model for its operator,
on two inputs:

- ``mri-s0``: the held-out dipy S0_10 volume, fastMRI-layout k-space, 10 slices of 128²;
- ``mri-t1x16``: the held-out T1 slice (256²) as a 16-slice image stack, measured by the MRI 4×
  operator.

The peer is the same command with ``GLIBC_TUNABLES=`` in its environment. That empty setting leaves
glibc's adaptive thresholds at their defaults and makes :func:`recon.allocator.retain_freed_memory`
stand aside, as it does for any user setting. The two settings alternate run by run. The table
gives median times: the wall time, and the reconstruction's own ``seconds`` from the command's
JSON, which leaves out start-up, reading, metrics and writing. It also gives the median number
of minor page faults and the largest resident memory of one process (``wait4``'s rusage).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from recon.datasets.readers import read_scan
from recon.datasets.training import packaged_mr_root

SETTINGS = {"recon": {}, "glibc default": {"GLIBC_TUNABLES": ""}}


def inputs(folder: Path) -> dict[str, Path]:
    test = packaged_mr_root() / "test"
    t1 = read_scan(test / "dipy-t1.h5").images  # (1, 256, 256) magnitude
    stack = folder / "t1x16.npy"
    np.save(stack, np.repeat(np.asarray(t1, dtype=np.float32), 16, axis=0))
    return {"mri-s0": test / "dipy-s0.h5", "mri-t1x16": stack}


def run_once(source: Path, out: Path, env: dict[str, str]) -> dict[str, float]:
    """One ``recon reconstruct`` process: wall s, reconstruction s, minor faults, max RSS (MB)."""
    command = [sys.executable, "-m", "recon", "reconstruct", str(source), "--operator", "mri"]
    command += ["--out", str(out)]
    start = time.perf_counter()
    process = subprocess.Popen(command, env={**os.environ, **env}, stdout=subprocess.PIPE, text=True)
    stdout = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)  # reaps the child: its own rusage, not the sum
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"recon reconstruct failed on {source}")
    report = json.loads(stdout.strip().splitlines()[-1])
    return {
        "wall_s": wall,
        "seconds": float(report["seconds"]),
        "faults": float(usage.ru_minflt),
        "max_rss_mb": usage.ru_maxrss / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json")
    args = parser.parse_args()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, source in inputs(Path(tmp)).items():
            runs: dict[str, list[dict[str, float]]] = {label: [] for label in SETTINGS}
            for _ in range(args.repeats):
                for label, env in SETTINGS.items():
                    runs[label].append(run_once(source, Path(tmp) / "out.h5", env))
            results[name] = {
                label: {
                    key: (max if key == "max_rss_mb" else statistics.median)(r[key] for r in rows)
                    for key in rows[0]
                }
                for label, rows in runs.items()
            }
            print(f"\n{name} ({args.repeats} runs each, medians)")
            print(f"  {'allocator':14s} {'wall s':>8s} {'recon s':>8s} {'faults':>9s} {'max RSS MB':>11s}")
            for label, row in results[name].items():
                print(
                    f"  {label:14s} {row['wall_s']:8.2f} {row['seconds']:8.3f} "
                    f"{row['faults']:9.0f} {row['max_rss_mb']:11.0f}"
                )
            mine, peer = results[name]["recon"], results[name]["glibc default"]
            print(f"  reconstruction time, recon / default: {mine['seconds'] / peer['seconds']:.2f}")
    if args.json:
        document = {
            "benchmark": "cli_reconstruct",
            "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
            "threads": os.environ.get("OMP_NUM_THREADS"),
            "results": results,
        }
        Path(args.json).write_text(json.dumps(document, indent=1) + "\n")


if __name__ == "__main__":
    main()
