import pytest

from sidecar.settings import Settings, SettingsError, load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("SIDECAR_"):
            monkeypatch.delenv(name)


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIDECAR_GATEWAY_URL", "http://gw:4000/")
    settings = load_settings()
    assert settings.provider_id == "litellm"
    assert settings.poll_interval == 30
    assert (settings.listen_host, settings.listen_port) == ("127.0.0.1", 4097)
    assert settings.opencode_port == 4096
    assert settings.reload == "auto"
    assert settings.gateways[0].api_base == "http://gw:4000/v1"


@pytest.mark.parametrize(
    ("name", "value", "fragment"),
    [
        ("SIDECAR_POLL_INTERVAL", "soon", "SIDECAR_POLL_INTERVAL"),
        ("SIDECAR_POLL_INTERVAL", "0", "SIDECAR_POLL_INTERVAL"),
        ("SIDECAR_LISTEN", "4097", "SIDECAR_LISTEN: must be HOST:PORT"),
        ("SIDECAR_LISTEN", "127.0.0.1:99999", "SIDECAR_LISTEN"),
        ("SIDECAR_OPENCODE_PORT", "0", "SIDECAR_OPENCODE_PORT"),
        ("SIDECAR_RELOAD", "sometimes", "SIDECAR_RELOAD"),
        ("SIDECAR_PROVIDER_ID", "Lite LLM", "SIDECAR_PROVIDER_ID"),
        ("SIDECAR_BASE_CONFIG", "/nonexistent/opencode.json", "SIDECAR_BASE_CONFIG: no such file"),
        ("SIDECAR_GATEWAY_URL", "not a url", "SIDECAR_GATEWAY_URL"),
        ("SIDECAR_HEADER_TIMEOUT", "0", "SIDECAR_HEADER_TIMEOUT"),
        ("SIDECAR_BODY_TIMEOUT", "-1", "SIDECAR_BODY_TIMEOUT"),
        ("SIDECAR_MAX_CONNECTIONS", "0", "SIDECAR_MAX_CONNECTIONS: must be at least 1"),
        ("SIDECAR_MAX_CONNECTIONS", "many", "SIDECAR_MAX_CONNECTIONS"),
        ("SIDECAR_GATEWAY_TOKEN", "short-token", "SIDECAR_GATEWAY_TOKEN: must be at least 32 characters"),
        ("SIDECAR_GATEWAY_IDLE_TIMEOUT", "0", "SIDECAR_GATEWAY_IDLE_TIMEOUT"),
    ],
)
def test_bad_value_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, fragment: str
) -> None:
    monkeypatch.setenv("SIDECAR_GATEWAY_URL", "http://gw:4000")
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    message = str(caught.value)
    assert fragment in message
    assert "\n" not in message


def test_missing_gateway_url_is_reported() -> None:
    with pytest.raises(SettingsError, match="SIDECAR_GATEWAY_URL: is required"):
        load_settings()


def test_key_in_url_is_refused_without_echoing_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIDECAR_GATEWAY_URL", "http://user:sk-very-secret@gw:4000")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert "sk-very-secret" not in str(caught.value)
    assert "SIDECAR_GATEWAY_URL" in str(caught.value)


def test_password_is_generated_once_per_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIDECAR_GATEWAY_URL", "http://gw:4000")
    monkeypatch.setenv("SIDECAR_GATEWAY_API_KEY", "sk-1")
    first = load_settings().with_password()
    second = load_settings().with_password()
    assert first.opencode_password is not None and second.opencode_password is not None
    assert first.opencode_password.get_secret_value() != second.opencode_password.get_secret_value()
    assert first.with_password() is first
    assert "sk-1" in first.secrets()
    assert "sk-1" not in repr(first)


def test_the_gateway_token_is_generated_once_per_start_unless_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIDECAR_GATEWAY_URL", "http://gw:4000")
    first, second = load_settings().with_gateway_token(), load_settings().with_gateway_token()
    assert first.gateway_token is not None and second.gateway_token is not None
    assert len(first.gateway_token.get_secret_value()) >= 32
    assert first.gateway_token.get_secret_value() != second.gateway_token.get_secret_value()
    assert first.with_gateway_token() is first
    assert first.gateway_token.get_secret_value() in first.secrets()  # scrubbed from logs
    given = "g" * 40
    monkeypatch.setenv("SIDECAR_GATEWAY_TOKEN", given)
    settings = load_settings().with_gateway_token()
    assert settings.gateway_token is not None and settings.gateway_token.get_secret_value() == given
    assert given not in repr(settings)


