"""Checks shared by every command's options, run first (before any work)."""

from __future__ import annotations

import math

from coinfluence.errors import UserError


def check_finite(options: dict) -> None:
    """UserError for any float option that is NaN or infinite (a ``<= 0`` check lets NaN through)."""
    for name, value in options.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise UserError(f"--{name.replace('_', '-')} must be a finite number, got {value}")
