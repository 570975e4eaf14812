"""l2l-pcm: learning-to-learn on emulated phase-change-memory in-memory-computing hardware.

Layers: :mod:`l2l_pcm.pcm` (device physics) → :mod:`l2l_pcm.chip` (crossbar arrays, placement, clock)
→ the scenarios :mod:`l2l_pcm.fewshot` and :mod:`l2l_pcm.robot`. Your own network on the chip:
:func:`deploy`, :meth:`Chip.layer`, :func:`analog_dense`, :func:`analog_conv` and, for hardware-aware
training, :func:`hardware_aware` and :func:`hardware_aware_layers` (see :mod:`l2l_pcm.chip.layers`).
"""

from l2l_pcm.chip import (
    AnalogLayer,
    Chip,
    ChipConfig,
    EnergyModel,
    ReprogramReport,
    analog_conv,
    analog_dense,
    deploy,
    hardware_aware,
    hardware_aware_layers,
)
from l2l_pcm.errors import CheckpointError, ChipCapacityError, ConfigError, DataError, L2LPCMError
from l2l_pcm.pcm import PCMDevice, quantize, quantize_weights

__version__ = "0.1.0"

__all__ = [
    "AnalogLayer",
    "analog_conv",
    "analog_dense",
    "deploy",
    "hardware_aware",
    "hardware_aware_layers",
    "CheckpointError",
    "Chip",
    "ChipCapacityError",
    "ChipConfig",
    "ConfigError",
    "DataError",
    "EnergyModel",
    "L2LPCMError",
    "PCMDevice",
    "ReprogramReport",
    "quantize",
    "quantize_weights",
]
