#!/usr/bin/env bash
# One command on a fresh machine: installs what is needed, builds, and runs the main job on
# a small real example. A local apache2 plays the internet (dl.k8s.io, github.com and a Helm
# chart repository via manifest `mirrors` entries) and a local docker-registry plays an upstream image registry (an
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
# A small Helm chart in an HTTP chart repository (packaged as `helm package` does).
CHART=$DEMO/chart-src/cert-manager
mkdir -p "$CHART/templates" "$UP/charts.jetstack.io"
printf 'apiVersion: v2\nname: cert-manager\nversion: v1.16.2\nappVersion: v1.16.2\ndescription: A demo stand-in for cert-manager\ntype: application\n' >"$CHART/Chart.yaml"
printf 'replicaCount: 1\n' >"$CHART/values.yaml"
printf 'apiVersion: v1\nkind: ConfigMap\nmetadata: {name: demo}\n' >"$CHART/templates/configmap.yaml"
tar czf "$UP/charts.jetstack.io/cert-manager-v1.16.2.tgz" -C "$DEMO/chart-src" cert-manager
CHART_SHA=$(sha256sum "$UP/charts.jetstack.io/cert-manager-v1.16.2.tgz" | cut -d' ' -f1)
cat >"$UP/charts.jetstack.io/index.yaml" <<YAML
apiVersion: v1
entries:
  cert-manager:
  - {name: cert-manager, version: v1.16.2, urls: [cert-manager-v1.16.2.tgz], digest: $CHART_SHA}
generated: "2026-01-01T00:00:00Z"
YAML
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
charts:
  - {repo: https://charts.jetstack.io, name: cert-manager, version: "~1.16"}
images:    # on a real site: registry.k8s.io/pause:3.10 and friends
  - ref: 127.0.0.1:${REG_PORT[upstream]}/pause:3.10
mirrors:   # fetch through a local "proxy"; bundle paths keep the canonical URLs
  - {prefix: https://dl.k8s.io/, url: http://127.0.0.1:$UPSTREAM_PORT/dl.k8s.io/}
  - {prefix: https://github.com/, url: http://127.0.0.1:$UPSTREAM_PORT/github.com/}
  - {prefix: https://charts.jetstack.io/, url: http://127.0.0.1:$UPSTREAM_PORT/charts.jetstack.io/}
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
    --base-url "http://127.0.0.1:$APACHE_PORT/" --registry "$SITE" --chart-registry "$SITE" --plain-http
PUSHED=$(skopeo inspect --raw --tls-verify=false "docker://$SITE/pause:3.10" | sha256sum | cut -d' ' -f1)
[[ $PUSHED == "$UPSTREAM_DIGEST" ]] || { echo "the site registry's pause:3.10 differs from upstream" >&2; exit 1; }
echo "== $SITE/pause:3.10 has the upstream digest sha256:$PUSHED"
URL="http://127.0.0.1:$APACHE_PORT/files/dl.k8s.io/release/v1.31.4/bin/linux/amd64/kubeadm"
GOT=$(python3 -c "import hashlib,urllib.request; print(hashlib.sha256(urllib.request.urlopen('$URL').read()).hexdigest())")
WANT=$(sha256sum "$UP/dl.k8s.io/release/v1.31.4/bin/linux/amd64/kubeadm" | cut -d' ' -f1)
[[ $GOT == "$WANT" ]] || { echo "served kubeadm differs from upstream" >&2; exit 1; }
echo "== served over HTTP and identical to upstream: $URL"
CHARTS="http://127.0.0.1:$APACHE_PORT/charts"
python3 - "$CHARTS" "$CHART_SHA" <<'PY'
import hashlib, sys, urllib.request
base, want = sys.argv[1], sys.argv[2]
index = urllib.request.urlopen(base + "/index.yaml").read().decode()
assert "digest: " + want in index, index
got = hashlib.sha256(urllib.request.urlopen(base + "/cert-manager-v1.16.2.tgz").read()).hexdigest()
assert got == want, (got, want)
PY
echo "== Helm repository served at $CHARTS (helm repo add offline $CHARTS)"
skopeo inspect --raw --tls-verify=false "docker://$SITE/charts/cert-manager:v1.16.2" | grep -q 'application/vnd.cncf.helm.config.v1+json' \
    || { echo "the chart registry does not hold cert-manager as a Helm OCI artifact" >&2; exit 1; }
echo "== helm pull oci://$SITE/charts/cert-manager --version v1.16.2 would work: Helm config media type present"
echo "== Kubespray variables ($WWW/kubespray-offline.yml):"
cat "$WWW/kubespray-offline.yml"
echo "== done. Look in $DEMO (connected/, www/); re-run install to see it is idempotent."
