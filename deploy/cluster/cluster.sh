#!/usr/bin/env bash
# A real single-node Kubernetes on this machine, for `make test-k8s` (deploy/cluster/test.sh).
#   cluster.sh up            start it (idempotent) and wait until the node is Ready
#   cluster.sh load IMAGE..  copy podman images into the node's containerd (unchanged ones are skipped)
#   cluster.sh env           the environment to use it: KUBECONFIG and PATH
#   cluster.sh down          stop everything; pods, their mounts, network namespaces and kube-proxy's
#                            rules go with it (the image store stays, as a cache)
#
# What runs, all as host processes under $MERC_RUN_DIR/cluster (logs: $MERC_RUN_DIR/logs/cluster-*.log):
#   etcd (Debian's etcd-server), kube-apiserver, kube-controller-manager, kube-scheduler, kubelet and
#   kube-proxy (iptables mode), built from the official sources by deploy/cluster/build.sh;
#   containerd (Debian's, an instance of its own) with runc and the CNI bridge plugin; CoreDNS.
# Where it differs from a production cluster, and why:
#   - CoreDNS runs as a host process on the node's address (kubelet's clusterDNS) rather than as pods:
#     the same server and `kubernetes` plugin, without one more image to build.
#   - every component authenticates with one admin certificate (system:masters); RBAC is on for
#     everything else (service accounts, the chart's objects).
#   - the sandbox cannot write a negative oom_score_adj (containerd: restrict_oom_score_adj) nor make
#     cgroups per QoS class, cgroups are v1 and the disk is invisible to cAdvisor: hence the kubelet
#     settings below. Image GC and disk eviction are off: the images are loaded here, never pulled.
#   - the pause image is built here (a static Go binary), since no registry is reachable.
#   - the bridge CNI plugin does not enforce NetworkPolicies, and there is no GPU.
#   - a connection to a service address that kube-proxy has not (yet) translated is refused here
#     (service_cidr_guard): on a cloud network it goes nowhere, but this sandbox's egress proxy answers
#     any address with HTTP/2 404, and a gRPC client that connected then kept that answer for good.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# shellcheck source=../local/env.sh
source "$REPO/deploy/local/env.sh"
STATE="$MERC_RUN_DIR/cluster"
LOGS="$MERC_RUN_DIR/logs"
POD_CIDR="${MERC_K8S_POD_CIDR:-10.244.0.0/16}"
SERVICE_CIDR="${MERC_K8S_SERVICE_CIDR:-10.96.0.0/16}"
API_SERVICE_IP="${MERC_K8S_API_SERVICE_IP:-10.96.0.1}"
API_PORT="${MERC_K8S_API_PORT:-16443}"
ETCD_PORT="${MERC_K8S_ETCD_PORT:-12379}"
BRIDGE=mercbr0
PAUSE_IMAGE=localhost/merc-test/pause:3.10
NODE="$(hostname | tr 'A-Z' 'a-z')"
NODE_IP="${MERC_STACK_HOST:-$(ip -4 route get 1.1.1.1 2>/dev/null | sed -n 's/.* src \([0-9.]*\).*/\1/p')}"
[ "$NODE_IP" != 127.0.0.1 ] || NODE_IP=$(ip -4 route get 1.1.1.1 | sed -n 's/.* src \([0-9.]*\).*/\1/p')
PKI="$STATE/pki"
KUBECONFIG_FILE="$STATE/admin.kubeconfig"
SOCK="$STATE/containerd/containerd.sock"
export CONTAINERS_CONF="$MERC_RUN_DIR/images/containers.conf"

log() { echo "cluster: $*"; }
bin() { BIN=$("$REPO/deploy/cluster/build.sh"); }
ctr_() { ctr --address "$SOCK" --namespace k8s.io "$@"; }
kc() { "$BIN/kubectl" --kubeconfig "$KUBECONFIG_FILE" "$@"; }

