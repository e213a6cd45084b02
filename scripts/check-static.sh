#!/usr/bin/env bash
# The tool travels with its bundle (issue 17): builds the release binary statically linked
# (glibc's static libc via `-C target-feature=+crt-static` on x86_64-unknown-linux-gnu; this
# toolchain has no musl target), checks with `file` and `ldd` that it needs no shared
# library, then proves it on a bundle it made itself with `--include-tool`:
#   - stock minisign accepts the tool's own detached signature (`minisign -Vm bundle`);
#   - the copied tool runs `verify` in a chroot that holds only itself, the bundle and the
#     public key (no /lib, no /usr, no /etc), with an empty environment (`env -i`).
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET=x86_64-unknown-linux-gnu
RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --quiet --target "$TARGET" --bin bundle
BIN=$PWD/target/$TARGET/release/bundle
echo "== $(file -b "$BIN")"
file -b "$BIN" | grep -Eq 'statically linked|static-pie linked' \
    || { echo "check-static: $BIN is not statically linked" >&2; exit 1; }
# ldd says "statically linked" (static-pie) or "not a dynamic executable"; never a library.
LDD=$(ldd "$BIN" 2>&1 || true)
if grep -q '=>' <<<"$LDD" || ! grep -Eq 'statically linked|not a dynamic executable' <<<"$LDD"; then
    echo "check-static: ldd lists shared libraries for $BIN:" >&2; echo "$LDD" >&2; exit 1
fi
echo "== ldd: $(echo $LDD)"

T=$(mktemp -d /tmp/airgap-static.XXXXXX)
trap 'rm -rf "$T"' EXIT
cd "$T"
"$BIN" keygen --out site --no-password >/dev/null
printf 'apiVersion: bundle/v1\nname: static-check\nversion: "1"\n' >m.yaml
"$BIN" lock m.yaml -o m.lock.yaml --quiet
mkdir out
"$BIN" create m.lock.yaml -o out/x.bundle.tar.zst --key site.key --include-tool --quiet
cmp "$BIN" out/bundle || { echo "check-static: out/bundle is not the running binary" >&2; exit 1; }
minisign -Vm out/bundle -p site.pub
minisign -Vm out/x.bundle.tar.zst -p site.pub

ROOT=$T/chroot
mkdir "$ROOT"
cp out/bundle out/x.bundle.tar.zst site.pub "$ROOT/"
env -i /usr/sbin/chroot "$ROOT" /bundle verify /x.bundle.tar.zst --pubkey /site.pub
echo "== the static tool verified its bundle in a chroot with nothing else in it"
# And a tampered bundle is still refused there (exit 3).
printf 'X' | dd of="$ROOT/x.bundle.tar.zst" bs=1 seek=200 conv=notrunc 2>/dev/null
set +e
env -i /usr/sbin/chroot "$ROOT" /bundle verify /x.bundle.tar.zst --pubkey /site.pub 2>/dev/null
rc=$?
set -e
[[ $rc == 3 ]] || { echo "check-static: a tampered bundle gave exit $rc in the chroot, not 3" >&2; exit 1; }
echo "== and refused a tampered one (exit 3)"
