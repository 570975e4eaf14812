import re
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


def test_the_chip_basics_tutorial_runs(capsys):
    """docs/tutorials/chip-basics.md shows this script and its output: it must run and say what it says."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("chip_basics", ROOT / "examples" / "chip_basics.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    results = module.main()
    assert results["reloaded_equal"] and results["outputs_shape"] == (8, 5)
    assert 0 < results["devices_reprogrammed"] <= results["devices_in_layer"] == 560
    assert 0.01 < results["weight_error_std_1h"] < 0.2  # programming noise + an hour of drift, w in [-1, 1]
    assert capsys.readouterr().out.splitlines()[0].startswith("weight_error_std_1h: ")


def test_every_tutorial_page_shows_a_script_the_test_suite_runs():
    """A tutorial page includes its example scripts from examples/ (so the page cannot show stale code), and
    each of those scripts is run by a test in a small configuration."""
    tests = "\n".join(path.read_text() for path in (ROOT / "tests").glob("test_*.py"))
    pages = sorted((ROOT / "docs" / "tutorials").glob("*.md"))
    assert len(pages) >= 5
    for page in pages:
        included = re.findall(r'--8<-- "examples/([a-z_]+)\.py"', page.read_text())
        assert included, f"{page.name} includes no example script"
        for name in included:
            assert re.search(rf'\b{name}\b', tests), f"examples/{name}.py (shown in {page.name}) is run by no test"
