"""Fixtures of the contract tests: the real Tebra WSDL in zeep, and a simulator to point it at."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import zeep
from zeep.proxy import ServiceProxy

from config import load_settings
from tests.support.real_tebra import real_wsdl_path, require_real_file
from tests.support.simulator import Simulator, start_simulator

KAREO = "http://www.kareo.com/api/schemas/"


@pytest.fixture(scope="session")
def real_client() -> zeep.Client:
    """zeep on the real WSDL (loads offline: the imports name sibling files); skips locally, fails in CI."""
    return zeep.Client(str(require_real_file(real_wsdl_path())))


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    """A simulator for the module, throttle off unless a test turns it on; reset before each test."""
    with start_simulator(throttle=False, seed=5, appointments_per_day=10) as running:
        yield running


@pytest.fixture(autouse=True)
def _fresh(request: pytest.FixtureRequest) -> None:
    if "sim" in request.fixturenames:
        request.getfixturevalue("sim").reset()


@pytest.fixture
def service(real_client: zeep.Client, sim: Simulator) -> ServiceProxy:
    """The real WSDL's binding, addressed to the simulator (create_service misses the tempuri binding)."""
    port = real_client.wsdl.services["KareoServices"].ports["BasicHttpBinding_KareoServices"]
    return ServiceProxy(real_client, port.binding, address=sim.endpoint_url)


@pytest.fixture
def kareo(real_client: zeep.Client) -> Any:
    """The real schema's type factory, by full namespace (the nsN prefixes are not stable)."""
    return real_client.type_factory(KAREO)


@pytest.fixture
def header(kareo: Any) -> Any:
    """A RequestHeader with the project's (development) Tebra account, which the simulator accepts."""
    settings = load_settings({"APP_ENV": "test"})
    return kareo.RequestHeader(
        ClientVersion="clinic-relay-tests",
        CustomerKey=settings.tebra_customer_key,
        Password=settings.tebra_password,
        User=settings.tebra_user,
    )
