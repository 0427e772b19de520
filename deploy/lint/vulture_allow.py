# Names vulture cannot see used: called by frameworks (Triton, gRPC, http.server, torch, Kafka, Alembic,
# SQLAlchemy events, pydantic) or record fields read by name, and the in-process bus's test hooks (tests/
# is not scanned: MemoryBus.refuse/accept). `make lint` runs vulture with this list.
ENCODER_STAGES
TritonPythonModel
_.EraseConversation
_.StreamConversation
_.accept
_.allow_tf32
_.close_connection
_.do_GET
_.forward
_.handle_error
_.initialize
_.intercept_service
_.intercept_stream_stream
_.intercept_stream_unary
_.intercept_unary_stream
_.intercept_unary_unary
_.log_message
_.log_request
_.on_partitions_assigned
_.on_partitions_revoked
_.refuse
_pragma
address_family
block_on_close
branch_labels
daemon_threads
default_request_version
depends_on
dialogue
do_DELETE
do_PATCH
do_POST
do_PUT
down_revision
downgrade
model_config
server_version
strong
timestamp_ms
# ONNX Runtime's SessionOptions (merc.models.graph_runner), read by ORT.
_.execution_mode
_.graph_optimization_level
_.inter_op_num_threads
_.intra_op_num_threads
# cuDNN autotuning for face training on a GPU (merc.training.vision), read by torch.
_.benchmark
# A pydantic validator (merc.runtime.config), called by pydantic.
_known_tier
# The GPU config's path (merc.models.triton_configs), read by its tests.
GPU_CONFIG
