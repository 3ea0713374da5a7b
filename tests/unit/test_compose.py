"""compose.yaml and the Dockerfile, checked without Docker: what each service runs exists in the project,
what it sets is a real setting, every service has a healthcheck and waits for healthy dependencies."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from config import setting_names
from scripts.redis_server import SERVER_ARGS

ROOT = Path(__file__).resolve().parents[2]
SERVICES = {"redis", "tebra-sim", "api", "worker", "beat", "flower", "audit"}
# Variables read by the libraries the processes run, not by config/settings.py.
THIRD_PARTY_ENV = {"PROMETHEUS_MULTIPROC_DIR", "WEB_CONCURRENCY", "GUNICORN_CMD_ARGS", "PYTHONUNBUFFERED"}
SECRET_WORDS = ("PASSWORD", "SECRET", "TOKEN", "KEY")
ENTRY_POINTS = {"python", "gunicorn", "celery"}
CELERY_COMMANDS = {"worker", "beat", "flower"}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "compose.yaml").read_text())
    return loaded


def project_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: svc for name, svc in compose["services"].items() if "build" in svc}


def module_exists(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def option(command: list[str], flag: str) -> str | None:
    """The value of ``-A x``/``-c x`` or ``--conf=x`` in a command."""
    for index, word in enumerate(command):
        if word == flag and index + 1 < len(command):
            return command[index + 1]
        if word.startswith(flag + "="):
            return word.split("=", 1)[1]
    return None


def test_every_process_of_the_system_is_a_service(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == SERVICES


def test_every_project_command_resolves_in_the_project(compose: dict[str, Any]) -> None:
    for name, service in project_services(compose).items():
        command = service["command"]
        assert isinstance(command, list), f"{name}: exec form, so SIGTERM reaches the process itself"
        program = command[0]
        assert program in ENTRY_POINTS, f"{name}: unknown program {program}"
        if program == "python":
            assert command[1] == "-m" and module_exists(command[2]), f"{name}: no module {command[2]}"
            assert (ROOT / command[2].replace(".", "/")).with_suffix(".py").exists() or module_exists(
                command[2] + ".__main__"
            ), f"{name}: {command[2]} cannot run as a program"
        elif program == "gunicorn":
            config = option(command, "-c")
            assert config and (ROOT / config).is_file(), f"{name}: no gunicorn config {config}"
            module, _, attribute = command[-1].partition(":")
            assert module_exists(module) and attribute, f"{name}: no WSGI app {command[-1]}"
        else:
            app_module = option(command, "-A")
            assert app_module and module_exists(app_module), f"{name}: no Celery app {app_module}"
            assert set(command) & CELERY_COMMANDS, f"{name}: not a worker, beat or flower"
            conf = option(command, "--conf")
            assert conf is None or (ROOT / conf).is_file(), f"{name}: no {conf}"


def test_every_variable_set_is_a_setting_or_a_known_library_one(compose: dict[str, Any]) -> None:
    known = set(setting_names()) | THIRD_PARTY_ENV
    for name, service in compose["services"].items():
        for variable in service.get("environment", {}) or {}:
            assert variable in known, f"{name}: {variable} is not a setting (config/settings.py)"


def test_no_secret_is_written_in_the_file(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for variable in service.get("environment", {}) or {}:
            assert not any(word in variable for word in SECRET_WORDS), f"{name} sets {variable}: use .env"
        if "build" in service:
            assert service["env_file"][0] == {"path": ".env", "required": True}, f"{name}: settings from .env"
    assert (ROOT / ".env.example").is_file()
    assert ".env" in (ROOT / ".dockerignore").read_text().split(), "the image never carries a .env"


# The secrets each service holds (secrets/<service>.env): only what it uses.
SERVICE_SECRETS = {
    "api": {"REDIS_URL", "PHI_HMAC_KEY", "PHI_ENCRYPTION_KEYS", "METRICS_TOKEN", "AUDIT_RECORD_KEY"},
    "worker": {"REDIS_URL", "PHI_HMAC_KEY", "PHI_ENCRYPTION_KEYS", "TEBRA_PASSWORD", "TEBRA_CUSTOMER_KEY"},
    "beat": {"REDIS_URL"},
    "flower": {"REDIS_URL", "FLOWER_USER", "FLOWER_PASSWORD"},
    "audit": {"REDIS_URL", "AUDIT_SIGNING_KEY", "AUDIT_RECORD_KEY"},
}


def test_each_service_gets_only_its_own_secrets(compose: dict[str, Any]) -> None:
    """Every container used to get every secret (one env_file); a broken-into beat held the PHI keys."""
    for name, expected in SERVICE_SECRETS.items():
        files = [entry["path"] for entry in compose["services"][name]["env_file"]]
        assert files == [".env", f"secrets/{name}.env"], name
        example = (ROOT / f"secrets/{name}.env.example").read_text()
        held = set(re.findall(r"^([A-Z][A-Z0-9_]+)=", example, flags=re.MULTILINE))
        assert held == expected, name
        assert held <= set(setting_names())
    assert "env_file" not in compose["services"]["redis"]
    ignored = (ROOT / ".gitignore").read_text().split()
    assert "secrets/*" in ignored and "secrets" in (ROOT / ".dockerignore").read_text().split()


def test_redis_requires_a_user_per_service_and_no_url_is_pinned(compose: dict[str, Any]) -> None:
    redis_service = compose["services"]["redis"]
    command = redis_service["command"]
    assert command[command.index("--aclfile") + 1] == "/run/secrets/redis_acl"
    assert redis_service["secrets"] == ["redis_acl"]
    acl = (ROOT / "secrets/redis.acl.example").read_text().splitlines()
    assert "user default off" in acl
    for name in SERVICE_SECRETS:
        line = next(line for line in acl if line.startswith(f"user {name} on >"))
        assert "-@admin" in line and "-flushall" in line, name
    for name, service in project_services(compose).items():
        assert "REDIS_URL" not in (service.get("environment") or {}), (
            f"{name}: REDIS_URL comes with its password"
        )


def test_every_service_has_a_healthcheck(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        check = service.get("healthcheck") or {}
        assert check.get("test") and check["test"][0] in {"CMD", "CMD-SHELL"}, f"{name}: no healthcheck"
        assert "interval" in check and "retries" in check, f"{name}: healthcheck without timing"


def test_dependencies_wait_until_healthy(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in ("api", "worker", "beat", "flower", "audit"):
        depends = services[name].get("depends_on") or {}
        assert "redis" in depends, f"{name} needs redis"
        for target, rule in depends.items():
            assert target in services, f"{name} depends on unknown {target}"
            assert rule == {"condition": "service_healthy"}, f"{name} -> {target}: {rule}"
    assert "tebra-sim" not in services["worker"]["depends_on"], "the simulator runs in the dev profile only"


def test_nothing_starts_without_app_env_and_the_simulator_is_dev_only(compose: dict[str, Any]) -> None:
    for name, service in project_services(compose).items():
        if name == "tebra-sim":
            assert service["profiles"] == ["dev"], "the simulator (an open admin API) only in the dev profile"
            continue
        assert "profiles" not in service, f"{name} runs in every profile"
        assert service["environment"]["APP_ENV"].startswith("${APP_ENV:?"), f"{name}: APP_ENV is required"
    for name in ("worker", "beat", "api", "flower", "audit"):
        environment = compose["services"][name]["environment"]
        assert "TEBRA_WSDL_URL" not in environment, f"{name}: Tebra's URL comes from .env"


def test_redis_runs_with_the_settings_make_run_applies(compose: dict[str, Any]) -> None:
    command = compose["services"]["redis"]["command"]
    for flag in ("--appendonly", "--appendfsync", "--maxmemory-policy"):
        assert command[command.index(flag) + 1] == SERVER_ARGS[SERVER_ARGS.index(flag) + 1], flag
    assert any(volume.endswith(":/data") for volume in compose["services"]["redis"]["volumes"])


def test_ops_ports_are_published_on_loopback_only(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond this machine"


def test_the_worker_may_finish_its_task_before_it_is_killed(compose: dict[str, Any]) -> None:
    from config import Settings

    grace = compose["services"]["worker"]["stop_grace_period"]
    seconds = int(re.fullmatch(r"(\d+)s", grace).group(1))  # type: ignore[union-attr]
    assert seconds > Settings.task_time_limit_s


def test_the_image_is_python_311_slim_and_runs_as_a_user() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim\b", dockerfile, re.M)
    users = re.findall(r"^USER (\S+)", dockerfile, re.M)
    assert users and users[-1] not in {"root", "0"}
    assert re.search(r"pip install \.", dockerfile), "the image installs the project"