packages() {
  local missing=()
  command -v containerd >/dev/null || missing+=(containerd)
  command -v runc >/dev/null || missing+=(runc)
  [ -x /usr/lib/cni/bridge ] || missing+=(containernetworking-plugins)
  command -v etcd >/dev/null || missing+=(etcd-server)
  command -v iptables >/dev/null || missing+=(iptables)
  command -v conntrack >/dev/null || missing+=(conntrack)
  command -v openssl >/dev/null || missing+=(openssl)
  command -v skopeo >/dev/null || missing+=(skopeo)
  command -v podman >/dev/null || missing+=(podman)
  [ ${#missing[@]} = 0 ] || apt_install "${missing[@]}"
  [ -f "$CONTAINERS_CONF" ] || write_containers_conf "$CONTAINERS_CONF"
}

# ---- processes --------------------------------------------------------------------------------------
pidfile() { echo "$MERC_RUN_DIR/pids/k8s-$1.pid"; }
alive() { pidfile_alive "$(pidfile "$1")" "$2"; }

start() { # name, match, command...
  local name=$1 match=$2
  shift 2
  if alive "$name" "$match"; then return 0; fi
  echo "=== $(date -Is) start" >>"$LOGS/cluster-$name.log"
  nohup setsid "$@" >>"$LOGS/cluster-$name.log" 2>&1 </dev/null &
  echo $! >"$(pidfile "$name")"
}

stop() { # name, match
  local f
  f=$(pidfile "$1")
  alive "$1" "$2" || { rm -f "$f"; return 0; }
  local pid i
  pid=$(cat "$f")
  kill "$pid" 2>/dev/null || true
  for ((i = 0; i < 40; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$f"
}

wait_for() { # seconds, description, command...
  local seconds=$1 what=$2 i
  shift 2
  for ((i = 0; i < seconds * 2; i++)); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.5
  done
  echo "cluster: $what did not come up in ${seconds}s; see $LOGS/cluster-*.log" >&2
  return 1
}

# ---- certificates -------------------------------------------------------------------------------------
cert() { # name, subject, [extensions]
  local name=$1 subject=$2 ext=${3:-}
  [ -f "$PKI/$name.crt" ] && return 0
  openssl req -new -newkey rsa:2048 -nodes -keyout "$PKI/$name.key" -subj "$subject" -out "$PKI/$name.csr" 2>/dev/null
  printf 'basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth,clientAuth\n%s\n' "$ext" >"$PKI/$name.ext"
  openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial -days 30 \
    -extfile "$PKI/$name.ext" -out "$PKI/$name.crt" 2>/dev/null
}

pki() {
  mkdir -p "$PKI"
  if [ ! -f "$PKI/ca.crt" ]; then
    openssl req -x509 -new -newkey rsa:2048 -nodes -keyout "$PKI/ca.key" -subj "/CN=merc-test-cluster-ca" -days 30 \
      -out "$PKI/ca.crt" 2>/dev/null
  fi
  cert apiserver "/CN=kube-apiserver" \
    "subjectAltName=DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,DNS:localhost,DNS:$NODE,IP:$API_SERVICE_IP,IP:127.0.0.1,IP:$NODE_IP"
  cert admin "/O=system:masters/CN=merc-test-admin"
  cert kubelet "/CN=$NODE" "subjectAltName=DNS:$NODE,IP:$NODE_IP,IP:127.0.0.1"
  [ -f "$PKI/sa.key" ] || { openssl genrsa -out "$PKI/sa.key" 2048 2>/dev/null; openssl rsa -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null; }
  cat >"$KUBECONFIG_FILE" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: merc-test
  cluster: {certificate-authority: $PKI/ca.crt, server: "https://$NODE_IP:$API_PORT"}
users:
- name: admin
  user: {client-certificate: $PKI/admin.crt, client-key: $PKI/admin.key}
contexts:
- name: merc-test
  context: {cluster: merc-test, user: admin}
current-context: merc-test
EOF
}

# ---- components ---------------------------------------------------------------------------------------
start_etcd() {
  mkdir -p "$STATE/etcd"
  chmod 700 "$STATE/etcd"
  start etcd "etcd" etcd --name merc-test --data-dir "$STATE/etcd" \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$((ETCD_PORT + 1))" --initial-advertise-peer-urls "http://127.0.0.1:$((ETCD_PORT + 1))" \
    --initial-cluster "merc-test=http://127.0.0.1:$((ETCD_PORT + 1))"
  wait_for 60 etcd port_open "$ETCD_PORT"
}

start_apiserver() {
  start apiserver "kube-apiserver" "$BIN/kube-apiserver" --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
    --bind-address 0.0.0.0 --secure-port "$API_PORT" --advertise-address "$NODE_IP" \
    --service-cluster-ip-range "$SERVICE_CIDR" --allow-privileged=true --authorization-mode Node,RBAC \
    --client-ca-file "$PKI/ca.crt" --tls-cert-file "$PKI/apiserver.crt" --tls-private-key-file "$PKI/apiserver.key" \
    --kubelet-client-certificate "$PKI/admin.crt" --kubelet-client-key "$PKI/admin.key" \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --service-account-key-file "$PKI/sa.pub" --service-account-signing-key-file "$PKI/sa.key"
  wait_for 120 kube-apiserver kc get --raw /readyz
}

start_controllers() {
  start controller-manager "kube-controller-manager" "$BIN/kube-controller-manager" --kubeconfig "$KUBECONFIG_FILE" \
    --leader-elect=false --use-service-account-credentials=true --service-account-private-key-file "$PKI/sa.key" \
    --root-ca-file "$PKI/ca.crt" --cluster-signing-cert-file "$PKI/ca.crt" --cluster-signing-key-file "$PKI/ca.key" \
    --service-cluster-ip-range "$SERVICE_CIDR" --bind-address 127.0.0.1
  start scheduler "kube-scheduler" "$BIN/kube-scheduler" --kubeconfig "$KUBECONFIG_FILE" --leader-elect=false --bind-address 127.0.0.1
}

start_containerd() {
  mkdir -p "$STATE/containerd" "$STATE/cni/net.d" "$STATE/cni/ipam"
  cat >"$STATE/containerd/config.toml" <<EOF
version = 2
root = "$STATE/containerd/root"
state = "$STATE/containerd/state"
[grpc]
  address = "$SOCK"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$STATE/cni/net.d"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
EOF
  # Pods get the node interface's MTU (a larger one breaks big packets leaving the node); the
  # firewall plugin accepts their forwarded traffic on hosts whose FORWARD policy is DROP.
  local mtu
  mtu=$(cat "/sys/class/net/$(ip -4 route get 1.1.1.1 | sed -n 's/.* dev \([^ ]*\).*/\1/p')/mtu" 2>/dev/null || echo 1500)
  cat >"$STATE/cni/net.d/10-merc.conflist" <<EOF
{"cniVersion": "0.4.0", "name": "merc", "plugins": [
  {"type": "bridge", "bridge": "$BRIDGE", "isGateway": true, "ipMasq": true, "hairpinMode": true, "mtu": $mtu,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "$POD_CIDR"}]], "routes": [{"dst": "0.0.0.0/0"}], "dataDir": "$STATE/cni/ipam"}},
  {"type": "portmap", "capabilities": {"portMappings": true}},
  {"type": "firewall"}
]}
EOF
  start containerd "containerd" containerd --config "$STATE/containerd/config.toml"
  wait_for 60 containerd ctr_ version
}

