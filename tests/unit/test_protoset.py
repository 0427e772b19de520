"""The descriptor set shipped with a release (services/merc/v1/merc.protoset, `make protoset`): every
.proto under protos/, with comments, and the same definitions as the generated code."""

from pathlib import Path

from google.protobuf import descriptor_pb2

from merc.v1 import common_pb2, encoder_pb2, events_pb2, gateway_pb2, state_pb2

REPO = Path(__file__).resolve().parents[2]
PROTOSET = REPO / "services" / "merc" / "v1" / "merc.protoset"


def load() -> dict[str, descriptor_pb2.FileDescriptorProto]:
    files = descriptor_pb2.FileDescriptorSet.FromString(PROTOSET.read_bytes()).file
    return {f.name: f for f in files}


def test_it_holds_every_proto_file_and_the_event():
    files = load()
    protos = REPO / "protos"
    assert set(files) == {p.relative_to(protos).as_posix() for p in protos.rglob("*.proto")}
    events = files["merc/v1/events.proto"]
    [event] = [m for m in events.message_type if m.name == "EmotionEvent"]
    assert {"event_id", "utterance", "revision", "probabilities", "label"} <= {f.name for f in event.field}
    # With source info: the comments that document each field travel with the set.
    assert any("revision + 1" in loc.leading_comments for loc in events.source_code_info.location)


def _without_json_names(messages) -> None:
    for m in messages:  # protoc fills json_name in a descriptor set, not in the descriptors it embeds in code
        for f in m.field:
            f.ClearField("json_name")
        _without_json_names(m.nested_type)


def test_it_matches_the_generated_code():
    """The generated modules are checked against protos/ (make proto-check); the set against them."""
    files = load()
    for module in (common_pb2, encoder_pb2, events_pb2, gateway_pb2, state_pb2):
        generated = descriptor_pb2.FileDescriptorProto.FromString(module.DESCRIPTOR.serialized_pb)
        shipped = descriptor_pb2.FileDescriptorProto()
        shipped.CopyFrom(files[generated.name])
        shipped.ClearField("source_code_info")
        _without_json_names(shipped.message_type)
        assert shipped == generated, generated.name
