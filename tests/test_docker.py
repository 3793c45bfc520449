"""docker/: what can be checked without building an image (no registry is reachable here).

The compose file parses and names targets that the Dockerfile has; every command the images
run exists here and starts (``--help``) with every option it is given; every variable that
the settings read is in .env.example and in docs/configuration.md; and the production
settings check passes with .env.example's values (secrets filled in)."""

from __future__ import annotations

import ast
import json
import os
import re
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
VENV_BIN = Path(sys.executable).parent
ENV_FUNCTIONS = {"env_str", "env_bool", "env_int", "env_list"}


def compose() -> dict[str, Any]:
    return dict(yaml.safe_load((DOCKER / "compose.yaml").read_text()))


def dockerfile_stages() -> dict[str, list[str]]:
    """Each stage's name and the CMD it ends with (JSON form)."""
    stages: dict[str, list[str]] = {}
    current = None
    for line in (DOCKER / "Dockerfile").read_text().splitlines():
        match = re.match(r"FROM\s+\S+\s+AS\s+([\w-]+)", line, re.IGNORECASE)
        if match:
            current = match.group(1)
            stages[current] = []
        elif line.startswith("CMD ") and current:
            stages[current] = json.loads(line[4:])
    return stages


def settings_variables() -> set[str]:
    """Names the settings module reads from the environment (helpers and os.environ)."""
    names = set()
    for node in ast.walk(ast.parse((ROOT / "annotator" / "settings.py").read_text())):
        first = None
        if isinstance(node, ast.Call) and node.args:
            func = node.func
            helper = isinstance(func, ast.Name) and func.id in ENV_FUNCTIONS
            environ = isinstance(func, ast.Attribute) and (
                func.attr == "getenv"
                or (func.attr == "get" and ast.unparse(func.value) == "os.environ")
            )
            if helper or environ:
                first = node.args[0]
        elif isinstance(node, ast.Subscript) and ast.unparse(node.value) == "os.environ":
            first = node.slice
        if isinstance(first, ast.Constant) and isinstance(first.value, str):
            names.add(first.value)
    return names


def env_example() -> dict[str, str]:
    """The active assignments of .env.example, ${VAR} expanded as compose does."""
    values: dict[str, str] = {}
    for line in (DOCKER / ".env.example").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            values[name.strip()] = value.strip()
    for name, value in values.items():
        values[name] = re.sub(r"\$\{(\w+)\}", lambda m: values.get(m.group(1), ""), value)
    return values


def production_env(tmp_path: Path) -> dict[str, str]:
    filled = {
        name: (value or secrets.token_urlsafe(40))
        for name, value in env_example().items()
        if name.endswith(("SECRET_KEY", "PASSWORD", "_TOKEN")) or value
    }
    filled["DATABASE_URL"] = filled["DATABASE_URL"].replace("maskloop:@", "maskloop:pw@")
    clean = {
        k: v
        for k, v in os.environ.items()
        if k not in settings_variables() and not k.startswith(("MASKLOOP_", "AWS_", "CELERY_"))
    }
    return {
        **clean,
        **filled,
        "MASKLOOP_DATA_DIR": str(tmp_path / "data"),
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prometheus"),
    }


def test_the_compose_file_builds_targets_the_dockerfile_has() -> None:
    services = compose()["services"]
    stages = dockerfile_stages()
    assert {"web", "worker-cpu", "worker-gpu", "beat"} <= set(stages)
    built = {name: s["build"] for name, s in services.items() if "build" in s}
    assert {"web", "worker-cpu", "worker-gpu", "beat", "migrate"} <= set(built)
    for name, build in built.items():
        assert build["target"] in stages, f"{name} builds a target the Dockerfile lacks"
        assert (DOCKER / build["context"] / build["dockerfile"]).resolve() == (
            DOCKER / "Dockerfile"
        )
    assert {"postgres", "redis", "minio"} <= set(services)
    gpu = services["worker-gpu"]
    assert "CUDA_VERSION" in gpu["build"]["args"]
    assert gpu["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    text = (DOCKER / "Dockerfile").read_text()
    assert re.search(r"FROM nvidia/cuda:\$\{CUDA_VERSION\}", text)
    assert "download.pytorch.org/whl/cpu" in text and "download.pytorch.org/whl/${cuda_tag}" in text


def commands() -> list[tuple[str, list[str]]]:
    found = [(f"Dockerfile:{stage}", cmd) for stage, cmd in dockerfile_stages().items() if cmd]
    found += [
        (f"compose:{name}", service["command"])
        for name, service in compose()["services"].items()
        if "build" in service
    ]
    return found


@pytest.mark.parametrize(("where", "command"), commands(), ids=[w for w, _ in commands()])
def test_every_command_of_the_images_starts_here(
    where: str, command: list[str], tmp_path: Path
) -> None:
    """Run as the image runs it (its PATH is the venv), with --help: the program, its
    subcommand and every option it is given must exist."""
    program = VENV_BIN / command[0]
    assert program.exists(), f"{where}: {command[0]} is not installed"
    done = subprocess.run(
        [str(program), *command[1:], "--help"],
        cwd=ROOT,
        env={**production_env(tmp_path), "DJANGO_SETTINGS_MODULE": "annotator.settings"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, f"{where}: {done.stdout}\n{done.stderr}"
    top = subprocess.run(
        [str(program), "--help"], capture_output=True, text=True, timeout=120, cwd=ROOT
    ).stdout  # options before a subcommand (celery --app) are the program's own
    for option in (arg for arg in command[1:] if arg.startswith("--")):
        assert option in done.stdout + top, f"{where}: {option} is not an option of {command}"


def test_every_variable_the_settings_read_is_documented() -> None:
    variables = settings_variables()
    assert {"DATABASE_URL", "MASKLOOP_S3_BUCKET", "MASKLOOP_METRICS_TOKEN"} <= variables
    example = (DOCKER / ".env.example").read_text()
    listed = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", example, re.MULTILINE))
    assert variables - listed == set(), "missing from docker/.env.example"
    documented = set(
        re.findall(r"`([A-Z][A-Z0-9_]+)`", (ROOT / "docs/configuration.md").read_text())
    )
    assert variables - documented == set(), "missing from docs/configuration.md"


def test_the_production_check_passes_with_the_example_values(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=production_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    shown = subprocess.run(
        [
            sys.executable,
            "manage.py",
            "shell",
            "-c",
            "from django.conf import settings; print(settings.STORAGES['default']['BACKEND'], "
            "settings.DATABASES['default']['ENGINE'], settings.CHANNEL_LAYERS['default']['BACKEND'])",
        ],
        cwd=ROOT,
        env=production_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shown.stdout.strip().splitlines()[-1].split() == [
        "storages.backends.s3.S3Storage",
        "django.db.backends.postgresql",
        "channels_redis.core.RedisChannelLayer",
    ], shown.stderr
