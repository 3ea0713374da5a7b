"""The gateway's and the simulator's throttle tables name only operations of Tebra's real WSDL, and agree.

The operation names come from the saved WSDL's portType (docs/tebra.md, "Tebra's real WSDL in tests"):
skipped locally when it is absent, failed under CI=true.
"""

from __future__ import annotations

from pathlib import Path

from lxml import etree

from tasks.tebra.throttle import PUBLISHED_INTERVALS_MS
from tebra_sim.throttle import INTERVALS_MS as SIM_INTERVALS_MS
from tests.support.real_tebra import real_wsdl_path, require_real_file

WSDL_NS = "http://schemas.xmlsoap.org/wsdl/"


def wsdl_operations(folder: Path) -> set[str]:
    """Every operation name of every portType in the saved WSDL set's .wsdl documents."""
    names: set[str] = set()
    for document in sorted(folder.glob("*.wsdl")):
        tree = etree.parse(str(document))
        names.update(tree.xpath("//w:portType/w:operation/@name", namespaces={"w": WSDL_NS}))
    return names


def test_the_wsdl_parser_reads_operations() -> None:
    operations = wsdl_operations(require_real_file(real_wsdl_path()).parent)
    assert {"GetAppointments", "GetPatient", "GetThrottles", "CreatePayment"} <= operations
    assert len(operations) == 28


def test_gateway_throttle_table_names_only_wsdl_operations() -> None:
    operations = wsdl_operations(require_real_file(real_wsdl_path()).parent)
    assert sorted(set(PUBLISHED_INTERVALS_MS) - operations) == []


def test_simulator_throttle_table_names_only_wsdl_operations() -> None:
    operations = wsdl_operations(require_real_file(real_wsdl_path()).parent)
    assert sorted(set(SIM_INTERVALS_MS) - operations) == []


def test_gateway_and_simulator_tables_agree() -> None:
    """The simulator enforces what the gateway paces for: a drift would hide a 429 or slow a test."""
    assert SIM_INTERVALS_MS == PUBLISHED_INTERVALS_MS
