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
