"""API keys per tenant (hashed), the auth interceptor on a real in-process gRPC server, tenant
isolation through the gateway, and TLS / mutual TLS with a throwaway CA."""


import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from merc.bus.memory import MemoryBus
from merc.gateway.server import GatewayServicer
from merc.pipeline.results import MAX_TENANT_CHARS
from merc.runtime import security
from merc.runtime.config import Settings
from merc.runtime.serving import Server
from merc.store import Store
from merc.v1 import gateway_pb2, gateway_pb2_grpc
from unit.test_store import result

KEY_A, KEY_B = security.new_key(), security.new_key()


def settings(**kw) -> Settings:
    return Settings(inference="local", api_keys=f"tenant-a:{security.hash_key(KEY_A)},tenant-b:{security.hash_key(KEY_B)}", **kw)


def test_keys_are_stored_hashed_and_bad_entries_are_named():
    keys = security.ApiKeys.from_settings(settings())
    assert keys.tenant_for(KEY_A) == "tenant-a" and keys.tenant_for(KEY_B) == "tenant-b"
    assert keys.tenant_for("merc_guess") is None
    assert KEY_A not in settings().api_keys
    with pytest.raises(security.KeyConfigError, match="entry 2"):
        security.parse_keys("a:" + "0" * 64 + ",b:not-a-hash", "MERC_API_KEYS")


HASH_A, HASH_B = security.hash_key(KEY_A), security.hash_key(KEY_B)


@pytest.mark.parametrize("line, problem", [
    (f"{'t' * (MAX_TENANT_CHARS + 1)}:{HASH_B}", f"longer than {MAX_TENANT_CHARS}"),
    (f":{HASH_B}", "tenant is empty"),
    (f"  :{HASH_B}", "tenant is empty"),
    (f"te\x00nant:{HASH_B}", "NUL"),
    ("tenant-b", "not 64 hex digits"),
    (f"tenant-b:{HASH_B[:-1]}", "not 64 hex digits"),
    (f"tenant-b:{HASH_B[:-1]}g", "not 64 hex digits"),
    (f"tenant-b:{HASH_A}", "already listed for tenant 'tenant-a'"),  # one key, two tenants
])
def test_a_key_file_is_refused_at_load_naming_the_line(tmp_path, line, problem):
    path = tmp_path / "keys"
    path.write_text(f"# keys\ntenant-a:{HASH_A}\n\n{line}\n")
    with pytest.raises(security.KeyConfigError, match=f"{path}: line 4: .*{problem}"):
        security.ApiKeys.from_settings(Settings(api_keys_file=str(path)))


def test_a_key_file_within_the_limits_loads(tmp_path):
    path = tmp_path / "keys"
    longest = "t" * MAX_TENANT_CHARS  # what the store holds
    path.write_text(f"tenant-a:{HASH_A}\n{longest}:{HASH_B.upper()}\ntenant-a:{HASH_A}\n")  # a repeated line is harmless
    keys = security.ApiKeys.from_settings(Settings(api_keys_file=str(path)))
    assert keys.tenant_for(KEY_A) == "tenant-a" and keys.tenant_for(KEY_B) == longest


def test_one_hash_for_two_tenants_across_the_variable_and_the_file_is_refused(tmp_path):
    path = tmp_path / "keys"
    path.write_text(f"tenant-b:{HASH_A}\n")
    with pytest.raises(security.KeyConfigError, match="line 1: this key's hash is already listed for tenant 'tenant-a'"):
        security.ApiKeys.from_settings(Settings(api_keys=f"tenant-a:{HASH_A}", api_keys_file=str(path)))


@pytest.fixture
def gateway(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'merc.db'}")
    store.migrate()
    rows = [result(i) for i in range(3)]
    for r in rows:
        r.tenant, r.conversation_id = "tenant-a", "call-1"
    store.upsert(rows)
    bus = MemoryBus()
    cfg = settings()
    server = Server(0, **security.server_options(cfg))
    servicer = GatewayServicer({}, store, None, cfg.tenant, producer=bus.producer(), settings=cfg)
    server.add(gateway_pb2_grpc.add_GatewayServiceServicer_to_server, servicer, "merc.v1.GatewayService")
    server.start()
    server.set_serving(True)
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    yield gateway_pb2_grpc.GatewayServiceStub(channel), channel, store, bus
    channel.close()
    server.grpc.stop(0)
    store.close()


def get(stub, key, conversation="call-1", tenant=""):
    metadata = (("x-api-key", key),) if key else ()
    return stub.GetConversation(gateway_pb2.GetConversationRequest(tenant=tenant, conversation_id=conversation), timeout=5,
                                metadata=metadata)


def code_of(call) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as e:
        call()
    return e.value.code()


