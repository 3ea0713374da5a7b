"""A worker that starts while Tebra's WSDL cannot be loaded: the sync is retried as an upstream failure (never
an unclassified exception that leaves the day ``running``) and completes once the WSDL is back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tasks import keys
from tests.integration.tebra_flow import clinic_weekday, request_sync, wait_for_state
from tests.support.own_stack import own_stack


def test_a_worker_started_with_the_wsdl_unreachable_syncs_once_it_is_back(
    stack_env: dict[str, str], tmp_path: Path, logs_dir: Path, sim: Any, auth_headers: dict[str, str]
) -> None:
    sim.set_faults(wsdl_unavailable=True)
    # zeep keeps a loaded WSDL per process and address: this worker's address is one no process loaded.
    env = {"TEBRA_WSDL_URL": f"{sim.wsdl_url}&start=unreachable"}
    with own_stack(stack_env, tmp_path, logs_dir, "wsdl", **env) as stack:
        date = clinic_weekday(-16)
        request_sync(stack.base_url, date, auth_headers)
        seen: list[str] = []
        status = wait_for_state(stack.base_url, date, {"retrying", "failed"}, auth_headers, seen=seen)
        assert status["state"] == "retrying" and status["error"] == "TEBRA_UPSTREAM", (status, seen)
        assert "GetAppointments" not in sim.stats()["calls"]  # no SOAP call: the service description failed

        sim.set_faults(wsdl_unavailable=False)
        status = wait_for_state(
            stack.base_url, date, {"succeeded", "failed"}, auth_headers, timeout=40, seen=seen
        )
        assert status["state"] == "succeeded", (status, seen)
        assert stack.redis.hlen(keys.appointments(date)) == len(sim.appointments(date))
        assert not any(mark.startswith("failed") for mark in seen), seen
