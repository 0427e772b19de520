"""One source of truth for configuration: services/merc/runtime/config.py.

Every variable the Helm chart or docker-compose.yml sets for a MERC service is a MERC_<FIELD> of
merc.runtime.config.Settings (or one of the few standard variables below, each with its reason), every
service gets the settings it cannot run without, the values parse as the services parse them, and
where the chart and compose set a generic setting they use the services' own default."""

from __future__ import annotations

import os
from urllib.parse import urlsplit

import pytest
from pydantic import ValidationError

from merc.runtime.config import Settings

from .rendering import (
    FIELD,
    SECRET,
    VALUES,
    chart_envs,
    compose_config,
    compose_envs,
    render,
)

FIELDS = {f"MERC_{name.upper()}": name for name in Settings.model_fields}

# Variables that are not MERC settings, and why they are set.
OTHER_VARIABLES = {
    "PGPASSWORD": "libpq reads it: with CloudNativePG the password comes from the operator's Secret, outside the URL",
}

# What each kind of service cannot run without (besides any Settings field without a default).
REQUIRED = {
    "encoder": {"MERC_BIND_HOST", "MERC_KAFKA_BOOTSTRAP", "MERC_TRITON_URL", "MERC_ENCODER_MODALITY", "MERC_ENCODER_PORT"},
    "fusion": {"MERC_BIND_HOST", "MERC_KAFKA_BOOTSTRAP", "MERC_TRITON_URL", "MERC_DATABASE_URL", "MERC_FUSION_PORT",
               "MERC_FUSION_INSTANCE"},
    "gateway": {"MERC_BIND_HOST", "MERC_KAFKA_BOOTSTRAP", "MERC_DATABASE_URL", "MERC_GATEWAY_PORT",
                "MERC_TEXT_ENCODER_URL", "MERC_AUDIO_ENCODER_URL", "MERC_VISION_ENCODER_URL"},
    "migration": {"MERC_DATABASE_URL"},
    "test": set(),  # `merc analyze --remote`: the gateway's address is in its command line, the events come back from it
    # `merc retention`: deletes rows, publishes tombstones (a CronJob, only with retention.enabled).
    "retention": {"MERC_DATABASE_URL", "MERC_KAFKA_BOOTSTRAP", "MERC_TOPIC_PREFIX", "MERC_RETENTION_DAYS"},
}
OPTIONAL = {"retention"}
REQUIRED_BY_PYDANTIC = {f"MERC_{n.upper()}" for n, f in Settings.model_fields.items() if f.is_required()}
KAFKA_USERS = ("encoder", "fusion", "gateway", "retention")
# Values that are credentials: from a Secret, never literal in a pod spec.
SECRET_VALUES = ("MERC_DATABASE_URL", "MERC_KAFKA_SASL_PASSWORD", "MERC_PSEUDONYM_SECRET", "MERC_EMBEDDING_KEYS", "MERC_API_KEY",
                 "MERC_API_KEYS")

# Settings whose value is where this deployment's things are, not a tunable with a default to keep.
DEPLOYMENT_SPECIFIC = {"kafka_bootstrap", "database_url", "triton_url", "text_encoder_url", "audio_encoder_url",
                       "vision_encoder_url", "bind_host", "fusion_instance", "kafka_ssl_cafile", "encoder_modality",
                       "encoder_port", "kafka_security_protocol", "kafka_sasl_mechanism", "kafka_sasl_username",
                       "kafka_sasl_password",
                       # 2 by default for a laptop's embedded run; deployments pin one thread per process.
                       "torch_threads"}

# compose service -> the chart component it is
COMPOSE_ROLES = {"encoder-text": "encoder-text", "encoder-audio": "encoder-audio", "encoder-vision": "encoder-vision",
                 "fusion": "fusion", "gateway": "gateway", "migrate": "migration"}

# Variables the chart sets and compose may leave to the services' default (the chart's default value
# must then be that default), and why.
CHART_ONLY = {
    "gateway": {
        "MERC_HTTP_PORT": "the chart sets it always (gateway.httpPort 0 must reach the gateway as \"0\": the "
                          "services' default is on); compose runs the page on that default port and publishes it",
    },
}


def kind(component: str) -> str:
    return "encoder" if component.startswith("encoder-") else component


