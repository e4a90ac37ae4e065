"""Settings are validated at start-up: a bad value stops OpsDash with a message naming the variable."""
from __future__ import annotations

import os
import secrets
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from argon2 import extract_parameters
from argon2.profiles import CHEAPEST, RFC_9106_LOW_MEMORY

from data import ConfigError
from data.settings import MAKE_COOKIE_SECRET

from .helpers.servers import run_opsdash

ROOT = Path(__file__).resolve().parents[1]


def config_error_of(settings_from, variable: str, value: str) -> str:
    """The message of the ConfigError that ``variable=value`` (alone in the environment, no .env) must raise."""
    with pytest.raises(ConfigError) as caught:
        settings_from(**{variable: value})
    return str(caught.value)


@pytest.mark.parametrize("variable,value", [
    ("OPSDASH_DATABASE_URL", "not a url"),
    ("OPSDASH_DATABASE_URL", "::"),
    ("OPSDASH_DATABASE_URL", "mysql://u@h/db"),
    ("OPSDASH_DATABASE_URL", "postgresql+asyncpg://u@h/db"),
    ("OPSDASH_DATABASE_URL", "postgresql+psycopg://u@h:notaport/db"),
    ("OPSDASH_TIMEZONE", "Mars/Olympus_Mons"),
    ("OPSDASH_TIMEZONE", "../../etc/passwd"),
    ("OPSDASH_TIMEZONE", "Africa/johannesburg "),
    ("OPSDASH_LIVE_INTERVAL_MS", "fast"),
    ("OPSDASH_LIVE_INTERVAL_MS", "1e3"),
    ("OPSDASH_LIVE_INTERVAL_MS", "0"),
    ("OPSDASH_LIVE_INTERVAL_MS", "-500"),
    ("OPSDASH_LIVE_INTERVAL_MS", "99999999999"),
    ("OPSDASH_REDIS_URL", "http://127.0.0.1:6379/0"),
    ("OPSDASH_REDIS_URL", "127.0.0.1:6379"),
    ("OPSDASH_REDIS_URL", "redis://127.0.0.1:port/0"),
    ("OPSDASH_REDIS_URL", "redis://127.0.0.1:70000/0"),
    ("OPSDASH_REDIS_URL", "redis://127.0.0.1:6379/zero"),
    ("OPSDASH_LOGIN_MAX_ATTEMPTS", "many"),
    ("OPSDASH_SESSION_HOURS", "0"),
    ("OPSDASH_SESSION_HOURS", "forever"),
    ("OPSDASH_HTTPS", "maybe"),
    ("OPSDASH_METRICS_TOKEN", "short"),
    ("OPSDASH_LOG_LEVEL", "loud"),
    ("OPSDASH_DEMO", "perhaps"),
    ("OPSDASH_FAST_PASSWORD_HASH", "2"),
    ("OPSDASH_LARGE_EXPORT_ROWS", "lots"),
    ("OPSDASH_LOGIN_WINDOW_S", "0"),
])
def test_a_bad_setting_raises_config_error_naming_the_variable(settings_from, variable, value):
    message = config_error_of(settings_from, variable, value)
    assert message.startswith(variable) and len(message.splitlines()) == 1, message


def test_a_bad_setting_is_one_sentence_saying_what_is_expected_and_what_was_given(settings_from):
    assert config_error_of(settings_from, "OPSDASH_SESSION_HOURS", "abc") == (
        "OPSDASH_SESSION_HOURS must be a whole number, got 'abc'")
    assert config_error_of(settings_from, "OPSDASH_SESSION_HOURS", "9999") == (
        "OPSDASH_SESSION_HOURS must be between 1 and 720, got '9999'")
    assert config_error_of(settings_from, "OPSDASH_HTTPS", "maybe") == (
        "OPSDASH_HTTPS must be 1/true/yes/on or 0/false/no/off, got 'maybe'")


def test_every_bad_variable_is_named_in_one_line(settings_from):
    with pytest.raises(ConfigError) as caught:
        settings_from(OPSDASH_SESSION_HOURS="abc", OPSDASH_LIVE_INTERVAL_MS="fast")
    message = str(caught.value)
    assert "OPSDASH_SESSION_HOURS" in message and "OPSDASH_LIVE_INTERVAL_MS" in message and "\n" not in message