pause_image() {
  ctr_ images ls -q "name==$PAUSE_IMAGE" | grep -q . && return 0
  local src="$STATE/pause"
  mkdir -p "$src"
  # The pod sandbox's process: holds the namespaces, reaps orphans, exits on SIGTERM/SIGINT.
  cat >"$src/main.go" <<'EOF'
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD)
	for s := range sigs {
		if s != syscall.SIGCHLD {
			os.Exit(0)
		}
		for {
			var status syscall.WaitStatus
			if pid, _ := syscall.Wait4(-1, &status, syscall.WNOHANG, nil); pid <= 0 {
				break
			}
		}
	}
}
EOF
  printf 'module pause\n\ngo 1.21\n' >"$src/go.mod"
  (cd "$src" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o pause .)
  printf 'FROM scratch\nCOPY pause /pause\nUSER 65535:65535\nENTRYPOINT ["/pause"]\n' >"$src/Containerfile"
  podman build -q -f "$src/Containerfile" -t "$PAUSE_IMAGE" "$src" >/dev/null
  load "$PAUSE_IMAGE"
}

start_kubelet() {
  mkdir -p "$STATE/kubelet/root"
  cat >"$STATE/kubelet/config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $PKI/ca.crt}
authorization: {mode: Webhook}
tlsCertFile: $PKI/kubelet.crt
tlsPrivateKeyFile: $PKI/kubelet.key
containerRuntimeEndpoint: unix://$SOCK
clusterDNS: [$NODE_IP]
clusterDomain: cluster.local
readOnlyPort: 0
failCgroupV1: false
cgroupDriver: cgroupfs
failSwapOn: false
cgroupsPerQOS: false
enforceNodeAllocatable: []
localStorageCapacityIsolation: false
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: "100Mi"}
serializeImagePulls: false
EOF
  start kubelet "kubelet" "$BIN/kubelet" --config "$STATE/kubelet/config.yaml" --kubeconfig "$KUBECONFIG_FILE" \
    --root-dir "$STATE/kubelet/root" --hostname-override "$NODE" --node-ip "$NODE_IP"
  wait_for 180 "the node" node_ready
}

