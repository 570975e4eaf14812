"""Emulated PCM in-memory-computing chip: crossbar arrays, placement, programmed state, clock, counters.

Scenarios use :class:`Chip` (and, for vmapped per-task work, the pure functions re-exported here);
they never touch its private attributes.
"""

from l2l_pcm.chip.chip import (
    Chip,
    ChipConfig,
    ReprogramReport,
    chip_for_model,
    conv_kernel_to_matrix,
    hardware_from_fields,
    image_patches,
)
from l2l_pcm.chip.crossbar import (
    LayerState,
    WeightStatistics,
    analog_matmul,
    program_layer,
    read_statistics,
    reprogram_layer,
    uniform_quantize,
)
from l2l_pcm.chip.energy import EnergyModel
from l2l_pcm.chip.layout import LayerPlacement, Tile

__all__ = [
    "chip_for_model",
    "Chip",
    "ChipConfig",
    "EnergyModel",
    "LayerPlacement",
    "LayerState",
    "ReprogramReport",
    "Tile",
    "WeightStatistics",
    "analog_matmul",
    "conv_kernel_to_matrix",
    "hardware_from_fields",
    "image_patches",
    "program_layer",
    "read_statistics",
    "reprogram_layer",
    "uniform_quantize",
]
