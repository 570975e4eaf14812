import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_hardware_reference_page_is_current_and_documents_every_setting():
    """docs/hardware.md is generated from the hardware tree's dataclasses: it must match them, and every
    setting must carry a meaning (a field added without a docstring fails here)."""
    page = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "hardware_reference.py")], capture_output=True, text=True, check=True
    ).stdout
    assert page == (ROOT / "docs" / "hardware.md").read_text(), (
        "run: python scripts/hardware_reference.py > docs/hardware.md"
    )
    rows = [line for line in page.splitlines() if line.startswith("| `")]
    assert len(rows) > 40 and all(not line.rstrip().endswith("|  |") for line in rows)
    for path in ("forward.dac_bits", "update.rounding", "clock.deployment_age_s", "drift_compensation", "device.w_max"):
        assert f"| `{path}` |" in page


def test_no_module_cites_private_notes():
    """Docstrings and comments cite public sources (the paper, the authors' repository, aihwkit, ...),
    never the project's private notes, which do not ship with the package."""
    banned = ("paper.md", "shared/reference")
    offending = []
    for path in sorted((ROOT / "src" / "l2l_pcm").rglob("*.py")):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if any(word in line for word in banned):
                offending.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not offending, "private notes cited (cite a public source instead):\n" + "\n".join(offending)