@pytest.mark.parametrize("variable,value", [
    ("OPSDASH_DATABASE_URL", "postgresql+psycopg://opsdash:hunter2-secret@db.example:notaport/ops"),
    ("OPSDASH_REDIS_URL", "redis://:hunter2-secret@cache.example:port/0"),
    ("OPSDASH_REDIS_URL", "http://:hunter2-secret@cache.example:6379/0"),
])
def test_config_errors_never_echo_a_password(settings_from, variable, value):
    message = config_error_of(settings_from, variable, value)
    assert "hunter2-secret" not in message and variable in message


def test_good_values_and_defaults_are_accepted(settings_from):
    defaults = settings_from()
    assert defaults.database_url.startswith("sqlite:///") and defaults.timezone == "Africa/Johannesburg"
    assert defaults.live_interval_ms == 500 and defaults.redis_url is None and defaults.cookie_secret is None
    assert (defaults.log_level, defaults.demo, defaults.fast_password_hash) == ("INFO", False, False)
    custom = settings_from(
        OPSDASH_DATABASE_URL="postgresql://u@h/db", OPSDASH_REDIS_URL="redis://:pw@127.0.0.1:6379/2",
        OPSDASH_TIMEZONE="UTC", OPSDASH_LIVE_INTERVAL_MS="250", OPSDASH_ALLOWED_ORIGINS="a.example, b:8080,",
        OPSDASH_LOG_LEVEL="warning", OPSDASH_NOTEBOOK_USER="analyst.one",
    )
    assert custom.database_url == "postgresql+psycopg://u@h/db"  # the driver we ship
    assert (custom.timezone, custom.live_interval_ms) == ("UTC", 250)
    assert custom.allowed_origins == ("a.example", "b:8080")
    assert (custom.log_level, custom.notebook_user) == ("WARNING", "analyst.one")
    assert "pw" not in str(custom.describe()) and "pw" not in repr(custom)


def test_an_empty_variable_means_the_default(settings_from):
    assert settings_from(OPSDASH_LIVE_INTERVAL_MS="", OPSDASH_REDIS_URL="").live_interval_ms == 500


def test_settings_are_read_once_per_process_until_reset(monkeypatch):
    from dashboard_app import settings as settings_module

    monkeypatch.setenv("OPSDASH_LIVE_INTERVAL_MS", "700")
    settings_module.reset()
    try:
        assert settings_module.get_settings().live_interval_ms == 700
        monkeypatch.setenv("OPSDASH_LIVE_INTERVAL_MS", "800")
        assert settings_module.get_settings().live_interval_ms == 700  # cached: read at start-up
        settings_module.reset()
        assert settings_module.get_settings().live_interval_ms == 800
    finally:
        monkeypatch.undo()
        settings_module.reset()


def test_dotenv_is_read_and_the_environment_wins(settings_from, tmp_path):
    dotenv = tmp_path / ".env"
    dotenv.write_text("# local\nOPSDASH_TIMEZONE='UTC'\nexport OPSDASH_LIVE_INTERVAL_MS=750\n\nnot a line\n"
                      "OPSDASH_SESSION_HOURS=8 # comment\nOTHER_TOOL=x\n")
    from_file = settings_from(dotenv=dotenv)
    assert (from_file.timezone, from_file.live_interval_ms, from_file.session_hours) == ("UTC", 750, 8)
    assert settings_from(dotenv=dotenv, OPSDASH_TIMEZONE="Africa/Johannesburg").timezone == "Africa/Johannesburg"
    assert settings_from(dotenv=dotenv, OPSDASH_LIVE_INTERVAL_MS="").live_interval_ms == 750  # empty counts as unset
    dotenv.write_text("OPSDASH_TIMEZONE=Nowhere/Land\n")
    with pytest.raises(ConfigError, match="OPSDASH_TIMEZONE"):
        settings_from(dotenv=dotenv)


