"""Emulated PCM in-memory-computing chip: crossbar arrays, placement, programmed state, clock, counters.

Scenarios use :class:`Chip` and the layer API (:func:`deploy`, :meth:`Chip.layer`, :func:`analog_dense`,
:func:`analog_conv`, :func:`hardware_aware`; and, for vmapped per-task work, the pure functions
re-exported here); they never touch its private attributes.
"""

from l2l_pcm.chip.chip import (
    Chip,
    ChipConfig,
    ReprogramReport,
    chip_for_model,
    hardware_from_fields,
)
from l2l_pcm.chip.crossbar import (
    IDEAL_MVM,
    LayerState,
    MVMSpec,
    WeightStatistics,
    analog_matmul,
    analog_mvm,
    program_layer,
    read_statistics,
    reprogram_layer,
    uniform_quantize,
)
from l2l_pcm.chip.energy import EnergyModel
from l2l_pcm.chip.layers import (
    AnalogLayer,
    analog_conv,
    analog_dense,
    conv_kernel_to_matrix,
    deploy,
    hardware_aware,
    image_patches,
)
from l2l_pcm.chip.layout import LayerPlacement, Tile

__all__ = [
    "IDEAL_MVM",
    "AnalogLayer",
    "MVMSpec",
    "analog_conv",
    "analog_dense",
    "analog_mvm",
    "chip_for_model",
    "deploy",
    "hardware_aware",
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
