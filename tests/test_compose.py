"""docker-compose.yml and the Dockerfile, checked without Docker against the code they run.

Docker cannot run everywhere the tests do, so the structure is read with PyYAML and everything
the containers hand to our code is checked against that code: each `command` is parsed by the
real `recmimic` command line (an unknown option or a bad value fails here, not at deploy time),
and each environment variable must be one the settings classes read, with a value they accept.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import typer
import yaml
from pydantic import AliasChoices
from pydantic_settings import BaseSettings

from service.cli import app
from service.settings import ServiceSettings
from teacher_mock.settings import TeacherSettings

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
DOCKERFILE = (ROOT / "Dockerfile").read_text()
WORKERS = ("worker", "worker-cpu")
OURS = ("teacher", "api", *WORKERS)  # the services running the recmimic image
SETTINGS: dict[str, type[BaseSettings]] = {
    "teacher": TeacherSettings,
    "api": ServiceSettings,
    "worker": ServiceSettings,
    "worker-cpu": ServiceSettings,
}
# ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?message}, ${VAR?message}
VARIABLE = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")
SECRET_NAME = re.compile(r"KEY|PASSWORD|SECRET|TOKEN")
PLACEHOLDER = "placeholder"


def interpolate(value: str) -> str:
    """The value compose would use with nothing set: defaults taken, required ones filled."""
    if "$$" in value:
        return value.replace("$$", "$")  # escaped: left for the container's shell

    def substitute(match: re.Match[str]) -> str:
        op = match.group("op") or ""
        return match.group("arg") if op.endswith("-") else PLACEHOLDER

    return VARIABLE.sub(substitute, value)


def parse_command(args: list[str]) -> typer.Context:
    """Parse `recmimic ARGS` with the real CLI, without running it: bad input raises.

    Typer builds on its own copy of click, so its classes are used: groups are `TyperGroup`,
    and a usage error (unknown option, bad value) is a `typer.TyperException`.
    """
    command = typer.main.get_command(app)
    parent = typer.Context(command, info_name="recmimic")
    while isinstance(command, typer.core.TyperGroup):
        name, *args = args
        sub = command.get_command(parent, name)
        assert sub is not None, f"recmimic has no command {name!r}"
        command = sub
        if isinstance(command, typer.core.TyperGroup):
            parent = typer.Context(command, info_name=name, parent=parent)
    return command.make_context(command.name, list(args), parent=parent)


def env_names(settings: type[BaseSettings]) -> set[str]:
    """Every variable the settings class reads: its prefix and field names, or a field's aliases."""
    prefix = settings.model_config.get("env_prefix", "")
    names = set()
    for name, field in settings.model_fields.items():
        alias = field.validation_alias
        if isinstance(alias, AliasChoices):
            names.update(choice for choice in alias.choices if isinstance(choice, str))
        elif isinstance(alias, str):
            names.add(alias)
        else:
            names.add(f"{prefix}{name}".upper())
    return names


def environment(service: str) -> dict[str, str]:
    return {name: str(value) for name, value in SERVICES[service].get("environment", {}).items()}


def mounts(service: str) -> Iterator[tuple[str, str]]:
    """(source, target) of the service's volumes in short syntax."""
    for volume in SERVICES[service].get("volumes", []):
        source, target, *_ = volume.split(":")
        yield source, target


def test_the_stack_has_its_services_each_with_a_health_check() -> None:
    assert {"redis", "postgres", "teacher", "api", "worker", "worker-cpu"} <= set(SERVICES)
    for name, service in SERVICES.items():
        assert service.get("healthcheck", {}).get("test"), f"{name} has no health check"
    probes = {name: json.dumps(SERVICES[name]["healthcheck"]["test"]) for name in SERVICES}
    assert "redis-cli ping" in " ".join(SERVICES["redis"]["healthcheck"]["test"])
    assert "pg_isready" in probes["postgres"]
    assert "/healthz" in probes["teacher"]
    assert "/readyz" in probes["api"]


@pytest.mark.parametrize("name", ["teacher", "api"])
def test_health_checks_and_ports_use_the_port_the_command_listens_on(name: str) -> None:
    port = parse_command(SERVICES[name]["command"]).params["port"]
    assert f"127.0.0.1:{port}/" in json.dumps(SERVICES[name]["healthcheck"]["test"])
    published = [str(p).rsplit(":", 1)[-1] for p in SERVICES[name].get("ports", [])]
    assert published == [str(port)]


def test_services_wait_for_healthy_dependencies() -> None:
    for name in ("api", *WORKERS):
        depends = SERVICES[name]["depends_on"]
        assert {"postgres", "redis"} <= set(depends), name
        for dependency, rule in depends.items():
            assert rule == {"condition": "service_healthy"}, f"{name} -> {dependency}"
    for name in WORKERS:  # the API migrates the schema before workers start claiming
        assert "api" in SERVICES[name]["depends_on"]


