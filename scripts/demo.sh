#!/usr/bin/env bash
# One command on a fresh machine: installs what is needed, builds, and runs the main job on
# a small real example. A local apache2 plays the internet (dl.k8s.io and github.com via a
# manifest `mirrors` entry) and a local docker-registry plays an upstream image registry (an
# image built offline with umoci); a second apache2 serves the air-gapped web root and a
# second docker-registry is the site registry.
#   connected side:  keygen -> lock -> create (download, verify, pack, sign)
#   the USB stick:   verify with stock minisign, inspect
#   air-gapped side: install into the web root and the site registry, fetch a file back
#                    over HTTP and the image's manifest with skopeo
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
bash scripts/setup-test-env.sh >/dev/null
cargo build --release --quiet
BUNDLE=$ROOT/target/release/bundle
source scripts/lib/apache.sh
source scripts/lib/registry.sh

DEMO=${DEMO_DIR:-$(mktemp -d /tmp/airgap-demo.XXXXXX)}
chmod 755 "$DEMO"
trap 'stop_apache; stop_registries' EXIT   # whichever apache is running (the upstream one is stopped mid-way)
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

# An upstream registry with a small real image (built offline with umoci).
start_registry upstream "$DEMO/registry-upstream"
IMG=$DEMO/image
umoci init --layout "$IMG/oci" && umoci new --image "$IMG/oci:pause"
umoci unpack --rootless --image "$IMG/oci:pause" "$IMG/rootfs" >/dev/null
echo "pause 3.10 (demo)" >"$IMG/rootfs/rootfs/pause"
umoci repack --image "$IMG/oci:pause" "$IMG/rootfs"
skopeo copy -q --dest-tls-verify=false "oci:$IMG/oci:pause" \
    "docker://127.0.0.1:${REG_PORT[upstream]}/pause:3.10"

mkdir -p "$DEMO/connected"
cat >"$DEMO/connected/k8s.yaml" <<YAML
apiVersion: bundle/v1
name: kubespray-offline
version: 2.27.0
files:
  - url: https://dl.k8s.io/release/v1.31.4/bin/linux/amd64/kubeadm
  - url: https://dl.k8s.io/release/v1.31.4/bin/linux/amd64/kubectl
  - url: https://github.com/containernetworking/plugins/releases/download/v1.6.0/cni-plugins-linux-amd64-v1.6.0.tgz
images:    # on a real site: registry.k8s.io/pause:3.10 and friends
  - ref: 127.0.0.1:${REG_PORT[upstream]}/pause:3.10
mirrors:   # fetch through a local "proxy"; bundle paths keep the canonical URLs
  - {prefix: https://dl.k8s.io/, url: http://127.0.0.1:$UPSTREAM_PORT/dl.k8s.io/}
  - {prefix: https://github.com/, url: http://127.0.0.1:$UPSTREAM_PORT/github.com/}
YAML
cd "$DEMO/connected"
echo "== bundle keygen / lock / create"
"$BUNDLE" keygen --out site --no-password
"$BUNDLE" lock k8s.yaml -o k8s.lock.yaml --cache "$DEMO/cache" --plain-http
"$BUNDLE" create k8s.lock.yaml -o k8s.bundle.tar.zst --key site.key --cache "$DEMO/cache" --plain-http
APACHE_PID=$UPSTREAM_PID stop_apache
UPSTREAM_DIGEST=$(skopeo inspect --raw --tls-verify=false "docker://127.0.0.1:${REG_PORT[upstream]}/pause:3.10" | sha256sum | cut -d' ' -f1)
stop_registry upstream

echo "== on the stick: stock minisign, then bundle verify and inspect"
minisign -Vm k8s.bundle.tar.zst -p site.pub
"$BUNDLE" verify k8s.bundle.tar.zst --pubkey site.pub
"$BUNDLE" inspect k8s.bundle.tar.zst

echo "== air-gapped side: install into an apache web root and the site registry"
WWW=$DEMO/www
mkdir -p "$WWW"
start_apache "$WWW" "$DEMO/apache-site"
start_registry site "$DEMO/registry-site"
SITE=127.0.0.1:${REG_PORT[site]}
"$BUNDLE" install k8s.bundle.tar.zst --pubkey site.pub --web-root "$WWW" \
    --base-url "http://127.0.0.1:$APACHE_PORT/" --registry "$SITE" --plain-http
PUSHED=$(skopeo inspect --raw --tls-verify=false "docker://$SITE/pause:3.10" | sha256sum | cut -d' ' -f1)
[[ $PUSHED == "$UPSTREAM_DIGEST" ]] || { echo "the site registry's pause:3.10 differs from upstream" >&2; exit 1; }
echo "== $SITE/pause:3.10 has the upstream digest sha256:$PUSHED"
URL="http://127.0.0.1:$APACHE_PORT/files/dl.k8s.io/release/v1.31.4/bin/linux/amd64/kubeadm"
GOT=$(python3 -c "import hashlib,urllib.request; print(hashlib.sha256(urllib.request.urlopen('$URL').read()).hexdigest())")
WANT=$(sha256sum "$UP/dl.k8s.io/release/v1.31.4/bin/linux/amd64/kubeadm" | cut -d' ' -f1)
[[ $GOT == "$WANT" ]] || { echo "served kubeadm differs from upstream" >&2; exit 1; }
echo "== served over HTTP and identical to upstream: $URL"
echo "== Kubespray variables ($WWW/kubespray-offline.yml):"
cat "$WWW/kubespray-offline.yml"
echo "== done. Look in $DEMO (connected/, www/); re-run install to see it is idempotent."