def test_the_gateway_token_is_not_the_api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIDECAR_GATEWAY_URL", "http://gw:4000")
    monkeypatch.setenv("SIDECAR_API_KEY", "k" * 40)
    monkeypatch.setenv("SIDECAR_GATEWAY_TOKEN", "k" * 40)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert "SIDECAR_GATEWAY_TOKEN: must not be the same as SIDECAR_API_KEY" in str(caught.value)
    assert "k" * 40 not in str(caught.value)


def test_default_model_joins_our_provider(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIDECAR_GATEWAY_URL", "http://gw:4000")
    monkeypatch.setenv("SIDECAR_DEFAULT_MODEL", "claude-sonnet-4-5")
    assert load_settings().default_model_ref() == "litellm/claude-sonnet-4-5"
    monkeypatch.setenv("SIDECAR_DEFAULT_MODEL", "litellm/openai/gpt-5")
    assert load_settings().default_model_ref() == "litellm/openai/gpt-5"


def test_opencode_directory_must_exist(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("SIDECAR_GATEWAY_URL", "http://gw:4000")
    monkeypatch.setenv("SIDECAR_OPENCODE_DIRECTORY", str(tmp_path / "missing"))
    with pytest.raises(SettingsError, match="SIDECAR_OPENCODE_DIRECTORY: no such directory"):
        load_settings()


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("{bad", "SIDECAR_MODEL_ALIASES: is not valid JSON"),
        ('{"sonnet": ""}', "SIDECAR_MODEL_ALIASES"),
        ('{"x": "{env:SIDECAR_GATEWAY_API_KEY}"}', "substitution"),
        ('["a"]', "SIDECAR_MODEL_ALIASES"),
    ],
)
def test_bad_aliases(monkeypatch: pytest.MonkeyPatch, value: str, fragment: str) -> None:
    monkeypatch.setenv("SIDECAR_GATEWAY_URL", "http://gw:4000")
    monkeypatch.setenv("SIDECAR_MODEL_ALIASES", value)
    with pytest.raises(SettingsError, match=fragment):
        load_settings()


def test_aliases_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIDECAR_GATEWAY_URL", "http://gw:4000")
    monkeypatch.setenv("SIDECAR_MODEL_ALIASES", '{"sonnet": "claude-sonnet-4-5"}')
    assert load_settings().model_aliases == {"sonnet": "claude-sonnet-4-5"}


KEY = "k" * 32


@pytest.mark.parametrize("key", ["name", "x" * 31, "s3cr3t-but-only-twenty-n"])
def test_a_short_api_key_is_refused_with_how_to_make_one(monkeypatch: pytest.MonkeyPatch, key: str) -> None:
    monkeypatch.setenv("SIDECAR_GATEWAY_URL", "http://gw:4000")
    monkeypatch.setenv("SIDECAR_API_KEY", key)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    message = str(caught.value)
    assert message.startswith("SIDECAR_API_KEY: ") and "32 characters" in message and "openssl rand -hex 32" in message
    assert key not in message and "\n" not in message