def unknown(env: dict[str, str]) -> list[str]:
    return sorted(n for n in env if n not in FIELDS and n not in OTHER_VARIABLES)


def bind_host_hint(names: list[str]) -> str:
    if "MERC_BIND_HOST" in names:
        return ("\nMERC_BIND_HOST: the services listen on 127.0.0.1 (merc.runtime.serving.Server's default host), which no "
                "other pod or container can reach. Add `bind_host: str = \"127.0.0.1\"` to Settings and pass "
                "cfg.bind_host to Server(...) in services/{encoder,fusion,gateway}/__main__.py.")
    return ""


def stand_in(name: str, value: str) -> str:
    """A value of the right shape for a variable whose value comes from a Secret or the pod."""
    if value == SECRET:
        return {"MERC_DATABASE_URL": "postgresql+psycopg://merc:secret@db:5432/merc"}.get(name, "secret")
    if value == FIELD:
        return "merc-fusion-0"
    return value


@pytest.fixture
def clean_env(monkeypatch):
    """No MERC_* from the calling shell (make test exports the local stack's)."""
    for name in list(os.environ):
        if name.startswith("MERC_"):
            monkeypatch.delenv(name)
    return monkeypatch


def parse(monkeypatch, env: dict[str, str]) -> Settings:
    with monkeypatch.context() as m:
        for name, value in env.items():
            if name.startswith("MERC_"):
                m.setenv(name, stand_in(name, value))
        return Settings()


# ---- the chart -------------------------------------------------------------------------------------

@pytest.mark.parametrize("values", VALUES)
def test_every_variable_the_chart_sets_is_a_setting(values):
    for comp, env in chart_envs(render(values)).items():
        bad = unknown(env)
        assert not bad, f"{comp} sets {bad}: not fields of merc.runtime.config.Settings{bind_host_hint(bad)}"


@pytest.mark.parametrize("values", VALUES)
def test_every_service_gets_what_it_needs_from_the_chart(values):
    docs = render(values)
    sasl = any(d["kind"] == "ConfigMap" and "MERC_KAFKA_SASL_MECHANISM" in d["data"] for d in docs)
    envs = chart_envs(docs)
    assert set(REQUIRED) - OPTIONAL <= {kind(c) for c in envs} <= set(REQUIRED)
    for comp, env in envs.items():
        need = REQUIRED[kind(comp)] | REQUIRED_BY_PYDANTIC
        if sasl and kind(comp) in KAFKA_USERS:
            need |= {"MERC_KAFKA_SASL_MECHANISM", "MERC_KAFKA_SASL_USERNAME", "MERC_KAFKA_SASL_PASSWORD"}
        assert not need - set(env), f"{comp} lacks {sorted(need - set(env))}"
        # Passwords, keys and secrets come from Secrets; a literal URL (CloudNativePG's) carries none.
        for name in SECRET_VALUES:
            if env.get(name, SECRET) != SECRET:
                assert name == "MERC_DATABASE_URL" and urlsplit(env[name]).password is None, f"{comp}: {name} in clear"


@pytest.mark.parametrize("values", VALUES)
def test_encoders_get_no_database_credentials(values):
    for comp, env in chart_envs(render(values)).items():
        if kind(comp) == "encoder":
            assert "MERC_DATABASE_URL" not in env and "PGPASSWORD" not in env, comp


# Settings only some kinds of workload may get: the pseudonym secret is for the encoders (they
# pseudonymise before publishing), the embedding keys for the encoders and fusion (they seal and
# open embedding records), the API-key hashes for the services that check keys, a raw key
# for the helm test Pod (the one client), the retention age for the retention job.
ONLY_FOR = {
    "MERC_PSEUDONYM_SECRET": {"encoder"},
    "MERC_EMBEDDING_KEYS": {"encoder", "fusion"},
    "MERC_API_KEYS_FILE": {"encoder", "fusion", "gateway"},
    "MERC_API_KEYS": set(),
    "MERC_API_KEY": {"test"},
    "MERC_RETENTION_DAYS": {"retention"},
}


@pytest.mark.parametrize("values", VALUES)
def test_security_settings_reach_only_who_needs_them(values):
    for comp, env in chart_envs(render(values)).items():
        for name, kinds in ONLY_FOR.items():
            assert name not in env or kind(comp) in kinds, f"{comp} gets {name}"


