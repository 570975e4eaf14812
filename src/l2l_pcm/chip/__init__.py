"""Emulated PCM in-memory-computing chip: crossbar arrays, placement, programmed state, clock, counters.

Scenarios use :class:`Chip` and the layer API (:func:`deploy`, :meth:`Chip.layer`, :func:`analog_dense`,
:func:`analog_conv`, :func:`hardware_aware`, :func:`hardware_aware_layers`; and, for vmapped per-task
work, the pure functions re-exported here); they never touch its private attributes.

Modules, each importing only those before it: :mod:`.crossbar` (pure functions over one layer's devices),
:mod:`.energy`, :mod:`.layout` (tiling), :mod:`.config` (:class:`ChipConfig`), :mod:`.layers` (the layer
API's pure functions), :mod:`.chip` (the stateful :class:`Chip` and :func:`deploy`).
"""

from l2l_pcm.chip.chip import (
    Chip,
    ChipLayer,
    ChipSnapshot,
    MVMLedger,
    chip_for_model,
    deploy,
)
from l2l_pcm.chip.config import (
    ArraysConfig,
    ChipConfig,
    ClockConfig,
    ForwardConfig,
    Periphery,
    ReprogramReport,
    UpdateConfig,
    refuse_hardware_fields,
)
from l2l_pcm.chip.crossbar import (
    IDEAL_MVM,
    LayerState,
    MVMCounts,
    MVMSpec,
    WeightStatistics,
    analog_matmul,
    analog_mvm,
    program_layer,
    read_statistics,
    reprogram_layer,
    straight_through,
    uniform_quantize,
    weight_sample,
)
from l2l_pcm.chip.energy import EnergyModel
from l2l_pcm.chip.layers import (
    AnalogLayer,
    analog_conv,
    analog_dense,
    conv_kernel_to_matrix,
    hardware_aware,
    hardware_aware_layers,
    image_patches,
)
from l2l_pcm.chip.layout import LayerPlacement, Tile

__all__ = [
    "IDEAL_MVM",
    "AnalogLayer",
    "Chip",
    "ArraysConfig",
    "ChipConfig",
    "ClockConfig",
    "ForwardConfig",
    "UpdateConfig",
    "refuse_hardware_fields",
    "ChipLayer",
    "ChipSnapshot",
    "EnergyModel",
    "LayerPlacement",
    "LayerState",
    "MVMCounts",
    "MVMLedger",
    "MVMSpec",
    "Periphery",
    "ReprogramReport",
    "Tile",
    "WeightStatistics",
    "analog_conv",
    "analog_dense",
    "analog_matmul",
    "analog_mvm",
    "chip_for_model",
    "conv_kernel_to_matrix",
    "deploy",
    "hardware_aware",
    "hardware_aware_layers",
    "image_patches",
    "program_layer",
    "read_statistics",
    "reprogram_layer",
    "straight_through",
    "uniform_quantize",
    "weight_sample",
]
