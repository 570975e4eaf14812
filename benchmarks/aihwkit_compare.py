"""l2l-pcm against IBM aihwkit on the same CPU: the same networks, weights and inputs, PCM noise, interleaved runs.

Not part of l2l-pcm's extras or CI: aihwkit's C++ tiles need torch 2.10.0 exactly (about 7 GB with its CUDA
wheels). The exact install, in a separate environment::

    python3.11 -m venv aihw && aihw/bin/pip install "aihwkit==1.1.0" "torch==2.10.0" && aihw/bin/pip install -e .
    aihw/bin/python benchmarks/aihwkit_compare.py [--repeats 5] [--compilation-cache DIR]

Workloads, batch 256, both on the PCM noise model of Nandakumar et al. (aihwkit's ``PCMLikeNoiseModel``,
l2l-pcm's ``ibm`` profile), programmed once and read one day later, no drift compensation:

* ``mlp_ideal``: MLP 784-512-512-10 inference, ideal converters;
* ``mlp_8bit``: the same with 8-bit DAC and ADC (aihwkit: ``inp_res``/``out_res`` of 8 bits, output noise off);
* ``cnn_ideal``: four 3x3 stride-2 conv layers (1-56-56-56-56 channels, the few-shot body) on 28x28 images;
  ``cnn_per_batch``: the same with l2l-pcm's ``read_noise_mode="per_batch"`` (one device-noise draw per call,
  the nearest to aihwkit's fixed draw);
* ``hwa_step``: one hardware-aware training step of the MLP (forward through noisy weights, backward, SGD
  update): l2l-pcm's ``hardware_aware`` draws programming noise, drift and a read of every weight per batch;
  aihwkit adds Gaussian weight noise per batch (its PCM-noise modifier is not implemented on the CPU).

The semantics differ where the libraries do: l2l-pcm draws fresh read noise for every input vector and
reads through ``chip.layer(...)``, which books every read on the chip; aihwkit draws read noise once per
``drift_analog_weights`` call, so its inference is a matmul with fixed noisy weights. Prints, per workload, the
best time per call of each and the ratio l2l-pcm / aihwkit (< 1: l2l-pcm faster), and the set-up time of each:
deploying every workload and its first call (compilation included).
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import torch

from l2l_pcm.chip import (
    ArraysConfig,
    Chip,
    ChipConfig,
    ForwardConfig,
    analog_conv,
    analog_dense,
    deploy,
    hardware_aware,
)
from l2l_pcm.compilation_cache import use_compilation_cache

BATCH = 256
DAY_S = 86400.0
MLP = (784, 512, 512, 10)
CHANNELS = (1, 56, 56, 56, 56)


def best_of(fn, repeats: int, inner: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(inner):
            fn()
        best = min(best, (time.perf_counter() - start) / inner)
    return best


# ------------------------------------------------------------------------------------------ l2l-pcm
def l2l_mlp(weights, biases, bits: int | None):
    forward_config = ForwardConfig(dac_bits=bits, adc_bits=bits, dac_range=8.0, adc_range=64.0)
    chip = Chip(ChipConfig(arrays=ArraysConfig(count=16), forward=forward_config))
    names = [f"fc{i}" for i in range(len(weights))]
    deploy(
        dict(zip(names, weights, strict=True)),
        chip,
        jax.random.PRNGKey(1),
        biases=dict(zip(names, biases, strict=True)),
    )
    chip.advance(DAY_S)
    layers = [chip.layer(name) for name in names]

    @jax.jit
    def forward(x, key):
        for i, (layer, layer_key) in enumerate(zip(layers, jax.random.split(key, len(layers)), strict=True)):
            x = analog_dense(layer, x, layer_key)
            x = jax.nn.relu(x) if i < len(layers) - 1 else x
        return x

    return forward


def l2l_cnn(kernels, read_noise_mode: str = "per_read"):
    chip = Chip(ChipConfig(arrays=ArraysConfig(count=8), forward=ForwardConfig(read_noise_mode=read_noise_mode)))
    names = [f"conv{i}" for i in range(len(kernels))]
    deploy(dict(zip(names, kernels, strict=True)), chip, jax.random.PRNGKey(1))
    chip.advance(DAY_S)
    layers = [chip.layer(name) for name in names]

    @jax.jit
    def forward(images, key):
        for layer, layer_key in zip(layers, jax.random.split(key, len(layers)), strict=True):
            images = jax.nn.relu(analog_conv(layer, images, layer_key, stride=2, padding=1))
        return images

    return forward


def l2l_hwa_step(weights, biases):
    hardware = ChipConfig(forward=ForwardConfig(read_noise_mode="per_batch"))
    params = {"w": list(weights), "b": list(biases)}
    optimizer = optax.sgd(0.01)
    state = optimizer.init(params)

    def loss(params, x, y, key):
        noisy = hardware_aware(params, hardware, key)  # at the tree's training age (1 h)
        for i, (w, b) in enumerate(zip(noisy["w"], noisy["b"], strict=True)):
            x = x @ w + b
            x = jax.nn.relu(x) if i < len(weights) - 1 else x
        return optax.softmax_cross_entropy_with_integer_labels(x, y).mean()

    @jax.jit
    def step(params, state, x, y, key):
        grads = jax.grad(loss)(params, x, y, key)
        updates, state = optimizer.update(grads, state)
        return optax.apply_updates(params, updates), state

    def run(x, y, key):
        nonlocal params, state
        params, state = step(params, state, x, y, key)
        return params

    return run


# ------------------------------------------------------------------------------------------ aihwkit
def aihwkit_config(bits: int | None):
    from aihwkit.inference import PCMLikeNoiseModel
    from aihwkit.simulator.configs import InferenceRPUConfig

    config = InferenceRPUConfig()
    config.noise_model = PCMLikeNoiseModel(g_max=25.0)
    config.drift_compensation = None
    config.mapping.weight_scaling_omega = 1.0  # each layer's max |W| to g_max, as l2l-pcm's scaling="layer"
    if bits is None:
        config.forward.is_perfect = True
    else:
        config.forward.inp_res = 1 / (2**bits - 2)
        config.forward.out_res = 1 / (2**bits - 2)
        config.forward.out_noise = 0.0
    return config


def torch_mlp(weights, biases):
    layers = []
    for i, (w, b) in enumerate(zip(weights, biases, strict=True)):
        linear = torch.nn.Linear(*w.shape)
        linear.weight.data = torch.tensor(np.asarray(w).T.copy())
        linear.bias.data = torch.tensor(np.asarray(b))
        layers += [linear] + ([torch.nn.ReLU()] if i < len(weights) - 1 else [])
    return torch.nn.Sequential(*layers)


def aihwkit_inference(model, bits: int | None):
    from aihwkit.nn.conversion import convert_to_analog

    analog = convert_to_analog(model, aihwkit_config(bits))
    analog.eval()
    analog.program_analog_weights()
    analog.drift_analog_weights(DAY_S)
    return analog


def torch_cnn(kernels):
    layers = []
    for k in kernels:
        conv = torch.nn.Conv2d(k.shape[2], k.shape[3], 3, stride=2, padding=1, bias=False)
        conv.weight.data = torch.tensor(np.transpose(np.asarray(k), (3, 2, 0, 1)).copy())  # HWIO -> OIHW
        layers += [conv, torch.nn.ReLU()]
    return torch.nn.Sequential(*layers)


def aihwkit_hwa_step(weights, biases):
    from aihwkit.nn.conversion import convert_to_analog
    from aihwkit.optim import AnalogSGD
    from aihwkit.simulator.parameters.enums import WeightModifierType

    config = aihwkit_config(None)
    config.forward.is_perfect = False
    config.forward.out_noise = 0.0
    # Gaussian weight noise drawn for every batch (aihwkit's PCM_NOISE modifier has no CPU implementation)
    config.modifier.type = WeightModifierType.ADD_NORMAL
    config.modifier.std_dev = 0.03
    model = convert_to_analog(torch_mlp(weights, biases), config)
    model.train()
    optimizer = AnalogSGD(model.parameters(), lr=0.01)
    optimizer.regroup_param_groups(model)
    loss_fn = torch.nn.CrossEntropyLoss()

    def run(x, y):
        optimizer.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
        return loss

    return run


# ------------------------------------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--inner", type=int, default=10)
    parser.add_argument(
        "--compilation-cache",
        metavar="DIR",
        help="keep l2l-pcm's compiled code in DIR (JAX's persistent cache): a second run shows the warm set-up",
    )
    args = parser.parse_args()
    if args.compilation_cache:
        use_compilation_cache(args.compilation_cache)
    torch.set_num_threads(2)
    rng = np.random.default_rng(0)
    weights = [rng.normal(0, 1 / np.sqrt(m), (m, n)).astype(np.float32) for m, n in zip(MLP[:-1], MLP[1:], strict=True)]
    biases = [np.zeros(n, np.float32) for n in MLP[1:]]
    kernels = [
        rng.normal(0, 1 / np.sqrt(9 * c), (3, 3, c, d)).astype(np.float32)
        for c, d in zip(CHANNELS[:-1], CHANNELS[1:], strict=True)
    ]
    x = rng.uniform(0, 1, (BATCH, MLP[0])).astype(np.float32)
    images = rng.uniform(0, 1, (BATCH, 28, 28, 1)).astype(np.float32)
    labels = rng.integers(0, MLP[-1], BATCH)
    keys = iter(jax.random.split(jax.random.PRNGKey(2), 100_000))
    x_jax, images_jax, labels_jax = jnp.asarray(x), jnp.asarray(images), jnp.asarray(labels)
    x_torch, images_torch = torch.tensor(x), torch.tensor(np.transpose(images, (0, 3, 1, 2)).copy())
    labels_torch = torch.tensor(labels)

    setup = {"l2l-pcm": 0.0, "aihwkit": 0.0}
    calls = {}

    def prepared(library: str, build, call):
        start = time.perf_counter()
        built = build()
        jax.block_until_ready(call(built))  # the first call: compilation or kernel set-up
        setup[library] += time.perf_counter() - start
        return lambda: jax.block_until_ready(call(built))

    with torch.no_grad():
        for name, bits in (("mlp_ideal", None), ("mlp_8bit", 8)):
            calls[name] = (
                prepared("l2l-pcm", lambda bits=bits: l2l_mlp(weights, biases, bits), lambda f: f(x_jax, next(keys))),
                prepared("aihwkit", lambda bits=bits: aihwkit_inference(torch_mlp(weights, biases), bits),
                         lambda m: m(x_torch)),
            )  # fmt: skip
        for name, mode in (("cnn_ideal", "per_read"), ("cnn_per_batch", "per_batch")):
            calls[name] = (
                prepared("l2l-pcm", lambda mode=mode: l2l_cnn(kernels, mode), lambda f: f(images_jax, next(keys))),
                prepared("aihwkit", lambda: aihwkit_inference(torch_cnn(kernels), None), lambda m: m(images_torch)),
            )
    calls["hwa_step"] = (
        prepared("l2l-pcm", lambda: l2l_hwa_step(weights, biases), lambda f: f(x_jax, labels_jax, next(keys))),
        prepared("aihwkit", lambda: aihwkit_hwa_step(weights, biases), lambda f: f(x_torch, labels_torch)),
    )
    print(f"{'workload':>10} | {'l2l-pcm ms':>10} | {'aihwkit ms':>10} | ratio l2l/aihwkit")
    for name, (ours, theirs) in calls.items():
        best = {"l2l": float("inf"), "aihwkit": float("inf")}
        with torch.no_grad() if name != "hwa_step" else torch.enable_grad():
            for _ in range(args.repeats):  # interleaved, best of each
                best["l2l"] = min(best["l2l"], best_of(ours, 1, args.inner))
                best["aihwkit"] = min(best["aihwkit"], best_of(theirs, 1, args.inner))
        ratio = best["l2l"] / best["aihwkit"]
        print(f"{name:>10} | {1e3 * best['l2l']:10.2f} | {1e3 * best['aihwkit']:10.2f} | {ratio:.2f}")
        print(f"ratio_{name}: {ratio:.3f}")
    print(
        f"setup_s (deploy + first call of every workload): l2l-pcm {setup['l2l-pcm']:.1f}, "
        f"aihwkit {setup['aihwkit']:.1f}"
    )
    print(f"ratio_setup: {setup['l2l-pcm'] / setup['aihwkit']:.3f}")


if __name__ == "__main__":
    main()