def test_a_tenant_reads_its_own_conversation_and_never_another_tenants(gateway):
    stub, channel, _, _ = gateway
    assert len(get(stub, KEY_A).events) == 3
    # Tenant B, asking for A's conversation id: the same answer as for one that does not exist.
    assert code_of(lambda: get(stub, KEY_B)) == grpc.StatusCode.NOT_FOUND
    assert code_of(lambda: get(stub, KEY_B, conversation="never")) == grpc.StatusCode.NOT_FOUND
    # Naming the other tenant explicitly is refused, not obeyed.
    assert code_of(lambda: get(stub, KEY_B, tenant="tenant-a")) == grpc.StatusCode.PERMISSION_DENIED
    assert code_of(lambda: get(stub, None)) == grpc.StatusCode.UNAUTHENTICATED
    assert code_of(lambda: get(stub, "merc_wrong")) == grpc.StatusCode.UNAUTHENTICATED
    bearer = stub.GetConversation(gateway_pb2.GetConversationRequest(conversation_id="call-1"), timeout=5,
                                  metadata=(("authorization", f"Bearer {KEY_A}"),))
    assert len(bearer.events) == 3
    # Health checks need no key (probes carry none).
    health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert health.status == health_pb2.HealthCheckResponse.SERVING


def test_an_utterance_for_another_tenant_is_refused(gateway):
    stub, _, _, _ = gateway
    from merc.v1 import common_pb2

    request = gateway_pb2.AnalyzeUtteranceRequest(
        utterance=common_pb2.UtteranceRef(tenant="tenant-a", conversation_id="x", sequence=0), text="hello")
    with pytest.raises(grpc.RpcError) as e:
        stub.AnalyzeUtterance(request, timeout=5, metadata=(("x-api-key", KEY_B),))
    assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED and "tenant-b" in e.value.details()


def test_erasure_is_scoped_to_the_callers_tenant(gateway):
    stub, _, store, bus = gateway
    erase = lambda key: stub.EraseConversation(gateway_pb2.EraseConversationRequest(conversation_id="call-1"),
                                               timeout=5, metadata=(("x-api-key", key),))
    assert erase(KEY_B).utterances_deleted == 0 and len(store.conversation("tenant-a", "call-1")) == 3
    assert erase(KEY_A).utterances_deleted == 3 and store.conversation("tenant-a", "call-1") == []
    for topic in ("merc.emotions", "merc.embeddings.text", "merc.embeddings.audio", "merc.embeddings.vision"):
        (tomb,) = bus.messages(topic)
        assert tomb.key == b"tenant-a\x00call-1" and tomb.value is None and tomb.header("tenant") == b"tenant-a"


# --- TLS -----------------------------------------------------------------------------------


def serve(cfg: Settings) -> Server:
    server = Server(0, "127.0.0.1", **security.server_options(cfg))
    server.start()
    server.set_serving(True)
    return server


def healthy(target: str, cfg: Settings) -> bool:
    # TLS names the server "localhost" in its certificate; connect by that name.
    with security.channel(target, cfg, [("grpc.ssl_target_name_override", "localhost")]) as channel:
        try:
            return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=3).status == 1
        except grpc.RpcError:
            return False


def test_tls_serves_only_clients_that_trust_its_ca(pki):
    server = serve(Settings(tls_cert_file=str(pki / "server.pem"), tls_key_file=str(pki / "server.key")))
    target = f"localhost:{server.port}"
    try:
        assert healthy(target, Settings(tls_ca_file=str(pki / "ca.pem")))
        assert not healthy(target, Settings())  # plaintext client
    finally:
        server.grpc.stop(0)


def test_mutual_tls_requires_a_client_certificate_from_the_ca(pki):
    server = serve(Settings(tls_cert_file=str(pki / "server.pem"), tls_key_file=str(pki / "server.key"),
                            tls_client_ca_file=str(pki / "ca.pem")))
    target = f"localhost:{server.port}"
    try:
        assert not healthy(target, Settings(tls_ca_file=str(pki / "ca.pem")))
        assert healthy(target, Settings(tls_ca_file=str(pki / "ca.pem"), tls_client_cert_file=str(pki / "client.pem"),
                                        tls_client_key_file=str(pki / "client.key")))
    finally:
        server.grpc.stop(0)


def test_half_a_tls_configuration_is_a_clear_error(pki):
    with pytest.raises(ValueError, match="both MERC_TLS_CERT_FILE and MERC_TLS_KEY_FILE"):
        security.server_credentials(Settings(tls_cert_file=str(pki / "server.pem")))
    with pytest.raises(ValueError, match="MERC_TLS_CA_FILE /nope"):
        security.channel("localhost:1", Settings(tls_ca_file="/nope"))
