"""The emulated PCM chip in a few lines: place layers, program them, let them drift, read, update, save.

Two 256×256 crossbar arrays of differential PCM unit cells (the default ``Chip()``); a 3×3 convolution with
56 input and 56 output channels (504 rows after im2col) is split over both arrays, and a 56×5 readout sits
beside it. One hour after programming the readout is read by analog MVMs (fresh read noise per input
vector), then updated by re-programming only the devices whose quantized update changes them.

    python examples/chip_basics.py
"""

import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp

from l2l_pcm import Chip


def main() -> dict:
    chip = Chip()  # 2 arrays of 256x256 differential cells, the ibm device profile
    chip.place_conv("conv2", (3, 3, 56, 56))  # 504 rows -> split 252 + 252 over both arrays
    chip.place_dense("readout", (56, 5))
    key = jax.random.PRNGKey(0)
    weights = 0.3 * jax.random.normal(key, (56, 5))
    chip.program("readout", weights, key)
    chip.advance(3600.0)  # one hour of drift
    read = chip.read_weights("readout")  # the weights the devices hold now (noise-free mean read)
    outputs = chip.mvm("readout", jnp.ones((8, 56)), key)  # 8 analog MVMs, fresh read noise per vector
    update = 0.05 * jax.random.normal(jax.random.fold_in(key, 1), (56, 5))
    report = chip.reprogram("readout", update, key, rounding="stochastic")  # 1/16 grid, changed devices only
    with tempfile.TemporaryDirectory() as folder:
        chip.save(Path(folder) / "chip.safetensors")
        reloaded = Chip.load(Path(folder) / "chip.safetensors")
    results = {
        "weight_error_std_1h": float(jnp.std(read - weights)),
        "outputs_shape": tuple(outputs.shape),
        "devices_reprogrammed": report.devices_touched,
        "devices_in_layer": report.devices_in_layer,
        "update_energy_pJ": report.energy_pJ,
        "reloaded_equal": bool(jnp.array_equal(reloaded.read_weights("readout"), chip.read_weights("readout"))),
    }
    for name, value in results.items():
        print(f"{name}: {value}")
    return results


if __name__ == "__main__":
    main()
