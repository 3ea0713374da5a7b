"""Every module, function and file the docs name exists in the repository; nothing cites a file outside it.

A reference is one of: a path (``tasks/sync/run.py``, ``docs/breaker.md``, a bare ``gateway.py`` found under a
package), a dotted name in backquotes whose head is a package or a module (``tasks.events.topic_of``,
``lifecycle.start``), or a path followed by a backquoted name (tasks/sync/lifecycle.py ``start``). Dotted
names are imported and looked up with getattr, so a renamed function fails here, not in a reader's hands.
"""

from __future__ import annotations

import importlib
import re
from functools import cache
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("app", "tasks", "tebra_sim", "workers", "config")
DOCS = ("README.md", *sorted(f"docs/{doc.name}" for doc in (ROOT / "docs").glob("*.md")))
# Files a reader of the project cannot open: the references the docs and code once cited (spelled in pieces so
# this file does not match itself).
OUTSIDE_RE = re.compile(
    r"\b(?:SPEC|ARCHITECTURE|NOTES|STYLE)\.md\b|SPEC §|\.\./shared/" + "|shared/" + "tebra/"
)
SOURCE_FOLDERS = (
    "app",
    "tasks",
    "tebra_sim",
    "workers",
    "config",
    "tests",
    "scripts",
    "bench",
    "deploy",
    "docs",
)
# Paths relative to $TEBRA_SHARED_DIR, the real WSDL's folder outside the repository (docs/tebra.md says so).
SHARED_RELATIVE = ("tebra/wsdl/", "tebra/soap-fault-")
# Dotted names that are not this code's modules and are spelled nowhere as one string: the words around them
# say so.
NOT_CODE = {
    "app.control.revoke": "Celery's API (the Celery app's control)",
    "credentials.refused": "a JSON field of GET /api/v1/ops/tebra",
    "details.required_scope": "a JSON field of a 403's error envelope (not tasks/patients/details.py)",
}

PATH_RE = re.compile(
    r"(?<![\w/.:-])((?:\.\./)*(?:[\w.-]+/)*[\w-]+\.(?:py|md|lua|cfg|yaml|toml|wsdl))(?![\w/])"
)
PATH_AND_NAME_RE = re.compile(r"((?:[\w-]+/)+[\w-]+\.py)\)? `(\w+)`")
DOTTED_RE = re.compile(r"`([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+)(?:\(\))?`")


@cache
def spelled_names() -> frozenset[str]:
    """Dotted strings the code spells as one literal: task names (``schedule.sync``), audit actions."""
    names: set[str] = set()
    for package in PACKAGES:
        for file in (ROOT / package).rglob("*.py"):
            names.update(re.findall(r"[\"']([a-z_]+(?:\.[a-z_]+)+)[\"']", file.read_text()))
    return frozenset(names)


@cache
def module_stems() -> dict[str, list[str]]:
    """Module file stem -> the dotted modules of that name in the packages (``sync_status`` -> tasks.…)."""
    stems: dict[str, list[str]] = {}
    for package in PACKAGES:
        for file in (ROOT / package).rglob("*.py"):
            dotted = ".".join(file.relative_to(ROOT).with_suffix("").parts)
            stems.setdefault(file.stem, []).append(dotted.removesuffix(".__init__"))
    return stems