def assert_one_line_error(result, *fragments: str) -> None:
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("opsdash: error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def checkout_with_examples(root, project_name: str = "opsdash"):
    """A folder with a pyproject.toml naming ``project_name`` and an ``examples/`` inside it."""
    (root / "pyproject.toml").write_text(f'[project]\nname = "{project_name}"\n', encoding="utf-8")
    (root / "examples").mkdir()
    return root


def test_default_database_is_the_checkouts_var_from_any_folder_of_the_checkout(settings_from, tmp_path, monkeypatch):
    checkout = checkout_with_examples(tmp_path)
    for folder in (checkout, checkout / "examples"):
        monkeypatch.chdir(folder)
        assert settings_from().database_url == f"sqlite:///{checkout / 'var' / 'opsdash.sqlite3'}"


def test_outside_an_opsdash_checkout_the_default_database_is_under_the_working_folder(settings_from, tmp_path,
                                                                                      monkeypatch):
    """Installed use: someone else's project (or none) around the working folder; ./var of that folder."""
    someone_elses = checkout_with_examples(tmp_path, project_name="water-analysis")
    monkeypatch.chdir(someone_elses / "examples")
    expected = someone_elses / "examples" / "var" / "opsdash.sqlite3"
    assert settings_from().database_url == f"sqlite:///{expected}"


def test_database_url_setting_overrides_the_checkout_default(settings_from, tmp_path, monkeypatch):
    monkeypatch.chdir(checkout_with_examples(tmp_path) / "examples")
    chosen = "sqlite:///elsewhere/opsdash.sqlite3"
    assert settings_from(OPSDASH_DATABASE_URL=chosen).database_url == chosen


def test_the_checkouts_dotenv_is_read_from_any_folder_of_the_checkout(settings_from, tmp_path, monkeypatch):
    checkout = checkout_with_examples(tmp_path)
    (checkout / ".env").write_text("OPSDASH_TIMEZONE=UTC\n", encoding="utf-8")
    monkeypatch.chdir(checkout / "examples")
    assert settings_from(dotenv="home").timezone == "UTC"


def test_serve_refuses_to_start_without_a_cookie_secret(tmp_path):
    result = run_opsdash("serve", "--port", "1", database_url=f"sqlite:///{tmp_path / 'x.sqlite3'}", cwd=tmp_path,
                         timeout=60)
    assert_one_line_error(result, "OPSDASH_COOKIE_SECRET is not set", "refusing to start", MAKE_COOKIE_SECRET)
    assert not (tmp_path / "x.sqlite3").exists()  # refused before touching anything


@pytest.mark.parametrize("secret", ["hunter2", "7" * 31, "\u00e9" * 31, "a-31-character-secret-abcdefghi"])
def test_a_cookie_secret_shorter_than_32_characters_is_refused_with_how_to_make_one(settings_from, secret):
    with pytest.raises(ConfigError) as caught:
        settings_from(OPSDASH_COOKIE_SECRET=secret)
    message = str(caught.value)
    assert "OPSDASH_COOKIE_SECRET" in message and "at least 32" in message and MAKE_COOKIE_SECRET in message
    assert secret not in message  # the secret itself is never echoed


def test_a_cookie_secret_of_32_characters_or_more_is_accepted(settings_from):
    for secret in ("x" * 32, secrets.token_urlsafe(48)):
        assert settings_from(OPSDASH_COOKIE_SECRET=secret).cookie_secret == secret


def test_the_made_cookie_secret_command_prints_a_secret_that_is_accepted(settings_from):
    made = subprocess.run(shlex.split(MAKE_COOKIE_SECRET.replace("python", sys.executable, 1)),
                          capture_output=True, text=True, check=True).stdout.strip()
    assert len(made) >= 32 and settings_from(OPSDASH_COOKIE_SECRET=made).cookie_secret == made


def test_a_local_demo_is_exempt_from_the_cookie_secret_length(settings_from):
    settings = settings_from(OPSDASH_COOKIE_SECRET="short", OPSDASH_DEMO="1")
    assert settings.cookie_secret == "short" and settings.demo


def test_serve_refuses_to_start_with_a_short_cookie_secret(tmp_path):
    result = run_opsdash("serve", "--port", "1", database_url=f"sqlite:///{tmp_path / 'x.sqlite3'}", cwd=tmp_path,
                         timeout=60, OPSDASH_COOKIE_SECRET="changeme")
    assert_one_line_error(result, "OPSDASH_COOKIE_SECRET is too short", MAKE_COOKIE_SECRET)
    assert "changeme" not in result.stderr and not (tmp_path / "x.sqlite3").exists()


@pytest.mark.parametrize("command", [("init-db",), ("seed", "--tickets", "1"), ("serve", "--port", "1")])
@pytest.mark.parametrize("variable,value", [
    ("OPSDASH_TIMEZONE", "Mars/Olympus_Mons"),
    ("OPSDASH_DATABASE_URL", "mysql://u@h/db"),
    ("OPSDASH_LIVE_INTERVAL_MS", "fast"),
    ("OPSDASH_REDIS_URL", "http://127.0.0.1:6379/0"),
])
def test_cli_prints_a_bad_setting_as_one_line_not_a_traceback(tmp_path, command, variable, value):
    settings = {variable: value, "OPSDASH_COOKIE_SECRET": "s" * 32}
    db_url = None if variable == "OPSDASH_DATABASE_URL" else f"sqlite:///{tmp_path / 'x.sqlite3'}"
    result = run_opsdash(*command, database_url=db_url, cwd=tmp_path, timeout=60, **settings)
    assert_one_line_error(result, variable)


def test_cli_reports_an_unreachable_database_in_one_line(tmp_path):
    # Port 1 on loopback: nothing listens there, so the connection is refused at once.
    result = run_opsdash("init-db", database_url="postgresql+psycopg://postgres@127.0.0.1:1/nowhere", cwd=tmp_path,
                         timeout=60)
    assert_one_line_error(result, "database cannot be used", "OPSDASH_DATABASE_URL")


def test_a_bad_setting_in_dotenv_is_reported_by_the_cli(tmp_path):
    (tmp_path / ".env").write_text("OPSDASH_LIVE_INTERVAL_MS=soon\n")
    result = run_opsdash("init-db", database_url=f"sqlite:///{tmp_path / 'x.sqlite3'}", cwd=tmp_path, timeout=60)
    assert_one_line_error(result, "OPSDASH_LIVE_INTERVAL_MS")


def test_session_https_and_operator_token_settings_have_safe_defaults(settings_from):
    settings = settings_from()
    assert (settings.session_hours, settings.https, settings.metrics_token) == (12, False, None)
    chosen = settings_from(OPSDASH_SESSION_HOURS="8", OPSDASH_HTTPS="true", OPSDASH_METRICS_TOKEN="t" * 32)
    assert (chosen.session_hours, chosen.https, chosen.metrics_token) == (8, True, "t" * 32)
    assert "t" * 32 not in repr(chosen) and chosen.describe()["metrics_token"] == "set"


def test_cookies_get_secure_only_when_the_site_is_served_over_https():
    from dashboard_app.web_headers import harden_cookie

    plain = harden_cookie('user="2|1:0|x"; expires=Tue, 01 Dec 2026 08:12:06 GMT; Path=/', secure=False)
    assert "HttpOnly" in plain and "SameSite=Lax" in plain and "Secure" not in plain
    assert "Secure" in harden_cookie("user=x; Path=/", secure=True)
    assert "SameSite=Strict" in harden_cookie("a=b; SameSite=Strict", secure=False)


@pytest.mark.parametrize("fast,memory_cost", [("1", CHEAPEST.memory_cost), ("", RFC_9106_LOW_MEMORY.memory_cost)])
def test_password_hash_profile_follows_the_setting_read_at_first_use_not_import(tmp_path, fast, memory_cost):
    """In a process of its own: the hasher is made once per process, from the settings."""
    script = ("import os, sys; from data.users import hash_password; "
              "os.environ['OPSDASH_FAST_PASSWORD_HASH'] = sys.argv[1]; print(hash_password('a-long-password'))")
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPSDASH_")}
    made = subprocess.run([sys.executable, "-c", script, fast], capture_output=True, text=True, check=True,
                          cwd=tmp_path, env={**env, "PYTHONPATH": str(ROOT)}).stdout.strip()
    assert extract_parameters(made).memory_cost == memory_cost
