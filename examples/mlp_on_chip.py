"""Your own network on the emulated PCM chip: a 64-128-10 MLP on scikit-learn's bundled digits.

Trains the MLP twice in software (plain fp32, and hardware-aware with the chip's device model through
``l2l_pcm.hardware_aware``), deploys each with ``l2l_pcm.deploy`` (placement, per-layer weight scaling,
digital biases), and measures test accuracy on the chip from 1 s to 1 month after programming, with and
without drift compensation (measured by the chip's calibration reads, per array); then the 8-bit DAC
with and without calibrated ranges. Prints a table and writes ``mlp_on_chip.png``.

    pip install -e ".[examples]"
    python examples/mlp_on_chip.py --out outputs

Every chip result is the mean over ``--chips`` independently programmed chips (their 95 % interval in the
table), all on the 540 held-out digits.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from l2l_pcm import Chip, ChipConfig, deploy, hardware_aware
from l2l_pcm.plotting import human_time_axis, pyplot, save_figure

TIMES_S = {"1 s": 1.0, "1 min": 60.0, "1 h": 3600.0, "1 day": 86400.0, "1 week": 7 * 86400.0, "1 month": 30 * 86400.0}
TRAIN_AGE_S = 3600.0
"""The age hardware-aware training draws its noise at."""
LAYERS = ("fc1", "fc2")


def load_digits(seed: int = 0):
    """scikit-learn's 1,797 8×8 digits (bundled, no download), pixels in [0, 1]; 70/30 split."""
    from sklearn.datasets import load_digits as sklearn_digits

    data = sklearn_digits()
    x = (data.data / 16.0).astype(np.float32)
    order = np.random.default_rng(seed).permutation(len(x))
    x, y = x[order], data.target[order]
    cut = int(0.7 * len(x))
    return (x[:cut], y[:cut]), (x[cut:], y[cut:])


def init_mlp(key, hidden: int) -> dict:
    k1, k2 = jax.random.split(key)
    return {
        "fc1": jax.random.normal(k1, (64, hidden)) * np.sqrt(2 / 64),
        "fc1_bias": jnp.zeros(hidden),
        "fc2": jax.random.normal(k2, (hidden, 10)) * np.sqrt(1 / hidden),
        "fc2_bias": jnp.zeros(10),
    }


def forward(params: dict, x):
    hidden = jax.nn.relu(x @ params["fc1"] + params["fc1_bias"])
    return hidden @ params["fc2"] + params["fc2_bias"]


def train(train_set, hidden: int, epochs: int, aware: bool, device, seed: int) -> dict:
    """Adam on cross-entropy, batches of 64; ``aware``: every step sees the weights as the chip would
    return them an hour after programming (straight-through gradients)."""
    x, y = (jnp.asarray(a) for a in train_set)
    params = init_mlp(jax.random.PRNGKey(seed), hidden)
    optimizer = optax.adam(3e-3)
    state = optimizer.init(params)

    def loss(params, xb, yb, key):
        if aware:
            params = hardware_aware(params, device, key, TRAIN_AGE_S)
        return optax.softmax_cross_entropy_with_integer_labels(forward(params, xb), yb).mean()

    @jax.jit
    def step(params, state, xb, yb, key):
        grads = jax.grad(loss)(params, xb, yb, key)
        updates, state = optimizer.update(grads, state)
        return optax.apply_updates(params, updates), state

    key = jax.random.PRNGKey(seed + 1)
    for _ in range(epochs):
        key, shuffle = jax.random.split(key)
        order = jax.random.permutation(shuffle, len(x))
        for start in range(0, len(x) - 63, 64):
            key, step_key = jax.random.split(key)
            batch = order[start : start + 64]
            params, state = step(params, state, x[batch], y[batch], step_key)
    return params


def chip_accuracy(params, test_set, hardware: ChipConfig, age_s: float, seed: int, calibrate_with=None) -> float:
    """Deploy on a fresh chip, let ``age_s`` pass, classify the test set (read noise on every MVM)."""
    x, y = test_set
    chip = Chip(hardware)
    key = jax.random.PRNGKey(seed)
    deploy(
        {name: params[name] for name in LAYERS},
        chip,
        key,
        scaling="layer",
        biases={name: params[f"{name}_bias"] for name in LAYERS},
    )
    if calibrate_with is not None:  # at deployment, from training inputs, with the weights as programmed
        chip.calibrate("fc1", calibrate_with)
        chip.calibrate("fc2", jax.nn.relu(chip.mvm("fc1", calibrate_with, None)))
    chip.advance(age_s)
    k1, k2 = jax.random.split(jax.random.fold_in(key, 1))
    hidden = jax.nn.relu(chip.mvm("fc1", x, k1))
    logits = chip.mvm("fc2", hidden, k2)
    return float(np.mean(np.asarray(jnp.argmax(logits, -1)) == y))


