"""Energy and latency *estimates* for the emulated chip.

These are bookkeeping numbers, not measurements: counters of the emulator times per-operation constants.
Where each constant comes from:

* ``mvm_energy_pJ_per_mac`` = 0.19 pJ: IBM HERMES core, 10.5 TOPS/W measured (Khaddam-Aljameh et al.,
  IEEE JSSC 2022), one multiply-accumulate = 2 operations → 2 / 10.5e12 J.
* ``mvm_latency_ns`` = 133 ns per array MVM: IBM 64-core HERMES chip, 63.1 TOPS peak over 64 cores in
  one-phase read mode (Le Gallo et al., Nat. Electron. 2023) → 0.99 TOPS per 256×256 core →
  2·256·256 operations in 133 ns.
* ``program_pulses_per_device`` = 10, ``program_energy_pJ_per_pulse`` = 50 pJ, ``program_latency_ns_per_pulse``
  = 1000 ns: **assumptions of this project**, order-of-magnitude values for iterative program-and-verify
  of PCM (a pulse of some hundred ns plus a verify read per iteration); neither the paper nor a source we
  could read gives them. Override them with your device's data.
* Programming is assumed row-parallel: devices of one row of one array are programmed together, so the
  programming latency counts distinct (array, row) pairs touched, not devices.
"""

from __future__ import annotations

import dataclasses

from l2l_pcm.errors import check_number


@dataclasses.dataclass(frozen=True)
class EnergyModel:
    """Per-operation constants of the energy and latency estimates (sources in the module docstring)."""

    mvm_energy_pJ_per_mac: float = 0.19
    """Energy of one analog multiply-accumulate (IBM HERMES, 10.5 TOPS/W)."""
    mvm_latency_ns: float = 133.0
    """Latency of one MVM on one 256×256 array (IBM 64-core HERMES chip, 63.1 TOPS over 64 cores)."""
    program_pulses_per_device: float = 10.0
    """Program-and-verify iterations per device programmed (this project's assumption)."""
    program_energy_pJ_per_pulse: float = 50.0
    """Energy of one programming pulse and its verify read (this project's assumption)."""
    program_latency_ns_per_pulse: float = 1000.0
    """Latency of one row-parallel programming pulse and verify (this project's assumption)."""

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            check_number(f"EnergyModel.{field.name}", getattr(self, field.name), strict=False)

    def mvm_energy_pJ(self, macs: float) -> float:
        return macs * self.mvm_energy_pJ_per_mac

    def programming_energy_pJ(self, devices: float) -> float:
        return devices * self.program_pulses_per_device * self.program_energy_pJ_per_pulse

    def programming_latency_ns(self, rows_touched: float) -> float:
        return rows_touched * self.program_pulses_per_device * self.program_latency_ns_per_pulse
