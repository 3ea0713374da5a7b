"""The JSON admin API under ``/_sim/``: what tests use to see and steer the simulator (docs/simulator.md)."""

from __future__ import annotations

import json
from datetime import date
from typing import Any

from werkzeug.wrappers import Request, Response

from tebra_sim import dates
from tebra_sim.clinic import Appointment
from tebra_sim.faults import FaultError
from tebra_sim.operations import appointment_row
from tebra_sim.simulation import Simulation
from tebra_sim.store import EditError


def _json(data: Any, status: int = 200) -> Response:
    return Response(json.dumps(data, indent=1, sort_keys=True), status=status, mimetype="application/json")


def _error(message: str, status: int = 400) -> Response:
    return _json({"error": message}, status)


def appointment_json(sim: Simulation, appointment: Appointment) -> dict[str, Any]:
    """Plain fields for tests, and ``wire``: the AppointmentData strings GetAppointments would send."""
    provider = sim.clinic.provider(appointment.provider_id)
    location = sim.clinic.location(appointment.location_id)
    return {
        "id": appointment.id,
        "patient_id": appointment.patient_id,
        "patient_full_name": appointment.patient_full_name,
        "provider_id": appointment.provider_id,
        "provider_full_name": provider.full_name if provider else None,
        "location_id": appointment.location_id,
        "location_name": location.name if location else None,
        "start": appointment.start.isoformat(),
        "end": appointment.end.isoformat(),
        "status": appointment.status,
        "reason": appointment.reason,
        "created": appointment.created.isoformat(),
        "last_modified": appointment.last_modified.isoformat(),
        "wire": appointment_row(sim, appointment),
    }


def _body(request: Request) -> dict[str, Any]:
    data = request.get_json(force=True, silent=True)
    if data is None and not request.get_data():
        return {}
    if not isinstance(data, dict):
        raise ValueError("the body must be a JSON object")
    return data


def handle(sim: Simulation, request: Request) -> Response:
    route = (request.method, request.path.removeprefix("/_sim").rstrip("/") or "/")
    try:
        if route == ("GET", "/health"):
            return _json(
                {
                    "status": "ok",
                    "seed": sim.options.seed,
                    "practice": sim.clinic.practice.name,
                    "now": sim.now().isoformat(),
                    "tz": sim.options.clinic_tz,
                }
            )
        if route == ("GET", "/stats"):
            return _json(sim.stats.snapshot())
        if route == ("POST", "/reset"):
            sim.reset()
            return _json({"reset": True})
        if route == ("GET", "/faults"):
            return _json(sim.faults.describe())
        if route == ("POST", "/faults"):
            return _json(sim.faults.update(_body(request)))
        if route == ("GET", "/clinic"):
            return _json(_clinic(sim))
        if route == ("GET", "/appointments"):
            raw = request.args.get("date") or sim.today().isoformat()
            day = date.fromisoformat(raw)
            rows = [appointment_json(sim, row) for row in sim.store.day(day)]
            return _json({"date": day.isoformat(), "appointments": rows})
        if route == ("POST", "/appointments"):
            changed = sim.store.edit(_body(request))
            return _json(appointment_json(sim, changed))
    except (FaultError, EditError, ValueError, KeyError, TypeError) as exc:
        return _error(str(exc))
    return _error(f"no admin route {request.method} {request.path}", 404)


def _clinic(sim: Simulation) -> dict[str, Any]:
    clinic = sim.clinic
    return {
        "practice": {"id": clinic.practice.id, "name": clinic.practice.name},
        "providers": [{"id": p.id, "full_name": p.full_name} for p in clinic.providers],
        "locations": [{"id": loc.id, "name": loc.name} for loc in clinic.locations],
        "appointments_per_day": clinic.appointments_per_day,
        "now": dates.render(sim.now()),
    }
