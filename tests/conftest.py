import os

# Keep the suite quiet and deterministic on small machines.
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest


@pytest.fixture(autouse=True)
def _models_on_cpu_by_default():
    """A CLI test's ``--device auto`` must not leak into the next test's ``load_model``."""
    from coinfluence import device

    yield
    device.set_default_device("cpu")


@pytest.fixture
def bridge_seeds(tmp_path):
    """``bridge_seeds(*seeds)``: copies of the test unit ``fixtures/plots/bridge-s0`` as
    ``tmp_path/bridge-sN``, each with seed N in its config.json (the seed a unit is grouped by)."""
    import json
    import shutil
    from pathlib import Path

    fixture = Path(__file__).resolve().parent / "fixtures" / "plots" / "bridge-s0"

    def copies(*seeds):
        units = []
        for seed in seeds:
            unit = tmp_path / f"bridge-s{seed}"
            shutil.copytree(fixture, unit)
            config = json.loads((unit / "config.json").read_text())
            config["train"]["seed"] = seed
            (unit / "config.json").write_text(json.dumps(config))
            units.append(unit)
        return units

    return copies
