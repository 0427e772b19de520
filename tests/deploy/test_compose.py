"""docker-compose.yml: valid against the compose-spec schema, resolved by Compose itself
(`docker compose config`, no engine needed), started in a safe order, and consistent with the
local stack (same Kafka release, same topics)."""

from __future__ import annotations

import re
import shlex

from .rendering import (
    COMPOSE,
    REPO,
    compose_config,
    compose_envs,
    local_default,
    local_topics,
    run,
    tool,
)

MERC_SERVICES = {"encoder-text", "encoder-audio", "encoder-vision", "fusion", "gateway"}
ONE_SHOT = {"kafka-init", "migrate"}


def services() -> dict:
    return compose_config()["services"]


def test_compose_file_matches_the_compose_spec_schema():
    proc = run(tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(COMPOSE), check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_compose_resolves_the_file():
    proc = run(tool("docker-compose"), "-f", str(COMPOSE), "config", "--quiet", check=False)
    assert proc.returncode == 0, proc.stderr
    assert set(services()) == MERC_SERVICES | ONE_SHOT | {"kafka", "postgres", "triton"}


def test_every_long_running_service_has_a_healthcheck_and_waits_for_healthy_dependencies():
    svc = services()
    for name, s in svc.items():
        if name in ONE_SHOT:
            assert s.get("restart") == "no", name
        else:
            assert s.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
        for dep, how in (s.get("depends_on") or {}).items():
            if dep in ONE_SHOT:
                assert how["condition"] == "service_completed_successfully", (name, dep)
            else:
                assert how["condition"] == "service_healthy", (name, dep)
                assert svc[dep].get("healthcheck"), (name, dep)


def test_exec_form_healthchecks_have_no_argument_with_whitespace():
    """podman's Docker API (podman 4.3, Debian 12) joins a CMD healthcheck and splits it again at
    whitespace: an argument holding a space must go through CMD-SHELL."""
    for name, s in services().items():
        test = s.get("healthcheck", {}).get("test") or []
        if test[:1] == ["CMD"]:
            assert not any(re.search(r"\s", arg) for arg in test[1:]), (name, test)


def test_start_order():
    svc = services()

    def after(name):  # everything a service transitively waits for
        seen, todo = set(), list(svc[name].get("depends_on") or {})
        while todo:
            dep = todo.pop()
            if dep not in seen:
                seen.add(dep)
                todo += list(svc[dep].get("depends_on") or {})
        return seen

    for name in MERC_SERVICES:
        assert {"kafka", "kafka-init", "postgres", "migrate", "triton"} <= after(name), name
    assert MERC_SERVICES - {"gateway"} <= after("gateway")


def test_merc_services_are_checked_on_their_own_grpc_health_port():
    envs = compose_envs()
    for name in MERC_SERVICES:
        env = envs[name]
        port = next(v for k, v in env.items() if k.endswith("_PORT") and k != "MERC_KAFKA_PORT")
        assert services()[name]["healthcheck"]["test"] == ["CMD", "python", "-m", "merc.runtime.healthcheck", f"127.0.0.1:{port}"]


def test_addresses_point_at_compose_services():
    svc, envs = services(), compose_envs()
    for name, env in envs.items():
        for var in ("MERC_KAFKA_BOOTSTRAP", "MERC_TRITON_URL", "MERC_TEXT_ENCODER_URL", "MERC_AUDIO_ENCODER_URL",
                    "MERC_VISION_ENCODER_URL"):
            if var in env:
                host, port = env[var].rsplit(":", 1)
                assert host in svc, f"{name}: {var}={env[var]}"
                if host.startswith("encoder-"):
                    assert envs[host]["MERC_ENCODER_PORT"] == port
        if "MERC_DATABASE_URL" in env:
            assert "@postgres:5432/" in env["MERC_DATABASE_URL"]
    assert any(p["target"] == 28050 for p in svc["gateway"]["ports"])


def test_one_kafka_release_everywhere():
    pom = (REPO / "deploy/local/kafka/pom.xml").read_text()
    version = re.search(r"<kafka.version>([^<]+)</kafka.version>", pom).group(1)
    for name in ("kafka", "kafka-init"):
        assert services()[name]["image"] == f"apache/kafka:{version}"


def test_kafka_init_creates_the_local_stacks_topics():
    prefix, partitions = local_default("MERC_TOPIC_PREFIX"), local_default("MERC_KAFKA_PARTITIONS")
    created = {}
    for spec in shlex.split(services()["kafka-init"]["environment"]["TOPICS"]):
        name, parts, cfg = spec.split(":", 2)
        assert name.startswith(prefix + ".")
        created[name[len(prefix) + 1:]] = ("P" if parts == partitions else parts, cfg)
    assert created == local_topics()
    assert compose_envs()["gateway"]["MERC_TOPIC_PREFIX"] == prefix
