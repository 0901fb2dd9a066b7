import pytest

from proxy.config import ConfigError, load_settings


def test_defaults_without_any_environment():
    s = load_settings(env={})
    assert s.default_provider == "mock"
    assert s.database_url == "sqlite:///study_query_llm.db"
    assert (s.host, s.port) == ("127.0.0.1", 8000)
    assert s.providers["openai"].base_url == "https://api.openai.com/v1"
    assert s.providers["hyperbolic"].base_url == "https://api.hyperbolic.xyz/v1"
    assert s.max_body_bytes == 32 * 1024 * 1024


def test_environment_and_panel_fallbacks():
    s = load_settings(env={"PANEL_ADDRESS": "0.0.0.0", "PANEL_PORT": "9000", "DATABASE_URL": "sqlite:///x.db"})
    assert (s.host, s.port, s.database_url) == ("0.0.0.0", 9000, "sqlite:///x.db")
    s = load_settings(env={"PANEL_PORT": "9000"}, port=7000)
    assert s.port == 7000


def test_keys_never_appear_in_repr():
    s = load_settings(env={"OPENAI_API_KEY": "sk-very-secret-value"})
    assert "sk-very-secret-value" not in repr(s)
    assert "sk-very-secret-value" in s.secrets()


def test_dotenv_file_is_read_and_environment_wins(tmp_path, monkeypatch):
    from proxy.config import read_environment

    env_file = tmp_path / ".env"
    env_file.write_text("OPENAI_MODEL=from-file\nPANEL_PORT=1234\n")
    monkeypatch.setenv("PANEL_PORT", "4321")
    monkeypatch.delenv("OPENAI_MODEL", raising=False)
    values = read_environment(env_file)
    assert values["OPENAI_MODEL"] == "from-file"
    assert values["PANEL_PORT"] == "4321"


def test_configured_provider_and_clients(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text(
        '[server]\nmax_body_bytes = 100\n'
        '[providers.local]\nbase_url = "http://127.0.0.1:9/v1/"\napi_key_env = "LOCAL_KEY"\n'
        '[providers.open]\nbase_url = "http://127.0.0.1:9/v1"\nno_key = true\n'
        '[clients]\nalice = { key_env = "ALICE" }\nbob = "literal-key"\n'
    )
    s = load_settings(env={"LOCAL_KEY": "lk", "ALICE": "ak"}, config_file=config)
    assert s.providers["local"].base_url == "http://127.0.0.1:9/v1"
    assert s.providers["local"].api_key == "lk"
    assert s.providers["open"].api_key == ""
    assert s.default_provider == "local"
    assert s.client_keys == {"ak": "alice", "literal-key": "bob"}
    assert s.max_body_bytes == 100


@pytest.mark.parametrize(
    "text, message",
    [
        ('[providers.x]\nbase_url = "ftp://h"\nno_key = true\n', "http(s) URL"),
        ('[providers.x]\nbase_url = "http://h"\n', "api_key_env"),
        ('[providers."a/b"]\nbase_url = "http://h"\nno_key = true\n', "may not contain"),
        ("[aliases]\nx = []\n", "alias 'x'"),
        ("[clients]\nalice = { key_env = 'UNSET_VAR' }\n", "client 'alice'"),
        ("not toml [", "not valid TOML"),
        ("[server]\nconnect_timeout = 5\n", "timeouts live in"),
        ("[retry]\nmax_attempts = 'three'\n", "must be a int"),
        ("[cache]\nttl_seconds = 5\n", "no setting 'ttl_seconds'"),
    ],
)
def test_bad_config_is_refused_with_a_clear_message(tmp_path, text, message):
    config = tmp_path / "c.toml"
    config.write_text(text)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_settings(env={}, config_file=config)


def test_azure_key_without_endpoint_is_refused():
    with pytest.raises(ConfigError, match="AZURE_OPENAI_ENDPOINT"):
        load_settings(env={"AZURE_OPENAI_API_KEY": "k"})


def test_cors_origins_are_off_by_default_and_come_from_env_or_server_table(tmp_path):
    assert load_settings(env={}).cors_allow_origins == ()
    env = {"CORS_ALLOW_ORIGINS": " http://localhost:5173, HTTPS://App.Example.org ,,http://localhost:5173"}
    assert load_settings(env=env).cors_allow_origins == ("http://localhost:5173", "https://app.example.org")
    config = tmp_path / "c.toml"
    config.write_text('[server]\ncors_allow_origins = ["https://notebook.example", "*"]\n')
    assert load_settings(env={}, config_file=config).cors_allow_origins == ("https://notebook.example", "*")
    # The environment replaces the file's list; an empty value counts as unset.
    assert load_settings(env=env, config_file=config).cors_allow_origins == ("http://localhost:5173", "https://app.example.org")
    assert load_settings(env={"CORS_ALLOW_ORIGINS": ""}, config_file=config).cors_allow_origins == ("https://notebook.example", "*")


@pytest.mark.parametrize(
    "env, toml",
    [
        ({"CORS_ALLOW_ORIGINS": "http://localhost:5173/"}, None),
        ({"CORS_ALLOW_ORIGINS": "localhost:5173"}, None),
        ({"CORS_ALLOW_ORIGINS": "null"}, None),
        ({}, '[server]\ncors_allow_origins = "http://localhost:5173"\n'),
        ({}, '[server]\ncors_allow_origins = ["https://app.example/path"]\n'),
    ],
)
def test_cors_origins_that_no_browser_would_send_stop_start_up(tmp_path, env, toml):
    config = None
    if toml is not None:
        config = tmp_path / "c.toml"
        config.write_text(toml)
    with pytest.raises(ConfigError, match="cors_allow_origins|CORS_ALLOW_ORIGINS"):
        load_settings(env=env, config_file=config)
