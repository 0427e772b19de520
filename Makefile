# MERC: `make run` analyses the example conversation in embedded mode;
# `make test` starts the real Kafka, PostgreSQL and Triton and runs every test.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Speaker diarisation's weights (merc.models.speaker_encoder): the wheel alone, since its own dependencies
# (webrtcvad, librosa) are not used and webrtcvad no longer imports under current setuptools.
DIARISATION := --no-deps resemblyzer==0.1.4
# The larger text tier's base, all-mpnet-base-v2 (merc.models.text_encoder.MPNET): five wheels pinned by hash,
# without the dependency the first one declares (an Orange add-on nothing here uses).
TEXT_LARGE := --no-deps --require-hashes -r deploy/requirements/text-large.txt

# Every distribution in .venv at the version the tests passed with (`make lock` rewrites it), so a new
# release upstream changes nothing here until it is locked and tested.
CONSTRAINTS := deploy/requirements/constraints.txt
# Downloads retried into a wheelhouse kept between runs, then an offline install from it.
PIP_INSTALL := deploy/wheelhouse.sh $(PY)

STAMP := $(VENV)/.installed-$(shell (cat pyproject.toml deploy/requirements/text-large.txt $(CONSTRAINTS); echo '$(DIARISATION)') | sha256sum | cut -c1-12)
BUF_VERSION := 1.47.2
BUF := .tools/buf/node_modules/.bin/buf
# Also the .proto files as one FileDescriptorSet (imports and comments included), merc/v1/merc.protoset:
# shipped in the package and `make protoset`'s release artefact, for consumers in other languages.
PROTOC = $(PY) -m grpc_tools.protoc -Iprotos --python_out=$(1) --pyi_out=$(1) --grpc_python_out=$(1) \
  --include_imports --include_source_info --descriptor_set_out=$(1)/merc/v1/merc.protoset protos/merc/v1/*.proto
PROTOSET := dist/merc.protoset

.PHONY: help install lock run test lint up down proto proto-check protoset model-configs model-configs-check buf-lint buf-breaking models bench bench-idle clean

help:
	@echo "make run     analyse examples/conversation.jsonl in embedded mode (no servers)"
	@echo "make test    install, lint, start Kafka/PostgreSQL/Triton locally, run all tests, stop them"
	@echo "make lint    ruff and the dead-code check (part of make test)"
	@echo "make lock    re-pin the Python dependencies to today's releases (deploy/requirements/)"
	@echo "make up      the full local stack + services; make down stops it"
	@echo "make models  retrain the models from the corpora in MERC_DATA_DIR"
	@echo "make bench   latency, throughput and load on the local stack + model quality: bench/results/"
	@echo "make bench-serving  ONNX Runtime vs torch per model, Triton batching settings swept: bench/results/"
	@echo "make bench-idle  10,000 idle conversations a round: fusion and gateway memory after eviction"
	@echo "make proto   regenerate services/merc/v1 from protos/"
	@echo "make model-configs  regenerate model_repository/*/configs/gpu.pbtxt and warmup/ from each config.pbtxt"
	@echo "make protoset  $(PROTOSET): the event schemas as a descriptor set, for a release"
	@echo "make buf-breaking AGAINST=REF  protos/ against a git ref (default main): no wire or API break"
	@echo "make deploy-check  lint/render/validate the Helm chart, compose file and Dockerfiles"
	@echo "make images  build and push the container images (needs Docker; REGISTRY=... TAG=...)"
	@echo "make images-local  build the four images here with podman (no registry needed)"
	@echo "make test-k8s  the images on a real single-node Kubernetes: helm install/test/upgrade/uninstall"

install: $(STAMP)

$(STAMP): pyproject.toml deploy/requirements/text-large.txt $(CONSTRAINTS)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@# pip first; setuptools and wheel too, so that the offline install can build the project.
	$(PIP_INSTALL) -c $(CONSTRAINTS) pip setuptools wheel
	$(PIP_INSTALL) -c $(CONSTRAINTS) -e '.[dev]'
	$(PIP_INSTALL) $(DIARISATION)
	$(PIP_INSTALL) $(TEXT_LARGE)
	@rm -f $(VENV)/.installed-* && touch $@

# Re-pin .venv's and the local Triton's distributions to what pip resolves today; `make test` after.
lock:
	deploy/requirements/lock.sh $(CONSTRAINTS) '.[dev]' pip setuptools wheel
	deploy/requirements/lock.sh deploy/requirements/triton-local.txt \
	  nvidia-pytriton==$$(sed -n 's/^PYTRITON_VERSION=//p' deploy/local/triton.sh) pip