node_ready() { [ "$(kc get node "$NODE" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" = True ]; }

start_proxy() {
  start kube-proxy "kube-proxy" "$BIN/kube-proxy" --kubeconfig "$KUBECONFIG_FILE" --proxy-mode iptables \
    --cluster-cidr "$POD_CIDR" --hostname-override "$NODE" --conntrack-max-per-core 0 \
    --metrics-bind-address 127.0.0.1:10249 --healthz-bind-address 127.0.0.1:10256
}

# Service addresses exist only as kube-proxy's DNAT rules; traffic still addressed to one after
# translation had no rule, and is refused. CNI-ADMIN is the firewall plugin's chain for an
# administrator's rules, run before the per-pod ACCEPTs; the plugin creates it only if missing.
service_cidr_guard() {
  local chain
  for chain in CNI-ADMIN MERC-K8S-SERVICES; do
    iptables -N "$chain" 2>/dev/null || true
    iptables -C "$chain" -d "$SERVICE_CIDR" -j REJECT 2>/dev/null || iptables -A "$chain" -d "$SERVICE_CIDR" -j REJECT
  done
  iptables -C OUTPUT -j MERC-K8S-SERVICES 2>/dev/null || iptables -I OUTPUT 1 -j MERC-K8S-SERVICES
}

start_dns() {
  cat >"$STATE/Corefile" <<EOF
.:53 {
    bind $NODE_IP
    errors
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        kubeconfig $KUBECONFIG_FILE merc-test
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }
    forward . /etc/resolv.conf
    cache 10
}
EOF
  start coredns "coredns" "$BIN/coredns" -conf "$STATE/Corefile"
}

up() {
  packages
  bin
  mkdir -p "$STATE" "$LOGS"
  pki
  start_etcd
  start_apiserver
  start_controllers
  start_containerd
  pause_image
  service_cidr_guard
  start_proxy
  start_dns
  start_kubelet
  # Pods may be created once the default service account exists.
  wait_for 60 "the default service account" kc -n default get serviceaccount default
  log "up: node $NODE ($NODE_IP) Ready, API https://$NODE_IP:$API_PORT, KUBECONFIG=$KUBECONFIG_FILE"
}

# ---- images -------------------------------------------------------------------------------------------
# podman's image into containerd under the same name, as zstd-compressed layers (the store keeps the
# compressed copy and the unpacked one; gigabytes of PyTorch make that count). A stamp of podman's
# image id skips images already there.
load() {
  local image id stamp archive
  mkdir -p "$STATE/images"
  for image in "$@"; do
    id=$(podman image inspect --format '{{.Id}}' "$image")
    stamp="$STATE/images/$(echo "$image" | tr '/:' '__').id"
    if [ "$(cat "$stamp" 2>/dev/null)" = "$id" ] && ctr_ images ls -q "name==$image" | grep -q .; then
      continue
    fi
    log "loading $image into containerd"
    archive="$STATE/images/load.tar"
    rm -f "$archive"
    # An OCI archive names its image by tag; --base-name puts the repository back in front.
    skopeo copy -q --dest-compress --dest-compress-format zstd "containers-storage:$image" "oci-archive:$archive:${image##*:}"
    ctr_ images import --base-name "${image%:*}" "$archive" >/dev/null
    rm -f "$archive"
    ctr_ images ls -q "name==$image" | grep -q . || { echo "cluster: $image is not in containerd after the import" >&2; exit 1; }
    echo "$id" >"$stamp"
  done
}