def test_a_key_of_32_characters_is_taken(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIDECAR_GATEWAY_URL", "http://gw:4000")
    monkeypatch.setenv("SIDECAR_API_KEY", KEY)
    assert load_settings().api_key.get_secret_value() == KEY


@pytest.mark.parametrize("listen", ["0.0.0.0:4097", "[::]:4097", "192.168.1.20:4097", "my-laptop:4097"])
def test_listening_beyond_loopback_needs_a_key(monkeypatch: pytest.MonkeyPatch, listen: str) -> None:
    monkeypatch.setenv("SIDECAR_GATEWAY_URL", "http://gw:4000")
    monkeypatch.setenv("SIDECAR_LISTEN", listen)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    message = str(caught.value)
    assert message.startswith("SIDECAR_API_KEY: is required to listen on ") and "\n" not in message
    assert "shell commands" in message and "openssl rand -hex 32" in message and "SIDECAR_LISTEN=127.0.0.1:4097" in message
    monkeypatch.setenv("SIDECAR_API_KEY", KEY)
    assert load_settings().listen == listen


@pytest.mark.parametrize("listen", ["127.0.0.1:4097", "127.0.0.2:4097", "localhost:4097", "[::1]:4097"])
def test_loopback_needs_no_key(monkeypatch: pytest.MonkeyPatch, listen: str) -> None:
    monkeypatch.setenv("SIDECAR_GATEWAY_URL", "http://gw:4000")
    monkeypatch.setenv("SIDECAR_LISTEN", listen)
    assert load_settings().api_key is None


def test_allowed_hosts_and_origins_are_comma_separated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIDECAR_GATEWAY_URL", "http://gw:4000")
    monkeypatch.setenv("SIDECAR_ALLOWED_HOSTS", " Sidecar.NS.svc, sidecar ,,[fd00::1]")
    monkeypatch.setenv("SIDECAR_ALLOWED_ORIGINS", "https://App.example.com:443,http://localhost:3000")
    settings = load_settings()
    assert settings.allowed_hosts == ("sidecar.ns.svc", "sidecar", "fd00::1")
    assert settings.allowed_origins == ("https://app.example.com", "http://localhost:3000")
    monkeypatch.delenv("SIDECAR_ALLOWED_HOSTS")
    monkeypatch.delenv("SIDECAR_ALLOWED_ORIGINS")
    assert load_settings().allowed_hosts == () and load_settings().allowed_origins == ()


@pytest.mark.parametrize(
    ("name", "value", "fragment"),
    [
        ("SIDECAR_ALLOWED_HOSTS", "sidecar:4097", "without a port"),
        ("SIDECAR_ALLOWED_HOSTS", "http://sidecar", "host names"),
        ("SIDECAR_ALLOWED_ORIGINS", "null", "any web page"),
        ("SIDECAR_ALLOWED_ORIGINS", "app.example.com", "scheme://host"),
        ("SIDECAR_ALLOWED_ORIGINS", "https://app.example.com/", "origins such as"),
    ],
)
def test_bad_allowed_entries_name_the_variable(monkeypatch: pytest.MonkeyPatch, name: str, value: str, fragment: str) -> None:
    monkeypatch.setenv("SIDECAR_GATEWAY_URL", "http://gw:4000")
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    message = str(caught.value)
    assert message.startswith(f"{name}: ") and fragment in message and "\n" not in message


def test_answers_are_redacted_of_what_the_sidecar_holds_not_of_the_callers_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIDECAR_GATEWAY_URL", "http://gw:4000")
    monkeypatch.setenv("SIDECAR_GATEWAY_API_KEY", "sk-gateway")
    monkeypatch.setenv("SIDECAR_OPENCODE_PASSWORD", "opencode-password")
    monkeypatch.setenv("SIDECAR_API_KEY", KEY)
    settings = load_settings()
    assert set(settings.held_secrets()) == {"sk-gateway", "opencode-password"}
    # Logs still scrub the key.
    assert set(settings.secrets()) == {"sk-gateway", "opencode-password", KEY}


def test_connection_bound_must_fit_the_open_file_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    from sidecar.http.connections import connections_that_fit, open_file_limits

    hard = open_file_limits()[1]
    streams = Settings.model_fields["max_streams"].default
    websockets = Settings.model_fields["max_websockets"].default
    monkeypatch.setenv("SIDECAR_GATEWAY_URL", "http://gw:4000")
    monkeypatch.setenv("SIDECAR_MAX_CONNECTIONS", str(connections_that_fit(hard, streams, websockets) + 1))
    with pytest.raises(SettingsError) as caught:
        load_settings()
    message = str(caught.value)
    assert message.startswith("SIDECAR_MAX_CONNECTIONS: ") and f"({hard}, its RLIMIT_NOFILE hard limit)" in message
    monkeypatch.setenv("SIDECAR_MAX_CONNECTIONS", str(connections_that_fit(hard, streams, websockets)))
    assert load_settings().max_connections == connections_that_fit(hard, streams, websockets)


def test_event_streams_count_against_the_open_file_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    # Each forwarded stream holds a connection to opencode too: more streams, fewer connections fit.
    from sidecar.http.connections import connections_that_fit, open_files_needed

    assert open_files_needed(500, 300) == open_files_needed(500) + 300
    assert connections_that_fit(2000, 300) == connections_that_fit(1700)


def test_websockets_count_twice_against_the_open_file_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    # An upgraded socket leaves the connection table, and holds a connection to opencode besides.
    from sidecar.http.connections import connections_that_fit, open_files_needed

    assert open_files_needed(500, 300, 10) == open_files_needed(500, 300) + 20
    assert connections_that_fit(2000, 300, 50) == connections_that_fit(1600)
    monkeypatch.setenv("SIDECAR_GATEWAY_URL", "http://gw:4000")
    monkeypatch.setenv("SIDECAR_MAX_WEBSOCKETS", "7")
    assert load_settings().connection_limits.max_websockets == 7
    monkeypatch.setenv("SIDECAR_MAX_WEBSOCKETS", "0")
    with pytest.raises(SettingsError, match="^SIDECAR_MAX_WEBSOCKETS: "):
        load_settings()


def test_connection_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    from sidecar.http.connections import connections_that_fit, open_file_limits

    monkeypatch.setenv("SIDECAR_GATEWAY_URL", "http://gw:4000")
    limits = load_settings().connection_limits
    assert limits.header_timeout == 10 and limits.body_timeout == 60
    streams = Settings.model_fields["max_streams"].default
    websockets = Settings.model_fields["max_websockets"].default
    assert limits.max_connections == min(1000, connections_that_fit(open_file_limits()[1], streams, websockets))
    assert limits.max_streams == streams and limits.max_websockets == websockets == 64