def mean_ci(values) -> tuple[float, float]:
    values = np.asarray(values, dtype=float)
    half = 1.96 * values.std(ddof=1) / np.sqrt(len(values)) if len(values) > 1 else 0.0
    return float(values.mean()), float(half)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hidden", type=int, default=128, help="hidden units")
    parser.add_argument("--epochs", type=int, default=40, help="training epochs per model")
    parser.add_argument("--chips", type=int, default=5, help="independently programmed chips per point")
    parser.add_argument("--times", default=",".join(TIMES_S), help=f"comma-separated ages from {list(TIMES_S)}")
    parser.add_argument("--out", default="outputs", help="folder for mlp_on_chip.png")
    args = parser.parse_args(argv)
    times = {name: TIMES_S[name] for name in args.times.split(",")}
    start = time.perf_counter()
    hardware = ChipConfig()
    train_set, test_set = load_digits()
    models = {
        "fp32-trained": train(train_set, args.hidden, args.epochs, False, hardware.device, 0),
        "hardware-aware": train(train_set, args.hidden, args.epochs, True, hardware.device, 0),
    }
    software = {
        name: float(np.mean(np.asarray(jnp.argmax(forward(p, test_set[0]), -1)) == test_set[1]))
        for name, p in models.items()
    }
    rows = []
    print(f"64-{args.hidden}-10 MLP on digits, {len(test_set[1])} test images, {args.chips} chips per point")
    print("software accuracy: " + ", ".join(f"{n} {100 * a:.2f} %" for n, a in software.items()))
    print(f"{'model':>15} | {'drift comp.':>11} | " + " | ".join(f"{t:>13}" for t in times))
    for name, params in models.items():
        for compensation in ("none", "array"):
            config = dataclasses.replace(hardware, drift_compensation=compensation)
            cells = []
            for label, age in times.items():
                accuracy = mean_ci([chip_accuracy(params, test_set, config, age, seed) for seed in range(args.chips)])
                rows.append(
                    {
                        "model": name,
                        "drift_compensation": compensation,
                        "time": label,
                        "age_s": age,
                        "accuracy_mean": accuracy[0],
                        "accuracy_ci95": accuracy[1],
                    }
                )
                cells.append(f"{100 * accuracy[0]:6.2f} ± {100 * accuracy[1]:4.2f}")
            print(f"{name:>15} | {compensation:>11} | " + " | ".join(cells))

    dac = hardware.with_settings({"forward.dac_bits": 8})
    params = models["fp32-trained"]
    uncalibrated = mean_ci([chip_accuracy(params, test_set, dac, 3600.0, s) for s in range(args.chips)])
    calibrated = mean_ci(
        [chip_accuracy(params, test_set, dac, 3600.0, s, calibrate_with=train_set[0]) for s in range(args.chips)]
    )
    print(
        f"8-bit DAC at 1 h (fp32-trained): default range ±1: {100 * uncalibrated[0]:.2f} ± "
        f"{100 * uncalibrated[1]:.2f} %; calibrated (Chip.calibrate): {100 * calibrated[0]:.2f} ± "
        f"{100 * calibrated[1]:.2f} %"
    )
    path = plot(rows, software, Path(args.out) / "mlp_on_chip.png", args.chips, len(test_set[1]))
    print(f"plot: {path}   ({time.perf_counter() - start:.0f} s)")
    return {"software": software, "chip": rows, "dac8_uncalibrated": uncalibrated, "dac8_calibrated": calibrated}


def plot(rows: list[dict], software: dict, path: Path, chips: int, test_images: int) -> Path:
    from matplotlib.patches import Patch

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(10.0, 7.4), dpi=110, layout="constrained")
    colors = {"fp32-trained": "tab:blue", "hardware-aware": "tab:orange"}
    names = {"none": "no drift compensation", "array": "calibrated drift compensation, per array"}
    for name, color in colors.items():
        for compensation, style in (("none", "-"), ("array", "--")):
            points = [r for r in rows if r["model"] == name and r["drift_compensation"] == compensation]
            ages = [r["age_s"] for r in points]
            mean = np.array([100 * r["accuracy_mean"] for r in points])
            ci = np.array([100 * r["accuracy_ci95"] for r in points])
            label = f"chip, {name}, {names[compensation]}"
            ax.plot(ages, mean, style, marker="o", color=color, label=label)
            ax.fill_between(ages, mean - ci, mean + ci, color=color, alpha=0.12)
        if len(set(software.values())) > 1:  # one software line per model where they differ
            software_label = f"software, {name}: {100 * software[name]:.2f} %"
            ax.axhline(100 * software[name], color=color, linewidth=1.5, linestyle=":", label=software_label)
    if len(set(software.values())) == 1:
        both = f"software, both models: {100 * next(iter(software.values())):.2f} %"
        ax.axhline(100 * next(iter(software.values())), color="black", linewidth=1.5, linestyle=":", label=both)
    human_time_axis(ax, [r["age_s"] for r in rows], at_data=True)
    ax.set_xlabel("time since programming (log scale)")
    ax.set_ylabel(f"test accuracy on {test_images} held-out digits (%)")
    ax.set_title(f"64-128-10 MLP on digits on the emulated PCM chip\nmean over {chips} programmed chips per point")
    handles, _ = ax.get_legend_handles_labels()
    band = f"shaded: 95 % interval over the {chips} chips"
    handles.append(Patch(color="0.6", alpha=0.4, label=band))
    fig.legend(handles=handles, loc="outside lower center", ncol=1, frameon=False)
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


if __name__ == "__main__":
    main()
