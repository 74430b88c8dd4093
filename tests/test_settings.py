"""The settings: LYRICIST_* variables read by pydantic-settings, flags over them, one clear line per bad value."""

from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient

from lyricist.app.server import create_app
from lyricist.app.settings import DEFAULT_MODELS, Settings


def test_variables_are_read_and_flags_win():
    settings = Settings.from_env({"LYRICIST_MODELS": " a, b ,", "LYRICIST_API_KEYS": "", "LYRICIST_PORT": "9000",
                                  "LYRICIST_LOG_PROMPTS": "yes", "LYRICIST_REQUEST_TIMEOUT_S": "0.5",
                                  "LYRICIST_MAX_QUEUE": " ", "LYRICIST_DEVICE": "cuda:1"}, port=8123, host=None)
    assert settings.models == ("a", "b") and settings.api_keys == () and settings.port == 8123
    assert settings.host == "127.0.0.1" and settings.log_prompts is True and settings.request_timeout_s == 0.5
    assert settings.max_queue == 256 and settings.device == "cuda:1"  # a blank variable is an unset one
    assert Settings.from_env({}).models == DEFAULT_MODELS
    assert [Path(path).name for path in DEFAULT_MODELS] == ["songs-lstm", "shakespeare-lstm"]


def test_the_process_environment_is_read_too(monkeypatch):
    monkeypatch.setenv("LYRICIST_MAX_NEW_TOKENS", "77")
    monkeypatch.setenv("LYRICIST_CORS_ORIGINS", "http://a.example,http://b.example")
    settings = Settings.from_env(max_queue=3)
    assert settings.max_new_tokens == 77 and settings.max_queue == 3
    assert settings.cors_origins == ("http://a.example", "http://b.example")


@pytest.mark.parametrize("environ, message", [
    ({"LYRICIST_MAX_QUEUE": "abc"}, "LYRICIST_MAX_QUEUE must be a number, got 'abc'"),
    ({"LYRICIST_MAX_QUEUE": "0"}, "LYRICIST_MAX_QUEUE must be at least 1, got 0"),
    ({"LYRICIST_THREADS": "1.5"}, "LYRICIST_THREADS must be a number, got '1.5'"),
    ({"LYRICIST_REQUEST_TIMEOUT_S": "0"}, "LYRICIST_REQUEST_TIMEOUT_S must be more than 0, got 0"),
    ({"LYRICIST_LOG_PROMPTS": "maybe"}, "LYRICIST_LOG_PROMPTS must be true or false, got 'maybe'"),
    ({"LYRICIST_MODELS": ","}, "LYRICIST_MODELS must name at least one checkpoint directory"),
    ({"LYRICIST_DEVICE": "tpu"}, "LYRICIST_DEVICE must be auto, cpu, cuda or cuda:N, got 'tpu'"),
    ({"LYRICIST_DEVICE": "cuda:x"}, "LYRICIST_DEVICE must be auto, cpu, cuda or cuda:N, got 'cuda:x'"),
])
def test_a_bad_value_is_one_line_naming_the_variable(environ, message):
    with pytest.raises(ValueError) as error:
        Settings.from_env(environ)
    assert str(error.value) == message


def test_every_bad_value_is_reported_at_once():
    with pytest.raises(ValueError) as error:
        Settings.from_env({"LYRICIST_MAX_QUEUE": "0", "LYRICIST_PORT": "x"})
    assert str(error.value).count("; ") == 1 and "\n" not in str(error.value)


def test_auto_runs_the_models_on_the_cpu_until_every_search_is_device_clean(served_checkpoint):
    settings = Settings.from_env({}, models=(str(served_checkpoint),))
    assert settings.torch_device().type == "cpu"
    assert Settings.from_env({"LYRICIST_DEVICE": "cpu"}).torch_device() == torch.device("cpu")
    with TestClient(create_app(settings)) as client:
        assert client.get("/readyz").status_code == 200
        assert next(client.app.state.registry.default.model.parameters()).device.type == "cpu"


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_a_gpu_asked_for_where_there_is_none_is_refused_in_one_line():
    for device in ("cuda", "cuda:0", "cuda:3"):
        with pytest.raises(ValueError, match=f"^LYRICIST_DEVICE is '{device}', but torch finds no CUDA devices$"):
            Settings.from_env({"LYRICIST_DEVICE": device}).torch_device()