@pytest.mark.parametrize("values", VALUES)
def test_chart_values_parse_as_the_services_read_them(values, clean_env):
    defaults = Settings()
    for comp, env in chart_envs(render(values)).items():
        try:
            cfg = parse(clean_env, env)
        except ValidationError as e:
            pytest.fail(f"{comp}: {e}")
        if kind(comp) == "encoder":
            assert cfg.encoder_modality == comp.split("-")[1]
        if values == "default":
            for name, field in FIELDS.items():
                if name in env and field not in DEPLOYMENT_SPECIFIC:
                    assert getattr(cfg, field) == getattr(defaults, field), f"{comp}: {name} differs from the default"


def test_chart_ports_are_the_services_default_ports():
    defaults = Settings()
    env = chart_envs(render("default"))
    for m in ("text", "audio", "vision"):
        default_port = urlsplit("//" + getattr(defaults, f"{m}_encoder_url")).port
        assert env[f"encoder-{m}"]["MERC_ENCODER_PORT"] == str(default_port)
        assert urlsplit("//" + env["gateway"][f"MERC_{m.upper()}_ENCODER_URL"]).port == default_port
    assert env["gateway"]["MERC_GATEWAY_PORT"] == str(defaults.gateway_port)
    assert env["fusion"]["MERC_FUSION_PORT"] == str(defaults.fusion_port)


# ---- docker-compose.yml ----------------------------------------------------------------------------

def test_every_variable_compose_sets_is_a_setting():
    envs = compose_envs()
    assert set(envs) == set(COMPOSE_ROLES)
    for service, env in envs.items():
        bad = unknown(env)
        assert not bad, f"compose service {service} sets {bad}: not fields of merc.runtime.config.Settings{bind_host_hint(bad)}"


def test_every_service_gets_what_it_needs_from_compose():
    for service, env in compose_envs().items():
        need = REQUIRED[kind(COMPOSE_ROLES[service])] | REQUIRED_BY_PYDANTIC
        assert not need - set(env), f"compose service {service} lacks {sorted(need - set(env))}"


def test_compose_values_parse_as_the_services_read_them(clean_env):
    defaults = Settings()
    for service, env in compose_envs().items():
        try:
            cfg = parse(clean_env, env)
        except ValidationError as e:
            pytest.fail(f"compose service {service}: {e}")
        for name, field in FIELDS.items():
            if name in env and field not in DEPLOYMENT_SPECIFIC:
                assert getattr(cfg, field) == getattr(defaults, field), f"compose {service}: {name} differs from the default"


def test_chart_and_compose_set_the_same_variables(clean_env):
    """Per service, the same names (the chart with its default values), but for CHART_ONLY: set to the
    services' default by the chart, left to it by compose."""
    chart = chart_envs(render("default"))
    defaults = Settings()
    for service, env in compose_envs().items():
        comp = COMPOSE_ROLES[service]
        only_chart = set(CHART_ONLY.get(comp, {})) - set(env)
        assert set(env) == set(chart[comp]) - only_chart, (
            f"{service}: only in compose {sorted(set(env) - set(chart[comp]))}, "
            f"only in the chart {sorted(set(chart[comp]) - set(env) - only_chart)}")
        for name in only_chart:
            assert chart[comp][name] == str(getattr(defaults, FIELDS[name])), f"{comp}: {name} is not the services' default"
        for name, value in chart[comp].items():
            if name not in only_chart | {"MERC_KAFKA_BOOTSTRAP", "MERC_TRITON_URL", "MERC_DATABASE_URL", "MERC_FUSION_INSTANCE"} \
                    and not name.endswith("_ENCODER_URL"):
                assert env[name] == value, f"{service}: {name} is {env[name]!r} in compose, {value!r} in the chart"


def test_compose_publishes_the_timeline_page_where_the_chart_serves_it(clean_env):
    """The gateway's page: MERC_HTTP_PORT (compose: the default) is published on 127.0.0.1 only."""
    port = int(compose_envs()["gateway"].get("MERC_HTTP_PORT", Settings().http_port))
    assert chart_envs(render("default"))["gateway"]["MERC_HTTP_PORT"] == str(port)
    [published] = [p for p in compose_config()["services"]["gateway"]["ports"] if p["target"] == port]
    assert published.get("host_ip") == "127.0.0.1", published
