"""Where the tests find Tebra's saved real WSDL, and what happens when it is not there.

The WSDL is not in the repository (docs/tebra.md, "Tebra's real WSDL in tests"): it lives under
``$TEBRA_SHARED_DIR/tebra/``, by default in a folder ``shared`` beside the repository's checkout. Locally a
missing file skips the test with the path it looked at; with ``CI=true`` it fails the test, so the
contract tests can never vanish quietly from a CI run.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
WSDL_RELATIVE = "tebra/wsdl/2025-06/KareoServices.svc.wsdl"
FAULT_RELATIVE = "tebra/soap-fault-InternalServiceFault.xml"


def shared_dir() -> Path:
    """$TEBRA_SHARED_DIR, else the folder ``shared`` beside the repository's checkout."""
    configured = os.environ.get("TEBRA_SHARED_DIR")
    return Path(configured) if configured else REPO_ROOT.parent / "shared"


def real_wsdl_path() -> Path:
    """The saved multi-part WSDL's entry document (its imports name sibling files, so it loads offline)."""
    return shared_dir() / WSDL_RELATIVE


def real_fault_path() -> Path:
    """A real InternalServiceFault body Tebra sent."""
    return shared_dir() / FAULT_RELATIVE


def in_ci() -> bool:
    """True under CI (CI=true, as .ci/run and every CI service set it)."""
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def missing_reason(path: Path) -> str:
    return (
        f"Tebra's real WSDL is not at {path}; set TEBRA_SHARED_DIR to the folder holding tebra/wsdl "
        '(docs/tebra.md, "Tebra\'s real WSDL in tests")'
    )


def require_real_file(path: Path) -> Path:
    """The path when it exists; else skip locally, fail under CI=true."""
    if path.exists():
        return path
    if in_ci():
        pytest.fail(f"CI=true and {missing_reason(path)}", pytrace=False)
    pytest.skip(missing_reason(path))
    raise AssertionError("unreachable")  # pragma: no cover - pytest.skip raises