def test_data_lives_in_declared_named_volumes_shared_where_paths_are_shared() -> None:
    declared = set(COMPOSE["volumes"])
    for name in SERVICES:
        for source, _ in mounts(name):
            assert source in declared, f"{name} mounts {source!r}, not a declared named volume"
    assert dict(mounts("postgres"))["postgres"] == "/var/lib/postgresql/data"
    # Students are stored as paths under the home: the API reads what the workers wrote.
    for name in ("api", *WORKERS):
        home = interpolate(environment(name)["RECMIMIC_HOME"])
        assert dict(mounts(name)).get("data") == home, name


def test_the_worker_reserves_a_gpu_and_a_cpu_worker_stands_by() -> None:
    devices = SERVICES["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    assert SERVICES["worker"]["profiles"] == ["gpu"]
    cpu = SERVICES["worker-cpu"]
    assert cpu["profiles"] == ["cpu"] and "deploy" not in cpu
    assert cpu["command"] == SERVICES["worker"]["command"]
    assert interpolate(environment("worker-cpu")["RECMIMIC_WORKER_DEVICE"]) == "cpu"
    # The GPU image is the same Dockerfile built against CUDA wheels.
    gpu_index = interpolate(SERVICES["worker"]["build"]["args"]["TORCH_INDEX"])
    assert re.search(r"/whl/cu\d+$", gpu_index), gpu_index


def test_no_secret_is_written_into_the_file() -> None:
    for name in SERVICES:
        for variable, value in environment(name).items():
            if SECRET_NAME.search(variable):
                match = VARIABLE.fullmatch(value)
                assert match and (match.group("op") or "?").endswith("?"), (name, variable)
            password = urlsplit(value).password if "://" in value else None
            if password is not None:
                match = VARIABLE.fullmatch(password)
                assert match and (match.group("op") or "?").endswith("?"), (name, variable)


def test_a_bad_command_fails_to_parse() -> None:
    """The check below is real: the parser refuses what `recmimic` would refuse."""
    with pytest.raises(typer.TyperException, match="No such option"):
        parse_command(["serve", "--no-such-option"])
    with pytest.raises(typer.BadParameter):
        parse_command(["worker", "--poll-s", "0"])
    with pytest.raises(typer.TyperException, match="unexpected extra argument"):
        parse_command(["teacher", "serve", "extra"])
    with pytest.raises(AssertionError):
        parse_command(["no-such-command"])


def test_each_command_is_one_the_cli_accepts() -> None:
    teacher = parse_command(SERVICES["teacher"]["command"])
    assert teacher.parent is not None and teacher.parent.info_name == "teacher"
    assert teacher.info_name == "serve" and teacher.params["host"] == "0.0.0.0"
    assert teacher.params["model"] == Path("/models/teacher")
    assert dict(mounts("teacher")).get("models") == "/models"
    api = parse_command(SERVICES["api"]["command"])
    assert api.info_name == "serve" and api.params["worker"] is False
    assert api.params["host"] == "0.0.0.0"
    for name in WORKERS:
        assert parse_command(SERVICES[name]["command"]).info_name == "worker"


@pytest.mark.parametrize("name", OURS)
def test_environment_is_read_by_the_settings_classes(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every variable is a setting by its real name, and its value with defaults validates."""
    settings = SETTINGS[name]
    env = environment(name)
    unknown = set(env) - env_names(settings)
    assert not unknown, f"{name}: {sorted(unknown)} are not read by {settings.__name__}"
    for variable in [v for v in os.environ if v.startswith("RECMIMIC_")]:
        monkeypatch.delenv(variable)
    for variable, value in env.items():
        monkeypatch.setenv(variable, interpolate(value))
    given: dict[str, Any] = {"_env_file": None}
    if settings is TeacherSettings:
        given["model_dir"] = parse_command(SERVICES[name]["command"]).params["model"]
    loaded = settings(**given)
    if isinstance(loaded, ServiceSettings):
        assert loaded.database().startswith("postgresql+psycopg://")
        assert loaded.redis_url == "redis://redis:6379/0"


def test_the_image_installs_cpu_torch_first_then_the_project_as_recmimic() -> None:
    lines = [line.strip() for line in DOCKERFILE.replace("\\\n", " ").splitlines()]
    runs = [line for line in lines if line.startswith("RUN ")]
    torch_at = next(i for i, line in enumerate(runs) if "torch==2.13.0" in line)
    project_at = next(i for i, line in enumerate(runs) if re.search(r"pip install \.(\s|$)", line))
    assert torch_at < project_at
    assert '--index-url "${TORCH_INDEX}"' in runs[torch_at]
    assert "ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu" in lines
    assert "FROM python:3.11-slim" in lines
    entrypoint = next(line for line in lines if line.startswith("ENTRYPOINT "))
    assert json.loads(entrypoint.removeprefix("ENTRYPOINT ")) == ["recmimic"]
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users and users[-1] not in ("root", "0")


def test_the_image_copies_every_package_the_project_installs() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "recmimic" in pyproject["project"]["scripts"]
    copied = {line.split()[1] for line in DOCKERFILE.splitlines() if line.startswith("COPY ")}
    for pattern in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]:
        assert pattern.rstrip("*") in copied, pattern
