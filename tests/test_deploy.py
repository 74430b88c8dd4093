"""The Dockerfile, docker-compose.yml and deploy/prometheus.yml agree with each other and with the app.

No container engine runs here, so the files are parsed and every fact they state about the app is checked
against the real thing: the ports, the variable names, the model paths, and the health checks, which are run
against a real server started with the compose file's own environment.
"""

import argparse
import json
import re
import subprocess
import sys
from pathlib import PurePosixPath

import httpx
import pytest
import yaml

from lyricist.app.cli import add_serve_command
from lyricist.app.settings import DEFAULT_MODELS, Settings
from lyricist.model import load_checkpoint

from .helpers import ROOT, free_port, start_server

SETTINGS_VARIABLES = set(Settings.variables().values())


def dockerfile_stages() -> list[list[tuple[str, str]]]:
    """The Dockerfile as stages of (INSTRUCTION, arguments), continuation lines joined, comments dropped."""
    stages, logical = [], ""
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        if not logical and (not line.strip() or line.lstrip().startswith("#")):
            continue
        logical += line.rstrip()
        if logical.endswith("\\"):
            logical = logical[:-1] + " "
            continue
        instruction, _, arguments = logical.strip().partition(" ")
        logical = ""
        if instruction.upper() == "FROM":
            stages.append([])
        stages[-1].append((instruction.upper(), arguments.strip()))
    return stages


def instructions(stage: list[tuple[str, str]], name: str) -> list[str]:
    return [arguments for instruction, arguments in stage if instruction == name]


def image_env() -> dict[str, str]:
    """The final stage's ENV, written as KEY=VALUE pairs."""
    env = {}
    for arguments in instructions(dockerfile_stages()[-1], "ENV"):
        env.update(pair.split("=", 1) for pair in arguments.split())
    return env


def exec_form(arguments: str) -> list[str]:
    """A JSON-array command (HEALTHCHECK ... CMD [...], ENTRYPOINT [...])."""
    return json.loads(arguments[arguments.index("["):])


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def prometheus_job() -> dict:
    (job,) = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())["scrape_configs"]
    return job


def dockerignore_pattern(pattern: str) -> re.Pattern:
    """A .dockerignore pattern as Docker reads it: a path from the context root, `*` within one
    directory, `**/` any number of directories."""
    regex = ""
    for token in re.split(r"(\*\*/|\*|\?)", pattern.strip("/")):
        regex += {"**/": "(?:.*/)?", "*": "[^/]*", "?": "[^/]"}.get(token, re.escape(token))
    return re.compile(regex)


def dockerignored(path: str) -> bool:
    """The last pattern matching the path or one of its parents decides; `!` sends it after all."""
    lines = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()]
    parts = PurePosixPath(path).parts
    paths = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for line in filter(lambda line: line and not line.startswith("#"), lines):
        if any(dockerignore_pattern(line.removeprefix("!")).fullmatch(p) for p in paths):
            ignored = not line.startswith("!")
    return ignored


def volume_to_host(container_path: str, volumes: list[str]) -> str:
    """The repo path a container path of the compose service is mounted from."""
    for volume in volumes:
        host, target = volume.split(":")[:2]
        if container_path == target or container_path.startswith(target + "/"):
            return str(PurePosixPath(host) / PurePosixPath(container_path).relative_to(target))
    raise AssertionError(f"{container_path} is on no volume of the service: {volumes}")


def test_ports_agree_everywhere():
    service = compose()["services"]["lyricist"]
    (exposed,) = instructions(dockerfile_stages()[-1], "EXPOSE")
    (published,) = service["ports"]
    dns_targets = prometheus_job()["dns_sd_configs"]
    ports = {
        "Settings default": Settings.from_env({}).port,
        "Dockerfile EXPOSE": int(exposed),
        "image LYRICIST_PORT": int(image_env()["LYRICIST_PORT"]),
        "compose container port": int(published.split(":")[-1]),
        "compose LYRICIST_PORT": int(service["environment"]["LYRICIST_PORT"]),
        "Prometheus target": int(dns_targets[0]["port"]),
    }
    assert len(set(ports.values())) == 1, ports
    assert dns_targets[0]["names"] == ["lyricist"], "Prometheus must look up the compose service by its name"


def test_every_variable_the_files_set_is_one_settings_reads():
    service_env = compose()["services"]["lyricist"]["environment"]
    for where, env in {"compose": service_env, "Dockerfile": image_env()}.items():
        lyricist_names = {name for name in env if name.startswith("LYRICIST_")}
        assert lyricist_names <= SETTINGS_VARIABLES, f"{where} sets unknown {lyricist_names - SETTINGS_VARIABLES}"
        Settings.from_env({name: str(value) for name, value in env.items()})  # every value parses


def test_image_serves_the_shipped_models_on_all_interfaces():
    final = dockerfile_stages()[-1]
    env = image_env()
    assert env["LYRICIST_HOST"] == "0.0.0.0"
    (workdir,) = instructions(final, "WORKDIR")
    in_repo = [PurePosixPath(path).relative_to(workdir) for path in Settings.from_env(env).models]
    assert [str(ROOT / path) for path in in_repo] == list(DEFAULT_MODELS), \
        "the image serves other models than `lyricist serve` does"
    copied = [arguments.split()[0] for stage in dockerfile_stages() for arguments in instructions(stage, "COPY")]
    for path in in_repo:
        assert load_checkpoint(ROOT / path).model.num_parameters() > 0
        assert str(path) in copied, f"{path} is not copied into the image"
    command = exec_form(instructions(final, "ENTRYPOINT")[0]) + exec_form(instructions(final, "CMD")[0])
    assert command == ["lyricist", "serve"]


