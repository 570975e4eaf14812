"""``l2l-pcm chip``: device statistics and the drift demo."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from l2l_pcm.cli.common import (
    PROFILE_LIST,
    device_arg,
    human_time,
    positive_int,
    seed_arg,
)


def _chip_stats(args: argparse.Namespace) -> None:
    import jax

    from l2l_pcm.chip.diagnostics import device_statistics
    from l2l_pcm.pcm import profile_name

    device = device_arg(args.device or "ibm")
    rows = device_statistics(device, jax.random.PRNGKey(args.seed), samples=args.samples)
    if args.json:
        print(json.dumps({"profile": profile_name(device), "rows": rows, "device": dataclasses.asdict(device)}))
        return
    print(f"device profile: {profile_name(device)}")
    print(", ".join(f"{k}={v}" for k, v in dataclasses.asdict(device).items()))
    print(
        f"{'g_T µS':>7} | {'σ_prog target':>13} {'measured':>9} | {'ν mean':>7} {'meas':>7} | "
        f"{'ν std':>7} {'meas':>7} | {'σ_read target':>13} {'measured':>9}"
    )
    for r in rows:
        print(
            f"{r['g_target_uS']:7.2f} | {r['prog_std_target_uS']:13.4f} {r['prog_std_measured_uS']:9.4f} | "
            f"{r['nu_mean_target']:7.4f} {r['nu_mean_measured']:7.4f} | {r['nu_std_target']:7.4f} "
            f"{r['nu_std_measured']:7.4f} | {r['read_std_target_uS']:13.4f} {r['read_std_measured_uS']:9.4f}"
        )
    print(f"({rows[0]['samples']} samples per row; read noise at t = {rows[0]['read_time_s']:.0f} s)")


def _chip_demo(args: argparse.Namespace) -> None:
    import jax

    from l2l_pcm.chip.diagnostics import drift_demo, plot_drift_demo

    result = drift_demo(jax.random.PRNGKey(args.seed))
    print("Weight error of a 256x128 layer (weights ~ N(0, 0.3²)) vs time since programming")
    print("error = (read − target)·sign(target); negative = drift towards zero")
    print(f"{'time':>9} | {'mean':>8} {'std':>7} | {'mean (calibrated comp.)':>23} {'std':>7}")
    for i, t in enumerate(result.times_s):
        print(
            f"{human_time(t):>9} | {result.error_mean[i]:8.4f} {result.error_std[i]:7.4f} | "
            f"{result.error_mean_compensated[i]:23.4f} {result.error_std_compensated[i]:7.4f}"
        )
    print("\nDevices touched by a small update (quantized to 1/16, nearest rounding)")
    print(f"{'update std':>10} | {'non-zero Δw_q':>13} {'pairs':>7} {'devices':>8} {'fraction':>9} {'energy est.':>12}")
    for r in result.update_rows:
        print(
            f"{r['update_std']:10.3g} | {r['nonzero_quantized_updates']:13d} {r['pairs_touched']:7d} "
            f"{r['devices_touched']:8d} {r['fraction_devices_touched']:9.4f} {r['energy_estimate_pJ'] / 1e3:9.1f} nJ"
        )
    path = plot_drift_demo(result, Path(args.out) / "chip_drift.png")
    print(f"\nplot: {path}")


def add_commands(commands) -> None:
    """The ``chip`` subcommands: stats and demo."""
    chip = commands.add_parser("chip", help="the emulated PCM chip").add_subparsers(dest="chip_command", required=True)
    stats = chip.add_parser("stats", help="sampled device statistics vs. their equations")
    stats.add_argument("--json", action="store_true", help='print one JSON object {"rows": [...]}')
    stats.add_argument("--samples", type=positive_int, default=100_000, help="samples per conductance (default 1e5)")
    stats.add_argument("--seed", type=seed_arg, default=0, help="random seed of the sampled devices (default 0)")
    stats.add_argument(
        "--device", metavar="NAME|FILE.json", help=f"device profile ({PROFILE_LIST}) or a JSON file of fields"
    )
    stats.set_defaults(run=_chip_stats)
    demo = chip.add_parser("demo", help="drift over 1 s … 1 day and devices touched by an update; writes a plot")
    demo.add_argument("--out", default="outputs", help="folder for the plot (default: outputs/)")
    demo.add_argument("--seed", type=seed_arg, default=0, help="random seed of the programmed devices (default 0)")
    demo.set_defaults(run=_chip_demo)