# ---- down ---------------------------------------------------------------------------------------------
# iptables chains whose names start with one of the prefixes (the kubelet's KUBE-FIREWALL and canaries,
# whatever kube-proxy --cleanup left, the bridge plugin's CNI-* masquerade rules), and the rules
# that jump to them, in every table.
drop_chains() {
  local cmd table prefix chain
  for cmd in iptables ip6tables; do
    command -v "$cmd" >/dev/null || continue
    for table in filter nat mangle; do
      for prefix in "$@"; do
        { "$cmd" -t "$table" -S 2>/dev/null || true; } | { grep -E "^-A .* -j $prefix" || true; } | sed 's/^-A/-D/' | while read -r rule; do
          eval "$cmd" -t "$table" "$rule" 2>/dev/null || true
        done
        for chain in $("$cmd" -t "$table" -S 2>/dev/null | awk -v p="$prefix" '$1 == "-N" && index($2, p) == 1 {print $2}'); do
          "$cmd" -t "$table" -F "$chain" 2>/dev/null || true
        done
        for chain in $("$cmd" -t "$table" -S 2>/dev/null | awk -v p="$prefix" '$1 == "-N" && index($2, p) == 1 {print $2}'); do
          "$cmd" -t "$table" -X "$chain" 2>/dev/null || true
        done
      done
    done
  done
}

down() {
  bin
  if alive kubelet kubelet && alive apiserver kube-apiserver; then
    # Through the kubelet first: it tears each pod's network down (CNI DEL) and unmounts its volumes.
    kc delete pods --all --all-namespaces --grace-period=0 --force >/dev/null 2>&1 || true
    for _ in $(seq 1 60); do
      [ -z "$(ctr_ tasks ls -q 2>/dev/null)" ] && break
      sleep 1
    done
  fi
  stop kubelet kubelet
  if alive containerd containerd; then
    local c
    for c in $(ctr_ tasks ls -q 2>/dev/null); do ctr_ tasks kill -s SIGKILL "$c" >/dev/null 2>&1 || true; done
    sleep 1
    for c in $(ctr_ containers ls -q 2>/dev/null); do
      ctr_ tasks delete -f "$c" >/dev/null 2>&1 || true
      ctr_ containers delete "$c" >/dev/null 2>&1 || true
    done
  fi
  stop containerd containerd
  stop coredns coredns
  stop kube-proxy kube-proxy
  "$BIN/kube-proxy" --cleanup >/dev/null 2>&1 || true
  stop scheduler kube-scheduler
  stop controller-manager kube-controller-manager
  stop apiserver kube-apiserver
  stop etcd etcd
  # What a killed pod left: mounts under the state dir (deepest first), network namespaces, the bridge.
  { grep -o " $STATE[^ ]*" /proc/mounts || true; } | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
  local ns
  for ns in $(ip netns list 2>/dev/null | awk '/^cni-/ {print $1}'); do ip netns delete "$ns" 2>/dev/null || true; done
  ip link delete "$BRIDGE" 2>/dev/null || true
  drop_chains CNI- KUBE- MERC-K8S-
  # A fresh cluster next time; the image store and the certificates stay.
  rm -rf "$STATE/etcd" "$STATE/kubelet" "$STATE/cni/ipam"
  log "down"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  load) shift; packages; load "$@" ;;
  env) bin; echo "export KUBECONFIG=$KUBECONFIG_FILE"; echo "export PATH=$BIN:\$PATH" ;;
  *) echo "usage: $0 up|down|load IMAGE...|env" >&2; exit 2 ;;
esac
