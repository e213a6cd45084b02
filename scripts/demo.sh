#!/usr/bin/env bash
# One command on a fresh machine: installs what is needed, builds, and runs the main job on
# a small real example. A local apache2 plays the internet (dl.k8s.io and github.com via a
# manifest `mirrors` entry); a second apache2 serves the air-gapped web root.
#   connected side:  keygen -> lock -> create (download, verify, pack, sign)
#   the USB stick:   verify with stock minisign, inspect
#   air-gapped side: install into the web root, fetch a file back over HTTP
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
bash scripts/setup-test-env.sh >/dev/null
cargo build --release --quiet
BUNDLE=$ROOT/target/release/bundle
source scripts/lib/apache.sh

DEMO=${DEMO_DIR:-$(mktemp -d /tmp/airgap-demo.XXXXXX)}
chmod 755 "$DEMO"
trap stop_apache EXIT   # whichever apache is running (the upstream one is stopped mid-way)
echo "== demo workspace: $DEMO"

# "Upstream": real-looking release paths, served locally.
UP=$DEMO/upstream
mkdir -p "$UP/dl.k8s.io/release/v1.31.4/bin/linux/amd64" \
         "$UP/github.com/containernetworking/plugins/releases/download/v1.6.0"
head -c 3000000 /dev/urandom >"$UP/dl.k8s.io/release/v1.31.4/bin/linux/amd64/kubeadm"
head -c 2000000 /dev/urandom >"$UP/dl.k8s.io/release/v1.31.4/bin/linux/amd64/kubectl"
seq 1 200000 | gzip -c >"$UP/github.com/containernetworking/plugins/releases/download/v1.6.0/cni-plugins-linux-amd64-v1.6.0.tgz"
chmod -R a+rX "$UP"
start_apache "$UP" "$DEMO/apache-upstream"
UPSTREAM_PORT=$APACHE_PORT; UPSTREAM_PID=$APACHE_PID

mkdir -p "$DEMO/connected"
cat >"$DEMO/connected/k8s.yaml" <<YAML
apiVersion: bundle/v1
name: kubespray-offline
version: 2.27.0
files:
  - url: https://dl.k8s.io/release/v1.31.4/bin/linux/amd64/kubeadm
  - url: https://dl.k8s.io/release/v1.31.4/bin/linux/amd64/kubectl
  - url: https://github.com/containernetworking/plugins/releases/download/v1.6.0/cni-plugins-linux-amd64-v1.6.0.tgz
mirrors:   # fetch through a local "proxy"; bundle paths keep the canonical URLs
  - {prefix: https://dl.k8s.io/, url: http://127.0.0.1:$UPSTREAM_PORT/dl.k8s.io/}
  - {prefix: https://github.com/, url: http://127.0.0.1:$UPSTREAM_PORT/github.com/}
YAML
cd "$DEMO/connected"
echo "== bundle keygen / lock / create"
"$BUNDLE" keygen --out site --no-password
"$BUNDLE" lock k8s.yaml -o k8s.lock.yaml --cache "$DEMO/cache"
"$BUNDLE" create k8s.lock.yaml -o k8s.bundle.tar.zst --key site.key --cache "$DEMO/cache"
APACHE_PID=$UPSTREAM_PID stop_apache

echo "== on the stick: stock minisign, then bundle verify and inspect"
minisign -Vm k8s.bundle.tar.zst -p site.pub
"$BUNDLE" verify k8s.bundle.tar.zst --pubkey site.pub
"$BUNDLE" inspect k8s.bundle.tar.zst

echo "== air-gapped side: install into an apache web root"
WWW=$DEMO/www
mkdir -p "$WWW"
start_apache "$WWW" "$DEMO/apache-site"
"$BUNDLE" install k8s.bundle.tar.zst --pubkey site.pub --web-root "$WWW" \
    --base-url "http://127.0.0.1:$APACHE_PORT/"
URL="http://127.0.0.1:$APACHE_PORT/files/dl.k8s.io/release/v1.31.4/bin/linux/amd64/kubeadm"
GOT=$(python3 -c "import hashlib,urllib.request; print(hashlib.sha256(urllib.request.urlopen('$URL').read()).hexdigest())")
WANT=$(sha256sum "$UP/dl.k8s.io/release/v1.31.4/bin/linux/amd64/kubeadm" | cut -d' ' -f1)
[[ $GOT == "$WANT" ]] || { echo "served kubeadm differs from upstream" >&2; exit 1; }
echo "== served over HTTP and identical to upstream: $URL"
echo "== Kubespray variables ($WWW/kubespray-offline.yml):"
cat "$WWW/kubespray-offline.yml"
echo "== done. Look in $DEMO (connected/, www/); re-run install to see it is idempotent."