# The models' ONNX exports (merc onnx; served instead of torch where present, bench/results/onnx.md),
# redone whenever a model's committed files or the model code change: an export of other weights is
# ignored at load, but one of older code (a changed graph) could only be caught here.
ONNX_STAMP := .cache/onnx-$(shell cat model_repository/*/1/SHA256SUMS model_repository/*/1/*/SHA256SUMS services/merc/models/*.py | sha256sum | cut -c1-12)
install: $(ONNX_STAMP)
$(ONNX_STAMP): $(STAMP)
	$(VENV)/bin/merc onnx
	@mkdir -p .cache && rm -f .cache/onnx-* && touch $@

run: install
	$(VENV)/bin/merc analyze examples/conversation.jsonl $(ARGS)

test: install lint
	deploy/local/test.sh

# Style, import order and likely bugs (ruff.toml), then dead code: names only frameworks call are in deploy/lint/vulture_allow.py.
lint: install
	$(VENV)/bin/ruff check services tests bench model_repository examples
	$(VENV)/bin/vulture services bench model_repository deploy/lint/vulture_allow.py --min-confidence 60 --exclude services/merc/v1
	@echo "lint: ok"

up: install
	deploy/local/stack.sh up all
	$(VENV)/bin/merc db upgrade
	deploy/local/services.sh start all
	@echo "gateway on 127.0.0.1:$${MERC_GATEWAY_PORT:-28050}; try: $(VENV)/bin/merc analyze --remote 127.0.0.1:28050 examples/conversation.jsonl"

down:
	-deploy/local/services.sh stop all
	deploy/local/stack.sh down all

proto: install
	$(call PROTOC,services)

# Fails when the committed generated code is not what protos/ generates.
proto-check: install
	@tmp=$$(mktemp -d) && $(call PROTOC,$$tmp) && \
	  for f in $$tmp/merc/v1/*; do cmp -s "$$f" "services/merc/v1/$$(basename $$f)" || { echo "stale generated code: services/merc/v1/$$(basename $$f); run 'make proto'"; rm -rf $$tmp; exit 1; }; done; \
	  rm -rf $$tmp; echo "generated code is up to date"

# The release's descriptor set (examples/README.md, "Consuming events"): the committed one, once checked against protos/.
protoset: proto-check
	@mkdir -p $(dir $(PROTOSET)) && cp services/merc/v1/merc.protoset $(PROTOSET) && echo "$(PROTOSET)"

# Each model's configs/gpu.pbtxt (tritonserver --model-config-name=gpu) and warm-up samples, from its config.pbtxt.
model-configs: install
	$(PY) -m merc.models.triton_configs model_repository

# Fails when a committed one is not what its config.pbtxt generates (tests/unit/test_triton_configs.py checks the same).
model-configs-check: install
	$(PY) -m merc.models.triton_configs --check model_repository && echo "model configs are up to date"

$(BUF):
	deploy/retry.sh npm install --silent --no-audit --no-fund --prefix .tools/buf @bufbuild/buf@$(BUF_VERSION)

buf-lint: $(BUF)
	$(BUF) lint
	@echo "buf lint: ok"

# Consumers decode merc.emotions with these schemas: a change must stay readable by the old ones (buf.yaml: FILE).
AGAINST ?= main
buf-breaking: $(BUF)
	$(BUF) breaking --against '.git#ref=$(AGAINST)'
	@echo "buf breaking against $(AGAINST): ok"

# Retrains every model from the corpora in MERC_DATA_DIR (merc.data). The shipped text, audio and face weights were trained with
# DEVICE=cuda (same code; on one H100/H200: text ~3 min for 3 seeds, audio ~3 min a seed, vision ~5 min
# for 3 seeds); on 2 CPU cores (the default, deterministic) expect text ~4.5 h, audio ~7 h and vision ~7 h
# (measured smaller recipes scaled by compute), fusion ~3 min, eval ~2 min. Fusion goes last: it reads the encoders.
DEVICE ?= cpu
models: install
	$(VENV)/bin/merc train text --device $(DEVICE)
	$(VENV)/bin/merc train audio --device $(DEVICE)
	$(VENV)/bin/merc train vision --device $(DEVICE)
	$(VENV)/bin/merc train fusion
	$(VENV)/bin/merc eval

# Starts the stack like `make up` (and leaves it running: `make down`), then every benchmark.
bench: install
	deploy/local/stack.sh up all
	$(VENV)/bin/merc db upgrade
	deploy/local/services.sh start all
	$(PY) bench/latency.py
	$(PY) bench/throughput.py
	$(PY) bench/load.py
	$(VENV)/bin/merc eval

# The serving choices' own measurements: ONNX Runtime vs torch per model, Triton's batching settings swept.
bench-serving: install
	deploy/local/stack.sh up triton
	$(PY) bench/onnx_vs_torch.py
	$(PY) bench/triton_sweep.py

# Opens 10,000 conversations per round and leaves them idle (fusion restarted with a 240 s idle time): memory after eviction.
bench-idle: install
	deploy/local/stack.sh up all
	$(VENV)/bin/merc db upgrade
	deploy/local/services.sh stop fusion
	MERC_CONVERSATION_IDLE_S=240 deploy/local/services.sh start all
	MERC_CONVERSATION_IDLE_S=240 $(PY) bench/idle_conversations.py --conversations 10000 --rounds 3
	deploy/local/services.sh stop fusion
	deploy/local/services.sh start fusion

clean:
	rm -rf .run .tools .pytest_cache

# Helm chart, compose, images: deploy-tools, deploy-check, images
include deploy/deploy.mk
