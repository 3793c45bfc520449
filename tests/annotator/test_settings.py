"""Settings from the environment: typed, loud on bad values, production check passes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from annotator.env import SettingError, env_bool, env_int, env_list, env_str

ROOT = Path(__file__).resolve().parents[2]


def test_env_helpers_parse_and_refuse(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("X_BOOL", "yes")
    monkeypatch.setenv("X_INT", "42")
    monkeypatch.setenv("X_LIST", "a, b,,c")
    assert env_bool("X_BOOL", False) is True
    assert env_int("X_INT", 0) == 42
    assert env_list("X_LIST", []) == ["a", "b", "c"]
    monkeypatch.setenv("X_BOOL", "maybe")
    with pytest.raises(SettingError, match="X_BOOL"):
        env_bool("X_BOOL", False)
    monkeypatch.setenv("X_INT", "4k")
    with pytest.raises(SettingError, match="X_INT"):
        env_int("X_INT", 0)
    secret = tmp_path / "secret"
    secret.write_text("from-a-file\n")
    monkeypatch.setenv("X_SECRET_FILE", str(secret))
    assert env_str("X_SECRET") == "from-a-file"


def manage(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {
        k: v
        for k, v in os.environ.items()
        if k not in {"DATABASE_URL", "CELERY_BROKER_URL", "REDIS_URL", "DEBUG"}
    }
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_production_settings_pass_the_deploy_check(tmp_path: Path) -> None:
    production = {
        "MASKLOOP_DATA_DIR": str(tmp_path),
        "SECRET_KEY": "x" * 20 + "a-long-random-production-secret-key-0123456789",
        "ALLOWED_HOSTS": "maskloop.example.org",
        "CSRF_TRUSTED_ORIGINS": "https://maskloop.example.org",
        "MASKLOOP_HTTPS": "true",
        "MASKLOOP_BEHIND_PROXY": "true",
        "DATABASE_URL": "postgres://maskloop@db.example.org:5432/maskloop",
        "CELERY_BROKER_URL": "redis://redis.example.org:6379/0",
        "REDIS_URL": "redis://redis.example.org:6379/1",
    }
    result = manage(["check", "--deploy", "--fail-level", "WARNING"], production)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_local_defaults_do_not_pass_as_production(tmp_path: Path) -> None:
    result = manage(
        ["check", "--deploy", "--fail-level", "WARNING"], {"MASKLOOP_DATA_DIR": str(tmp_path)}
    )
    assert result.returncode != 0
    assert "SECURE_SSL_REDIRECT" in result.stderr + result.stdout


def test_a_bad_value_stops_the_start(tmp_path: Path) -> None:
    result = manage(["check"], {"MASKLOOP_DATA_DIR": str(tmp_path), "DEBUG": "perhaps"})
    assert result.returncode != 0
    assert "DEBUG='perhaps' is not a boolean" in result.stderr


def test_the_secret_key_is_generated_once_and_kept(tmp_path: Path) -> None:
    env = {"MASKLOOP_DATA_DIR": str(tmp_path)}
    env_no_key = {**env, "SECRET_KEY": ""}
    assert manage(["check"], env_no_key).returncode == 0
    key = (tmp_path / "secret_key").read_text()
    assert len(key) > 40
    assert manage(["check"], env_no_key).returncode == 0
    assert (tmp_path / "secret_key").read_text() == key
    assert oct((tmp_path / "secret_key").stat().st_mode & 0o777) == "0o600"
