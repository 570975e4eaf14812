"""Run every benchmark of this folder in its own process and print one summary table.

Each benchmark ends with ``key: value`` lines; this script reads them and reports per workload the
time per iteration (or per chip MVM), the peak memory and the ratio to its reference: a plain float32
matmul of the same shape for the chip, the authors' 12 s per outer iteration for few-shot training,
the FLOP throughput of a plain 2048x2048 matmul for robot training. Peak memory is the benchmark's own
figure, else the process's peak RSS as the kernel reports it. A benchmark that fails (e.g. no Omniglot
copy) is listed with its last error line, and the others still run.

Usage: ``python benchmarks/run_all.py [--quick]``; ``--quick`` passes small iteration counts (one
few-shot variant, one robot repeat): minutes instead of tens of minutes, noisier numbers.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
KEY_VALUE = re.compile(r"^([a-z][a-z0-9_]*): (\S+)$")


@dataclasses.dataclass(frozen=True)
class Benchmark:
    script: str
    workload: str
    configuration: str
    quick_args: tuple[str, ...]
    time_key: str
    time_unit: str
    ratio_key: str
    ratio_meaning: str


BENCHMARKS = (
    Benchmark(
        "chip_mvm.py",
        "chip MVM, per-read noise",
        "1024x504x56 and 1024x256x256, worst shape",
        ("--repeats", "2", "--inner", "5"),
        "chip_ms_per_mvm",
        "ms/MVM",
        "ratio_chip_to_matmul",
        "x plain matmul time",
    ),
    Benchmark(
        "fewshot_train.py",
        "few-shot MAML training",
        "meta-batch 32, variants fp32/4bit/pcm, slowest",
        ("--iterations", "2", "--variants", "pcm"),
        "seconds_per_iteration",
        "s/iteration",
        "speedup_vs_authors",
        "x faster than the authors' 12 s",
    ),
    Benchmark(
        "robot_train.py",
        "robot L2L training",
        "full networks, T = 249, batch 16",
        ("--batches", "16", "--repeats", "1"),
        "seconds_per_iteration_batch16",
        "s/iteration",
        "fraction_of_matmul_peak",
        "of a plain matmul's FLOP/s",
    ),
)


def run(benchmark: Benchmark, quick: bool) -> dict:
    """Run one benchmark; its ``key: value`` lines, wall time, peak RSS, and the error if it failed."""
    command = [sys.executable, str(HERE / benchmark.script), *(benchmark.quick_args if quick else ())]
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        process = subprocess.Popen(command, stdout=out, stderr=err, text=True)
        # wait4, not wait: the kernel's peak RSS of this child and of the children it waited for
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - start
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    values = dict(m.groups() for line in stdout.splitlines() if (m := KEY_VALUE.match(line.strip())))
    error = None
    if process.returncode != 0:
        lines = [line for line in stderr.strip().splitlines() if line.strip()]
        error = lines[-1] if lines else f"exit code {process.returncode}"
    return {"values": values, "wall_s": wall, "peak_rss_mb": usage.ru_maxrss / 1024, "error": error, "stdout": stdout}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small iteration counts")
    parser.add_argument("--only", nargs="+", choices=[b.script for b in BENCHMARKS], help="run only these")
    parser.add_argument("--verbose", action="store_true", help="also print each benchmark's own output")
    args = parser.parse_args()
    print(f"{os.cpu_count()} cores, load average at start {os.getloadavg()[0]:.1f}; quick={args.quick}", flush=True)
    rows = []
    for benchmark in BENCHMARKS:
        if args.only and benchmark.script not in args.only:
            continue
        print(f"running {benchmark.script} ...", flush=True)
        result = run(benchmark, args.quick)
        if args.verbose:
            print(result["stdout"])
        rows.append((benchmark, result))
    print()
    header = ("workload", "configuration", "time", "peak memory", "vs reference", "wall")
    table = [header]
    for benchmark, result in rows:
        values = result["values"]
        configuration = benchmark.configuration + (
            " (quick: " + " ".join(benchmark.quick_args) + ")" if args.quick else ""
        )
        if result["error"]:
            table.append((benchmark.workload, configuration, "failed: " + result["error"][:80], "", "", ""))
            continue
        peak = values.get("peak_memory_mb")
        peak = f"{float(peak):.0f} MB" if peak else f"{result['peak_rss_mb']:.0f} MB"
        ratio = values.get(benchmark.ratio_key)
        table.append(
            (
                benchmark.workload,
                configuration,
                f"{values.get(benchmark.time_key, '?')} {benchmark.time_unit}",
                peak,
                f"{ratio} {benchmark.ratio_meaning}" if ratio else "?",
                f"{result['wall_s']:.0f} s",
            )
        )
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for i, row in enumerate(table):
        print(" | ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
        if i == 0:
            print("-+-".join("-" * width for width in widths))
    if any(result["error"] for _, result in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