def test_image_runs_as_a_user_it_creates_not_root():
    final = dockerfile_stages()[-1]
    (user,) = instructions(final, "USER")
    assert user not in ("root", "0")
    assert any(re.search(rf"\buseradd\b.*\b{user}$", run) for run in instructions(final, "RUN"))


def test_files_the_dockerfile_copies_exist_and_reach_the_build():
    for stage in dockerfile_stages():
        for arguments in instructions(stage, "COPY"):
            if arguments.startswith("--from="):
                continue
            *sources, _destination = arguments.split()
            for source in sources:
                assert (ROOT / source).exists(), source
                assert not dockerignored(source), f"{source} is copied but .dockerignore leaves it out"
    for never_sent in (".git", ".venv", "runs", "test-artifacts", "model/__pycache__", "checkpoints/mine"):
        assert dockerignored(never_sent), never_sent


def test_torch_comes_from_the_index_the_builder_is_given():
    builder = dockerfile_stages()[0]
    assert "TORCH_INDEX_URL" in instructions(builder, "ARG"), "the ARG must have no default (no index host here)"
    pinned = re.search(r'"(torch==[^"]+)"', (ROOT / "pyproject.toml").read_text()).group(1)
    assert any('--index-url "$TORCH_INDEX_URL"' in run and run.endswith(pinned)
               for run in instructions(builder, "RUN"))
    assert compose()["services"]["lyricist"]["build"]["args"]["TORCH_INDEX_URL"] == "${TORCH_INDEX_URL:-}"
    (guard,) = [run for run in instructions(builder, "RUN") if "-z" in run and "TORCH_INDEX_URL" in run]
    refused = subprocess.run(["sh", "-c", guard], env={"TORCH_INDEX_URL": ""}, capture_output=True, text=True)
    assert refused.returncode != 0 and "pytorch.org" in refused.stderr
    given = subprocess.run(["sh", "-c", guard], env={"TORCH_INDEX_URL": "file:///wheels"}, capture_output=True)
    assert given.returncode == 0


def test_compose_models_are_on_the_volume_and_load():
    service = compose()["services"]["lyricist"]
    for container_path in Settings.from_env(service["environment"]).models:
        assert load_checkpoint(ROOT / volume_to_host(container_path, service["volumes"])).model.num_parameters()


def test_prometheus_reads_the_config_in_the_repo():
    job = prometheus_job()
    assert job["metrics_path"] == "/metrics"
    (volume,) = compose()["services"]["prometheus"]["volumes"]
    host, target = volume.split(":")[:2]
    assert (ROOT / host).resolve() == ROOT / "deploy" / "prometheus.yml"
    assert target == "/etc/prometheus/prometheus.yml"


@pytest.fixture(scope="module")
def compose_configured_server():
    """The real server with the compose service's environment, its model paths mapped back to the repo."""
    service = compose()["services"]["lyricist"]
    env = {name: str(value) for name, value in service["environment"].items()}
    env["LYRICIST_MODELS"] = ",".join(str(ROOT / volume_to_host(path, service["volumes"]))
                                      for path in env["LYRICIST_MODELS"].split(","))
    env["LYRICIST_THREADS"] = "1"  # a shared test machine, whatever the container gets
    server, base = start_server(env=env)  # --port: a free one; flags win over the variables
    yield base
    server.terminate()
    server.wait(timeout=30)


def run_healthcheck(command: list[str], env: dict | None = None) -> subprocess.CompletedProcess:
    assert command[0] == "python"
    return subprocess.run([sys.executable, *command[1:]], env=env, capture_output=True, text=True, timeout=30)


def test_health_checks_pass_on_a_serving_app_and_fail_without_one(compose_configured_server):
    port = compose_configured_server.rsplit(":", 1)[1]
    (image_check,) = instructions(dockerfile_stages()[-1], "HEALTHCHECK")
    image_command = exec_form(image_check)
    compose_command = compose()["services"]["lyricist"]["healthcheck"]["test"]
    assert compose_command[0] == "CMD"
    compose_command = compose_command[1:]
    for command in (image_command, compose_command):
        assert "/healthz" in command[-1]
    assert run_healthcheck(image_command, {"LYRICIST_PORT": port}).returncode == 0
    assert run_healthcheck([part.replace(":8000/", f":{port}/") for part in compose_command]).returncode == 0
    assert run_healthcheck(image_command, {"LYRICIST_PORT": str(free_port())}).returncode != 0


def test_the_compose_environment_serves_and_prometheus_finds_metrics(compose_configured_server):
    ready = httpx.get(f"{compose_configured_server}/readyz").json()
    assert ready["models"] == ["songs-lstm", "shakespeare-lstm"]
    scraped = httpx.get(compose_configured_server + prometheus_job()["metrics_path"])
    assert scraped.status_code == 200 and 'lyricist_model_info{cell="lstm"' in scraped.text


def serve_flags() -> set[str]:
    subcommands = argparse.ArgumentParser().add_subparsers()
    add_serve_command(subcommands)
    return set(re.findall(r"--[a-z][a-z-]*", subcommands.choices["serve"].format_help())) - {"--help"}


def test_readme_configuration_table_lists_exactly_the_settings():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in section.splitlines()
            if line.startswith("| `LYRICIST_")]
    assert {row[0].strip("`") for row in rows} == SETTINGS_VARIABLES
    listed_flags = {flag for row in rows for flag in re.findall(r"--[a-z-]+", row[1])}
    assert listed_flags == serve_flags()
