#!/usr/bin/env bash
# Kubernetes and CoreDNS binaries for the single-node test cluster, built from their official sources
# on the Go module proxy and cached in $MERC_K8S_CACHE (default ~/.cache/merc-k8s): a later run finds
# them and does nothing.
#   deploy/cluster/build.sh          build what is missing; prints the bin directory
#
# k8s.io/kubernetes cannot be `go install`ed: its go.mod points the 31 staging modules (k8s.io/api,
# k8s.io/client-go, ...) at ./staging. A small module requires it and maps each of those to its
# published v0.x.y release, which is the same code; the list comes from kubernetes' own go.mod.
set -euo pipefail
K8S_VERSION="${K8S_VERSION:-v1.34.4}"
COREDNS_VERSION="${COREDNS_VERSION:-v1.12.4}"
CACHE="${MERC_K8S_CACHE:-$HOME/.cache/merc-k8s}"
BIN="$CACHE/$K8S_VERSION/bin"
COMMANDS=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl)

have_all() {
  local c
  for c in "${COMMANDS[@]}" coredns; do [ -x "$BIN/$c" ] || return 1; done
}

if have_all; then echo "$BIN"; exit 0; fi
command -v go >/dev/null || { echo "build.sh: Kubernetes is built with Go (1.24 or newer); no 'go' on PATH" >&2; exit 1; }
mkdir -p "$BIN"
src="$CACHE/$K8S_VERSION/src"
mkdir -p "$src"
staging_version="v0.${K8S_VERSION#v1.}"

if [ ! -f "$src/go.sum" ] || ! grep -q "k8s.io/kubernetes $K8S_VERSION" "$src/go.mod" 2>/dev/null; then
  echo "build.sh: resolving k8s.io/kubernetes $K8S_VERSION through the Go module proxy" >&2
  mod=$(cd "$src" && GOFLAGS=-mod=mod go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
  [ -f "$mod" ] || { echo "build.sh: no go.mod for k8s.io/kubernetes@$K8S_VERSION" >&2; exit 1; }
  {
    echo "module merc.local/kubebuild"
    echo
    sed -n 's/^go \(.*\)/go \1/p' "$mod" | head -n 1
    echo
    echo "require k8s.io/kubernetes $K8S_VERSION"
    echo
    echo "replace ("
    sed -n 's#^[[:space:]]*\(k8s.io/[a-z0-9-]*\) => ./staging/src/.*#\t\1 => \1 '"$staging_version"'#p' "$mod"
    echo ")"
  } >"$src/go.mod"
  cat >"$src/tools.go" <<'GO'
//go:build tools

package kubebuild

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-proxy"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubelet"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
GO
  (cd "$src" && go mod tidy -e >/dev/null 2>&1 || true; cd "$src" && GOFLAGS=-mod=mod go mod download)
fi

missing=()
for c in "${COMMANDS[@]}"; do [ -x "$BIN/$c" ] || missing+=("k8s.io/kubernetes/cmd/$c"); done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "build.sh: building ${missing[*]##*/} ($K8S_VERSION; ~10-20 min on 2 cores the first time)" >&2
  # One `go build` for all of them: their shared packages compile once.
  (cd "$src" && CGO_ENABLED=0 GOFLAGS=-mod=mod nice -n 10 go build -trimpath -tags tools \
    -ldflags "-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=${K8S_VERSION#v1.} -X k8s.io/client-go/pkg/version.gitVersion=$K8S_VERSION" \
    -o "$BIN/" "${missing[@]}")
fi

if [ ! -x "$BIN/coredns" ]; then
  echo "build.sh: building coredns $COREDNS_VERSION" >&2
  GOBIN="$BIN" CGO_ENABLED=0 nice -n 10 go install -trimpath -ldflags "-s -w" "github.com/coredns/coredns@$COREDNS_VERSION"
fi
have_all || { echo "build.sh: a binary is missing from $BIN" >&2; exit 1; }
echo "$BIN"