def resolves(dotted: str) -> bool:
    """Import the longest importable prefix of ``dotted`` and getattr the rest."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            target: object = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for name in parts[cut:]:
            if not hasattr(target, name):
                return False
            target = getattr(target, name)
        return True
    return False


def dotted_exists(reference: str) -> bool | None:
    """True/False for a module reference; None when the head is neither a package nor a module."""
    if reference in NOT_CODE or reference in spelled_names():
        return True
    head, _, rest = reference.partition(".")
    if head in PACKAGES:
        return resolves(reference)
    candidates = module_stems().get(head)
    if not candidates:
        return None
    return any(resolves(f"{module}.{rest}") for module in candidates)


def path_exists(reference: str, doc: Path) -> bool:
    """The file is inside the repository: from its root, from the doc's folder, or (a bare name) in a
    package."""
    if reference.startswith(SHARED_RELATIVE):
        return True
    for candidate in ((ROOT / reference).resolve(), (doc.parent / reference).resolve()):
        if candidate.is_relative_to(ROOT) and candidate.exists():
            return True
    if "/" not in reference:
        # A bare name inside a section about its folder (gateway.py under tasks/tebra/): anywhere in a
        # package.
        return any(any((ROOT / package).rglob(reference)) for package in (*PACKAGES, "tests"))
    return False


def references(text: str) -> tuple[set[str], set[tuple[str, str]], set[str]]:
    paths = {m.group(1) for m in PATH_RE.finditer(text) if not m.group(1).startswith(("http", "www."))}
    named = {(m.group(1), m.group(2)) for m in PATH_AND_NAME_RE.finditer(text)}
    dotted = {
        m.group(1) for m in DOTTED_RE.finditer(text) if not re.search(r"\.(py|md|com|svc)$", m.group(1))
    }
    return paths, named, dotted


@pytest.mark.parametrize("doc_name", DOCS)
def test_every_named_file_exists(doc_name: str) -> None:
    doc = ROOT / doc_name
    paths, _, _ = references(doc.read_text())
    missing = sorted(p for p in paths if not path_exists(p, doc))
    assert missing == [], f"{doc_name} names files that are not in the repository"


@pytest.mark.parametrize("doc_name", DOCS)
def test_every_named_function_of_a_path_exists(doc_name: str) -> None:
    _, named, _ = references((ROOT / doc_name).read_text())
    missing = []
    for path, name in sorted(named):
        dotted = ".".join(Path(path).with_suffix("").parts)
        if dotted.split(".")[0] in PACKAGES and not resolves(f"{dotted}.{name}"):
            missing.append(f"{path} `{name}`")
    assert missing == [], f"{doc_name} names functions that do not exist"


@pytest.mark.parametrize("doc_name", DOCS)
def test_every_dotted_name_exists(doc_name: str) -> None:
    _, _, dotted = references((ROOT / doc_name).read_text())
    checked = {d: dotted_exists(d) for d in dotted}
    assert sorted(d for d, ok in checked.items() if ok is False) == [], f"{doc_name} names missing code"


def test_the_parser_finds_references_in_architecture() -> None:
    """An empty parse would pass every test above: the overview names many paths and some dotted names."""
    paths, named, dotted = references((ROOT / "docs/architecture.md").read_text())
    assert len(paths) > 20 and named and any(dotted_exists(d) for d in dotted)


def test_the_check_catches_a_stale_name() -> None:
    """A name that went stale (lifecycle.claim_queued, now ``claim``) is caught in each of the three forms."""
    doc = ROOT / "docs/architecture.md"
    _, named, _ = references(
        "tasks/sync/lifecycle.py `claim_queued`, `lifecycle.claim_queued`, tasks/sync_state.py"
    )
    assert not path_exists("tasks/sync_state.py", doc)
    assert not path_exists("tasks/sync_status.py", doc)  # moved: tasks/sync/lifecycle.py
    assert not path_exists("../shared/ARCHITECTURE.md", doc)  # beside the checkout, not in the repository
    assert ("tasks/sync/lifecycle.py", "claim_queued") in named
    assert not resolves("tasks.sync.lifecycle.claim_queued") and resolves("tasks.sync.lifecycle.claim")
    assert dotted_exists("lifecycle.claim_queued") is False
    assert dotted_exists("schedule.sync") is True  # a task name the code spells
    assert dotted_exists("tasks.events.topic_of") is True
    assert isinstance(importlib.import_module("tasks.events"), ModuleType)


def test_no_doc_or_comment_cites_a_file_outside_the_repository() -> None:
    """Tebra's behaviour and the contract are written in docs/ (docs/tebra.md, docs/architecture.md)."""
    files = [ROOT / "README.md", ROOT / "Makefile", ROOT / ".ci/run"]
    for folder in SOURCE_FOLDERS:
        files += [
            f for f in (ROOT / folder).rglob("*") if f.suffix in {".py", ".md", ".lua", ".cfg", ".yaml"}
        ]
    cited = [
        f"{file.relative_to(ROOT)}:{number}"
        for file in files
        if file.is_file() and file != Path(__file__).resolve()
        for number, line in enumerate(file.read_text(errors="replace").splitlines(), 1)
        if OUTSIDE_RE.search(line)
    ]
    assert cited == []
    assert OUTSIDE_RE.search("see ../shared/tebra/SPEC.md") and OUTSIDE_RE.search("(SPEC §7)")
