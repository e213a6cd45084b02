#!/usr/bin/env bash
# Speed and peak memory of `bundle create`, `verify` and `install`, side by side with the
# plain-tools pipelines that do the same work (tar | zstd -3, sha256sum), on generated
# data served by a private apache; then the same for container images: real OCI images
# built offline with umoci, served by a private docker-registry, `bundle create` against
# `tar -c oci/ | zstd -3` and `bundle install --registry` against one `skopeo copy` per
# image. A measurement, never a pass/fail test: it exits 0 unless something crashes (or
# there is not enough free disk to start).
#
#   BENCH_SIZE_MB=1536   total data size in MiB (half random, half text)
#   BENCH_DIR=...        work directory (default: a fresh /tmp/airgap-bench.XXXXXX);
#                        needs ~4x BENCH_SIZE_MB free
#   BENCH_RUNS=2         runs per measurement (best wall time, max peak RSS)
#   BENCH_COMPONENTS=1   also time the components (sha256sum alone, zstd alone,
#                        create --threads 1 vs tar | zstd -T1); 0 skips them
#   BENCH_KEEP=1         keep BENCH_DIR afterwards
#   BENCH_IMAGES=1       also benchmark images (6 images sharing base layers); 0 skips them
#   BENCH_IMAGES_MB=320  distinct image content in MiB (random, incompressible layers);
#                        needs ~7x BENCH_IMAGES_MB more free disk
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

SIZE_MB=${BENCH_SIZE_MB:-1536}
RUNS=${BENCH_RUNS:-2}
COMPONENTS=${BENCH_COMPONENTS:-1}
KEEP=${BENCH_KEEP:-0}
IMAGES=${BENCH_IMAGES:-1}
IMAGES_MB=${BENCH_IMAGES_MB:-320}
[[ $SIZE_MB =~ ^[0-9]+$ && $SIZE_MB -ge 20 ]] || { echo "BENCH_SIZE_MB must be an integer >= 20" >&2; exit 1; }
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || { echo "BENCH_RUNS must be a positive integer" >&2; exit 1; }
[[ $IMAGES == 0 || $IMAGES == 1 ]] || { echo "BENCH_IMAGES must be 0 or 1" >&2; exit 1; }
[[ $IMAGES_MB =~ ^[0-9]+$ && $IMAGES_MB -ge 10 ]] || { echo "BENCH_IMAGES_MB must be an integer >= 10" >&2; exit 1; }

# ---- disk check, before anything is built or written ------------------------------------
# files: data, cache, bundle, pipeline output. Images (at the peak): upstream registry,
# cache, bundle, extracted oci/, pipeline output, two destination registries, and slack
# for the umoci build (layout plus one unpacked rootfs, gone once pushed upstream).
NEED_MB=$((SIZE_MB * 4))
NEED_WHY="4 x BENCH_SIZE_MB=${SIZE_MB}"
if [[ $IMAGES == 1 ]]; then
    NEED_MB=$((NEED_MB + IMAGES_MB * 7))
    NEED_WHY+=" + 7 x BENCH_IMAGES_MB=${IMAGES_MB}"
fi
if [[ -n ${BENCH_DIR:-} ]]; then
    probe=$BENCH_DIR
    while [[ ! -d $probe ]]; do probe=$(dirname "$probe"); done
else
    probe=/tmp
fi
AVAIL_MB=$(df -Pm "$probe" | awk 'NR==2 {print $4}')
if ((AVAIL_MB < NEED_MB)); then
    echo "not enough free disk in $probe: ${AVAIL_MB} MiB free, the benchmark needs ~${NEED_MB} MiB (${NEED_WHY})" >&2
    echo "hint: set BENCH_DIR to a larger filesystem, lower BENCH_SIZE_MB or BENCH_IMAGES_MB, or set BENCH_IMAGES=0" >&2
    exit 1
fi

bash scripts/setup-test-env.sh >/dev/null
cargo build --release --quiet
BUNDLE=$(cd "${CARGO_TARGET_DIR:-target}" && pwd)/release/bundle
source scripts/lib/apache.sh
source scripts/lib/registry.sh

# ---- work directory and cleanup --------------------------------------------------------
CREATED_DIR=0
if [[ -n ${BENCH_DIR:-} ]]; then
    if [[ -e $BENCH_DIR ]]; then
        [[ -d $BENCH_DIR && -z $(ls -A "$BENCH_DIR") ]] || {
            echo "BENCH_DIR=$BENCH_DIR exists and is not an empty directory; give a new or empty one" >&2
            exit 1
        }
    else
        mkdir -p "$BENCH_DIR"
        CREATED_DIR=1
    fi
    B=$(cd "$BENCH_DIR" && pwd)
else
    B=$(mktemp -d /tmp/airgap-bench.XXXXXX)
    CREATED_DIR=1
fi
chmod 755 "$B"

cleanup() {
    local rc=$?
    stop_apache
    stop_registries
    if [[ $KEEP == 1 ]]; then
        echo "kept $B (BENCH_KEEP=1)"
    elif [[ $CREATED_DIR == 1 ]]; then
        rm -rf "$B"
    else
        find "$B" -mindepth 1 -maxdepth 1 -exec rm -rf {} +
    fi
    ((rc == 0)) || echo "bench: failed (exit $rc)" >&2
    return "$rc"
}
trap cleanup EXIT

DATA=$B/data        # the files, as served by apache
CACHE=$B/cache      # bundle's download cache (warmed by lock)
OUT=$B/out          # outputs of the measured commands
TMPW=$B/tmp         # scratch: extraction dirs, web roots, time outputs
mkdir -p "$DATA/rand" "$DATA/text" "$CACHE" "$OUT" "$TMPW"

log() { printf '== %s\n' "$*" >&2; }

# ---- 1. the data ------------------------------------------------------------------------
# Per half (random / text): 25 small files of 100 KiB, ~1/4 of the rest in medium files
# (10-30 MiB), the remainder in large files (100-300 MiB; smaller only for small sizes).
plan_half() {  # prints "NAME KIB" lines for a half of $1 KiB
    local budget=$1 i kib
    local -a meds=(10240 20480 30720 15360 25600) larges=(256000 153600 307200 204800 102400)
    for i in $(seq -w 1 25); do echo "small-$i 100"; budget=$((budget - 100)); done
    local med_budget=$((budget / 4)) n=0
    while :; do
        kib=${meds[n % 5]}
        ((kib <= med_budget)) || break
        n=$((n + 1)); printf 'medium-%02d %d\n' "$n" "$kib"
        med_budget=$((med_budget - kib)); budget=$((budget - kib))
    done
    n=0
    while ((budget > 0)); do
        kib=${larges[n % 5]}
        if ((kib > budget)); then kib=$budget; fi
        # a tail below 100 MiB is its own file only if no large file exists yet
        if ((n > 0 && budget - kib > 0 && budget - kib < 102400)); then kib=$budget; fi
        n=$((n + 1)); printf 'large-%02d %d\n' "$n" "$kib"
        budget=$((budget - kib))
    done
}

# Text: words drawn (Zipf-like weights) from a generated vocabulary, 12 to a line;
# zstd -3 compresses it ~4x.
python3 - "$TMPW/vocab.txt" <<'PY'
import random, sys
rng = random.Random(20240601)
syll = ["ka","to","ri","mu","sen","lo","vi","dra","pe","qu","zon","el","ar","is","um",
        "tor","bal","nex","fi","gu"]
words = sorted({"".join(rng.choice(syll) for _ in range(rng.randint(1, 4))) for _ in range(6000)})
rng.shuffle(words)
with open(sys.argv[1], "w") as f:
    for i, w in enumerate(words):
        f.write((w + "\n") * max(1, 3000 // (i + 1)))
PY
make_text() {  # FILE BYTES
    ( set +o pipefail
      shuf -r -n $(($2 / 3 + 1000)) "$TMPW/vocab.txt" | paste -d' ' - - - - - - - - - - - - \
          | head -c "$2" >"$1" )
    [[ $(stat -c %s "$1") -eq $2 ]] || { echo "could not generate $1" >&2; exit 1; }
}
make_rand() {  # FILE BYTES
    head -c "$2" /dev/urandom >"$1"
    [[ $(stat -c %s "$1") -eq $2 ]] || { echo "could not generate $1" >&2; exit 1; }
}

HALF_KIB=$((SIZE_MB * 1024 / 2))
log "generating ${SIZE_MB} MiB of data in $DATA"
t0=$SECONDS
while read -r name kib; do
    make_rand "$DATA/rand/$name.bin" $((kib * 1024))
    make_text "$DATA/text/$name.txt" $((kib * 1024))
done < <(plan_half "$HALF_KIB")
chmod -R a+rX "$DATA"
DATA_BYTES=$(find "$DATA" -type f -printf '%s\n' | awk '{s+=$1} END {print s}')
N_FILES=$(find "$DATA" -type f | wc -l)
log "generated $N_FILES files, $DATA_BYTES bytes in $((SECONDS - t0)) s"

# ---- 2. serve, lock (warms the cache), stop ----------------------------------------------
start_apache "$DATA" "$B/apache"
BASE=http://127.0.0.1:$APACHE_PORT
write_manifest() {  # OUT NAME (file paths on stdin)
    {
        echo "apiVersion: bundle/v1"
        echo "name: $2"
        echo "version: 1.0.0"
        echo "files:"
        while read -r p; do echo "  - url: $BASE/$p"; done
    } >"$1"
}
# full manifest: every file. Half manifest: one file of every equal-size random/text pair
# (rand/X.bin and text/X.txt, adjacent when sorted by size and name), choosing the kind that has fewer
# bytes so far: about half the bytes with the same random/text mix.
mapfile -t SIZED < <(cd "$DATA" && find . -type f -printf '%s %f %P\n' | sort -k1,1nr -k2,2 | cut -d' ' -f1,3-)
printf '%s\n' "${SIZED[@]}" | cut -d' ' -f2- | write_manifest "$B/full.yaml" bench-full
HALF_PICK=$(printf '%s\n' "${SIZED[@]}" | awk '
    NR % 2 == 1 { rsz = $1; rp = $2; next }
    { if (rs <= ts) { print rsz, rp; rs += rsz } else { print $1, $2; ts += $1 } }')
cut -d' ' -f2- <<<"$HALF_PICK" | write_manifest "$B/half.yaml" bench-half
HALF_BYTES=$(awk '{s += $1} END {print s}' <<<"$HALF_PICK")

log "bundle keygen, lock (downloads into the cache; not timed)"
"$BUNDLE" keygen --out "$B/key" --no-password --quiet
"$BUNDLE" lock "$B/full.yaml" -o "$B/full.lock.yaml" --cache "$CACHE" --quiet
"$BUNDLE" lock "$B/half.yaml" -o "$B/half.lock.yaml" --cache "$CACHE" --quiet
stop_apache

# ---- 3. measurements --------------------------------------------------------------------
log "warm-up read of data and cache (not timed)"
find "$DATA" "$CACHE" -type f -print0 | xargs -0 cat >/dev/null

declare -A WALL RSS
# measure KEY PREP CMD...: runs PREP (untimed, via eval) and `sync` (so no run pays for
# the previous run's writeback; the page cache stays warm), then CMD under /usr/bin/time,
# $RUNS times; keeps the best wall time and the max peak RSS.
measure() {
    local key=$1 prep=$2; shift 2
    local best="" maxrss=0 i w m
    for ((i = 1; i <= RUNS; i++)); do
        [[ -z $prep ]] || eval "$prep"
        sync
        /usr/bin/time -f '%e %M' -o "$TMPW/time.out" "$@"
        read -r w m <"$TMPW/time.out"
        if [[ -z $best ]] || awk -v a="$w" -v b="$best" 'BEGIN {exit !(a < b)}'; then best=$w; fi
        ((m > maxrss)) && maxrss=$m
    done
    WALL[$key]=$best
    RSS[$key]=$maxrss
    log "$(printf '%-22s %8.2f s  %8.1f MiB' "$key" "$best" "$(awk -v k="$maxrss" 'BEGIN {print k/1024}')")"
}

TOOL_BUNDLE=$OUT/full.bundle
PIPE_OUT=$OUT/out.tar.zst
SHA_ALL='cd "$1" && find . -type f -print0 | sort -z | xargs -0 sha256sum >/dev/null'

LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
log "measuring ($RUNS runs each; load average $LOAD_START)"
# a. create from the warm cache
measure create "rm -f '$TOOL_BUNDLE' '$TOOL_BUNDLE.minisig'" \
    "$BUNDLE" create "$B/full.lock.yaml" -o "$TOOL_BUNDLE" --key "$B/key.key" --cache "$CACHE" --quiet
# b. two-pass: tar | zstd, then sha256sum of every file
measure create_2pass "rm -f '$PIPE_OUT'" bash -c \
    'set -euo pipefail; tar -c -C "$1" . | zstd -T0 -3 -q -o "$2"; '"$SHA_ALL" _ "$DATA" "$PIPE_OUT"
# c. the limit: tar | zstd alone
measure create_limit "rm -f '$PIPE_OUT'" bash -c \
    'set -euo pipefail; tar -c -C "$1" . | zstd -T0 -3 -q -o "$2"' _ "$DATA" "$PIPE_OUT"
# half-size create: peak RSS should not grow with the bundle
measure create_half "rm -f '$OUT/half.bundle' '$OUT/half.bundle.minisig'" \
    "$BUNDLE" create "$B/half.lock.yaml" -o "$OUT/half.bundle" --key "$B/key.key" --cache "$CACHE" --quiet
HALF_BUNDLE_BYTES=$(stat -c %s "$OUT/half.bundle")
rm -f "$OUT/half.bundle" "$OUT/half.bundle.minisig"

# d. verify vs decompressing the same bundle
measure verify "" "$BUNDLE" verify "$TOOL_BUNDLE" --pubkey "$B/key.pub" --quiet
measure verify_limit "" bash -c 'set -euo pipefail; zstd -dc "$1" >/dev/null' _ "$TOOL_BUNDLE"

# e. install vs extract (+ sha256sum -c); the checksum list comes from an untimed
# extraction of the bundle, cross-checked against the source data's hashes
X=$TMPW/x
rm -rf "$X"; mkdir -p "$X"
zstd -dc "$TOOL_BUNDLE" | tar -x -C "$X"
(cd "$X" && find . -type f ! -path './bundle/*' -print0 | sort -z | xargs -0 sha256sum) >"$TMPW/SUMS"
(cd "$DATA" && find . -type f -print0 | xargs -0 sha256sum) | cut -d' ' -f1 | sort >"$TMPW/data.hashes"
cut -d' ' -f1 "$TMPW/SUMS" | sort | cmp -s - "$TMPW/data.hashes" \
    || { echo "the bundle's content does not hash like the source data" >&2; exit 1; }
rm -rf "$X"
measure install "rm -rf '$X'; mkdir -p '$X'" \
    "$BUNDLE" install "$TOOL_BUNDLE" --pubkey "$B/key.pub" --web-root "$X" --quiet
INSTALLED_FILES=$(find "$X/files" -type f 2>/dev/null | wc -l)
measure install_2pass "rm -rf '$X'; mkdir -p '$X'" bash -c \
    'set -euo pipefail; zstd -dc "$1" | tar -x -C "$2"; cd "$2" && sha256sum -c --quiet "$3"' \
    _ "$TOOL_BUNDLE" "$X" "$TMPW/SUMS"
measure install_limit "rm -rf '$X'; mkdir -p '$X'" bash -c \
    'set -euo pipefail; zstd -dc "$1" | tar -x -C "$2"' _ "$TOOL_BUNDLE" "$X"
rm -rf "$X"

# components: where the time goes
if [[ $COMPONENTS == 1 ]]; then
    log "components"
    measure sha256_alone "" bash -c 'set -euo pipefail; '"$SHA_ALL" _ "$DATA"
    measure zstd_alone "" bash -c \
        'set -euo pipefail; cd "$1" && find . -type f -print0 | sort -z | xargs -0 cat | zstd -T0 -3 -q -c >/dev/null' _ "$DATA"
    # (through cat: GNU tar reads nothing when its output is /dev/null)
    measure tar_alone "" bash -c 'set -euo pipefail; tar -c -C "$1" . | cat >/dev/null' _ "$DATA"
    measure create_t1 "rm -f '$TOOL_BUNDLE' '$TOOL_BUNDLE.minisig'" \
        "$BUNDLE" create "$B/full.lock.yaml" -o "$TOOL_BUNDLE" --key "$B/key.key" --cache "$CACHE" --quiet --threads 1
    measure create_limit_t1 "rm -f '$PIPE_OUT'" bash -c \
        'set -euo pipefail; tar -c -C "$1" . | zstd -T1 -3 -q -o "$2"' _ "$DATA" "$PIPE_OUT"
    # durable variants of the limits: the tool fsyncs the bundle it writes (create) and
    # syncs the web root's filesystem (install); the plain pipelines above do neither
    measure create_limit_sync "rm -f '$PIPE_OUT'" bash -c \
        'set -euo pipefail; tar -c -C "$1" . | zstd -T0 -3 -q -o "$2"; sync "$2"' _ "$DATA" "$PIPE_OUT"
    measure install_limit_sync "rm -rf '$X'; mkdir -p '$X'" bash -c \
        'set -euo pipefail; zstd -dc "$1" | tar -x -C "$2"; sync -f "$2"' _ "$TOOL_BUNDLE" "$X"
    rm -rf "$X"
fi

# ---- 3b. images -------------------------------------------------------------------------
# Six real OCI images built offline with umoci, sharing base layers: img1 is the base (two
# random layers, 2/5 and 1/10 of BENCH_IMAGES_MB), img2..img6 each add one random layer of
# 1/10 on top of it, so the distinct content is BENCH_IMAGES_MB (random: incompressible,
# like the compressed layers of real images). Pushed into a private upstream registry,
# locked, bundled once to warm the cache (untimed), then:
#   images create: bundle create (warm cache, registry stopped) vs tar -c oci/ | zstd -T0 -3
#                  of the bundle's own OCI layout, extracted with tar -I zstd -xf B oci/
#   images push:   bundle install B --registry (fresh registry each run) vs one skopeo copy
#                  per image from that extracted layout (into another fresh registry)
IMG_STATUS=""        # why the push was not measured, if it was not
IMG_FAIL=""          # a real failure to report (the bench then exits 1 after the report)
if [[ $IMAGES == 1 ]]; then
    I=$B/img
    ILAYOUT=$I/layout   # umoci's OCI layout (deleted once pushed upstream)
    ICACHE=$I/cache     # bundle's download cache for the images
    IX=$I/x             # the bundle's oci/ extracted: $IX/oci
    IMG_BUNDLE=$OUT/images.bundle
    IPIPE=$OUT/images.tar.zst
    mkdir -p "$I" "$ICACHE" "$IX"
    N_IMG=6
    TOP_KIB=$((IMAGES_MB * 1024 / 10))
    BASE1_KIB=$((IMAGES_MB * 1024 - (N_IMG - 1) * TOP_KIB - TOP_KIB))

    # umoci_layer TAG FILE KIB [BASE]: TAG = (BASE's layers, or nothing) + one layer with a
    # random file of KIB KiB, through umoci unpack --rootless / write / repack
    umoci_layer() {
        local tag=$1 file=$2 kib=$3 base=${4:-} u=$I/unpack
        if [[ -z $base ]]; then
            umoci new --image "$ILAYOUT:$tag"
        elif [[ $base != "$tag" ]]; then
            umoci tag --image "$ILAYOUT:$base" "$tag"
        fi
        rm -rf "$u"
        umoci unpack --rootless --image "$ILAYOUT:$tag" "$u" >/dev/null
        make_rand "$u/rootfs/$file" $((kib * 1024))
        umoci repack --image "$ILAYOUT:$tag" "$u" >/dev/null
        rm -rf "$u"
    }
    log "images: building $N_IMG OCI images (${IMAGES_MB} MiB of distinct layers) with umoci"
    t0=$SECONDS
    umoci init --layout "$ILAYOUT"
    umoci_layer img1 base-a.bin "$BASE1_KIB"
    umoci_layer img1 base-b.bin "$TOP_KIB" img1
    for n in $(seq 2 "$N_IMG"); do
        umoci_layer "img$n" "top-$n.bin" "$TOP_KIB" img1
    done
    umoci gc --layout "$ILAYOUT"
    log "images: built in $((SECONDS - t0)) s; pushing them into a private upstream registry"
    start_registry up "$I/reg-up"
    UP=127.0.0.1:${REG_PORT[up]}
    for n in $(seq 1 "$N_IMG"); do
        skopeo copy -q --dest-tls-verify=false "oci:$ILAYOUT:img$n" "docker://$UP/bench/img$n:v1"
    done
    rm -rf "$ILAYOUT"

    {
        echo "apiVersion: bundle/v1"
        echo "name: bench-images"
        echo "version: 1.0.0"
        echo "images:"
        for n in $(seq 1 "$N_IMG"); do echo "  - ref: $UP/bench/img$n:v1"; done
    } >"$I/images.yaml"
    log "images: bundle lock, create (fills the cache; not timed)"
    "$BUNDLE" lock "$I/images.yaml" -o "$I/images.lock.yaml" --cache "$ICACHE" --plain-http --quiet
    "$BUNDLE" create "$I/images.lock.yaml" -o "$IMG_BUNDLE" --key "$B/key.key" --cache "$ICACHE" --plain-http --quiet
    # from here on nothing needs the upstream registry: create runs from the warm cache
    stop_registry up
    rm -rf "$I/reg-up"

    tar -I zstd -xf "$IMG_BUNDLE" -C "$IX" oci/
    [[ -f $IX/oci/index.json && -f $IX/oci/oci-layout ]] || { echo "the images bundle has no OCI layout under oci/" >&2; exit 1; }
    # the image names in the layout, and each one's top digest
    mapfile -t IMG_REFS < <(python3 - "$IX/oci/index.json" <<'PY'
import json, sys
for m in json.load(open(sys.argv[1]))["manifests"]:
    print(m["annotations"]["org.opencontainers.image.ref.name"], m["digest"])
PY
)
    IMG_NAMES=() IMG_DIGESTS=()
    for line in "${IMG_REFS[@]}"; do IMG_NAMES+=("${line% *}"); IMG_DIGESTS+=("${line##* }"); done
    ((${#IMG_NAMES[@]} == N_IMG)) || { echo "oci/index.json names ${#IMG_NAMES[@]} images, expected $N_IMG" >&2; exit 1; }
    IMG_BLOBS=$(find "$IX/oci/blobs" -type f | wc -l)
    IMG_BYTES=$(find "$IX/oci" -type f -printf '%s\n' | awk '{s+=$1} END {print s}')
    # the sum of the images' sizes as separate images (what six docker pulls would move)
    IMG_SUM_BYTES=$(python3 - "$IX/oci" <<'PY'
import json, os, sys
root = sys.argv[1]
def blob(d): return os.path.join(root, "blobs", *d["digest"].split(":"))
total = 0
for m in json.load(open(os.path.join(root, "index.json")))["manifests"]:
    man = json.load(open(blob(m)))
    total += m["size"] + man["config"]["size"] + sum(l["size"] for l in man["layers"])
print(total)
PY
)
    (cd "$IX/oci" && find blobs -type f -printf '%P\n' | awk -F/ '{print $2 "  blobs/" $0}') >"$I/BLOBSUMS"
    log "images: ${#IMG_NAMES[@]} images, $IMG_BLOBS blobs, $IMG_BYTES bytes in oci/"
    log "images: warm-up read (not timed)"
    find "$ICACHE" "$IX" -type f -print0 | xargs -0 cat >/dev/null

    log "images: measuring create ($RUNS runs each)"
    measure img_create "rm -f '$IMG_BUNDLE' '$IMG_BUNDLE.minisig'" \
        "$BUNDLE" create "$I/images.lock.yaml" -o "$IMG_BUNDLE" --key "$B/key.key" --cache "$ICACHE" --plain-http --quiet
    measure img_create_2pass "rm -f '$IPIPE'" bash -c \
        'set -euo pipefail; tar -c -C "$1" oci | zstd -T0 -3 -q -o "$2"; cd "$1/oci" && sha256sum -c --quiet "$3"' \
        _ "$IX" "$IPIPE" "$I/BLOBSUMS"
    measure img_create_limit "rm -f '$IPIPE'" bash -c \
        'set -euo pipefail; tar -c -C "$1" oci | zstd -T0 -3 -q -o "$2"' _ "$IX" "$IPIPE"
    if [[ $COMPONENTS == 1 ]]; then
        measure img_create_limit_sync "rm -f '$IPIPE'" bash -c \
            'set -euo pipefail; tar -c -C "$1" oci | zstd -T0 -3 -q -o "$2"; sync "$2"' _ "$IX" "$IPIPE"
    fi
    IMG_BUNDLE_BYTES=$(stat -c %s "$IMG_BUNDLE")
    IMG_PIPE_BYTES=$(stat -c %s "$IPIPE")
    rm -rf "$IPIPE" "$ICACHE"

    # push: first an untimed probe into a fresh registry (also the warm-up), which tells
    # whether this `bundle` can push at all and which names it gives the images
    start_registry dest "$I/reg-dest"
    start_registry dest2 "$I/reg-dest2"
    DEST=127.0.0.1:${REG_PORT[dest]}
    DEST2=127.0.0.1:${REG_PORT[dest2]}
    log "images: bundle install --registry probe (not timed)"
    probe_rc=0
    "$BUNDLE" --json install "$IMG_BUNDLE" --pubkey "$B/key.pub" --registry "$DEST" --plain-http \
        >"$I/probe.json" 2>"$I/probe.err" || probe_rc=$?
    if ((probe_rc == 2)) && grep -qE "not in this version|unexpected argument '--registry'" "$I/probe.err"; then
        IMG_STATUS="skipped (not implemented)"
        log "images push: skipped (not implemented): $(head -n1 "$I/probe.err")"
    elif ((probe_rc != 0)); then
        IMG_STATUS="FAILED (exit $probe_rc): $(head -n1 "$I/probe.err")"
        IMG_FAIL=1
        log "images push: $IMG_STATUS"
        sed 's/^/    /' "$I/probe.err" >&2
    fi
    # the names bundle pushed (its --json report), else the interface's rule: host dropped
    mapfile -t PUSHED < <(python3 - "$I/probe.json" "$DEST" "${IMG_NAMES[@]}" <<'PY' 2>/dev/null || true
import json, sys
path, dest, names = sys.argv[1], sys.argv[2], sys.argv[3:]
try:
    by_src = {}
    for img in json.load(open(path))["registry"]["images"]:
        by_src[img["source"].split("@")[0]] = img["name"][len(dest) + 1:]
    out = [by_src[n] for n in names]
except Exception:
    out = [n.split("/", 1)[1] for n in names]
print("\n".join(out))
PY
)
    ((${#PUSHED[@]} == N_IMG)) || PUSHED=("${IMG_NAMES[@]#*/}")

    if [[ -z $IMG_STATUS ]]; then
        log "images: measuring push ($RUNS runs each, a fresh registry each run)"
        measure img_push "restart_registry dest" \
            "$BUNDLE" install "$IMG_BUNDLE" --pubkey "$B/key.pub" --registry "$DEST" --plain-http --quiet
    fi
    if [[ $COMPONENTS == 1 ]]; then
        # what the registry itself can take: every distinct blob of the layout uploaded with
        # curl (POST, then one monolithic streamed PUT), one after another, into one repository
        measure img_push_limit "restart_registry dest2" bash -c \
            'set -euo pipefail; reg=$1
             for f in "$2"/blobs/sha256/*; do
                 loc=$(curl -fsS -X POST -o /dev/null -D - "http://$reg/v2/bench/ingest/blobs/uploads/" \
                       | tr -d "\r" | awk -F": " "tolower(\$1) == \"location\" {print \$2}")
                 [[ $loc == http* ]] || loc=http://$reg$loc
                 [[ $loc == *\?* ]] && sep="&" || sep="?"
                 curl -fsS -X PUT -T "$f" -H "Content-Type: application/octet-stream" -o /dev/null \
                     "$loc${sep}digest=sha256:${f##*/}"
             done' _ "$DEST2" "$IX/oci"
    fi
    # the baseline: one skopeo copy per image, one after another, from the same layout
    measure img_push_skopeo "restart_registry dest2" bash -c \
        'set -euo pipefail; layout=$1 dest=$2; shift 2
         while (($#)); do skopeo copy -q --dest-tls-verify=false "oci:$layout:$1" "docker://$dest/$2"; shift 2; done' \
        _ "$IX/oci" "$DEST2" $(for k in "${!IMG_NAMES[@]}"; do echo "${IMG_NAMES[k]} ${PUSHED[k]}"; done)

    # what the registries hold: every tag must resolve to the digest the bundle carries
    check_pushed() {  # HOST:PORT -> prints "OK/N"
        local reg=$1 k ok=0 d
        for k in "${!PUSHED[@]}"; do
            d=sha256:$(skopeo inspect --raw --tls-verify=false "docker://$reg/${PUSHED[k]}" 2>/dev/null | sha256sum | cut -d' ' -f1) || true
            [[ $d == "${IMG_DIGESTS[k]}" ]] && ok=$((ok + 1))
        done
        echo "$ok/${#PUSHED[@]}"
    }
    IMG_CHECK_SKOPEO=$(check_pushed "$DEST2")
    [[ $IMG_CHECK_SKOPEO == "$N_IMG/$N_IMG" ]] || { IMG_FAIL=1; log "images: skopeo's registry holds $IMG_CHECK_SKOPEO of the images with the bundle's digests"; }
    if [[ -z $IMG_STATUS ]]; then
        IMG_CHECK=$(check_pushed "$DEST")
        [[ $IMG_CHECK == "$N_IMG/$N_IMG" ]] || { IMG_FAIL=1; log "images: bundle's registry holds $IMG_CHECK of the images with the bundle's digests"; }
    fi
    stop_registries
    rm -rf "$I/reg-dest" "$I/reg-dest2" "$IX"
fi

# ---- 4. report --------------------------------------------------------------------------
mib() { awk -v b="$1" 'BEGIN {printf "%.1f", b / 1048576}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {if (b > 0) printf "%.2f", a / b; else print "-"}'; }
kib_mib() { awk -v k="$1" 'BEGIN {printf "%.1f", k / 1024}'; }
mbps() { awk -v b="$DATA_BYTES" -v s="$1" 'BEGIN {if (s > 0) printf "%.0f", b / 1048576 / s; else print "-"}'; }

BUNDLE_BYTES=$(stat -c %s "$TOOL_BUNDLE")
PIPE_BYTES=$(stat -c %s "$PIPE_OUT")
CPU=$(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)
echo
echo "airgap-bundle benchmark ($(date -u +%Y-%m-%dT%H:%MZ))"
echo "machine:  $(nproc) cores, ${CPU:-unknown CPU}, $(awk '/MemTotal/ {printf "%.1f GiB RAM", $2/1048576}' /proc/meminfo); load average $LOAD_START at start, $(cut -d' ' -f1-3 /proc/loadavg) at end"
echo "data:     $N_FILES files, $(mib "$DATA_BYTES") MiB (half random, half text); best of $RUNS runs, warm page cache"
echo "bundle:   $(mib "$BUNDLE_BYTES") MiB (tool)  vs  $(mib "$PIPE_BYTES") MiB (tar | zstd -T0 -3): ratio $(ratio "$BUNDLE_BYTES" "$PIPE_BYTES")"
echo
row() {  # OP TOOLKEY 2PASSKEY LIMITKEY
    local op=$1 t=${WALL[$2]} tp=${3:+${WALL[$3]}} l=${WALL[$4]}
    printf '%-9s %9s %8s %11s %8s %13s %14s %12s\n' "$op" "$t" "${tp:--}" "$l" "$(mbps "$t")" \
        "$(ratio "$t" "$l")" "$( [[ -n $tp ]] && ratio "$t" "$tp" || echo -)" "$(kib_mib "${RSS[$2]}")"
}
printf '%-9s %9s %8s %11s %8s %13s %14s %12s\n' operation "tool s" "2-pass s" "limit s" "tool MB/s" \
    "tool/limit" "tool/2-pass" "tool RSS MiB"
row create create create_2pass create_limit
row verify verify "" verify_limit
row install install install_2pass install_limit
echo
echo "baselines:  create 2-pass = tar | zstd -T0 -3 -o F; sha256sum of every file   (peak RSS $(kib_mib "${RSS[create_2pass]}") MiB)"
echo "            create limit  = tar | zstd -T0 -3 -o F                             (peak RSS $(kib_mib "${RSS[create_limit]}") MiB)"
echo "            verify limit  = zstd -dc BUNDLE > /dev/null                          (peak RSS $(kib_mib "${RSS[verify_limit]}") MiB)"
echo "            install 2-pass= zstd -dc BUNDLE | tar -x; sha256sum -c             (peak RSS $(kib_mib "${RSS[install_2pass]}") MiB)"
echo "            install limit = zstd -dc BUNDLE | tar -x                             (peak RSS $(kib_mib "${RSS[install_limit]}") MiB)"
echo "            (the tool fsyncs what it writes, these baselines do not; see the durable variants below)"
echo
echo "memory vs bundle size (bundle create):"
printf '  %-6s %10s MiB content  %8s MiB bundle  %7s s  peak RSS %7s MiB\n' \
    full "$(mib "$DATA_BYTES")" "$(mib "$BUNDLE_BYTES")" "${WALL[create]}" "$(kib_mib "${RSS[create]}")"
printf '  %-6s %10s MiB content  %8s MiB bundle  %7s s  peak RSS %7s MiB\n' \
    half "$(mib "$HALF_BYTES")" "$(mib "$HALF_BUNDLE_BYTES")" "${WALL[create_half]}" "$(kib_mib "${RSS[create_half]}")"
echo "install wrote $INSTALLED_FILES files under the web root (data has $N_FILES)"
if [[ $COMPONENTS == 1 ]]; then
    echo
    echo "components (same data):"
    comp() { printf '  %-44s %8s s  %6s MB/s  peak RSS %7s MiB\n' "$1" "${WALL[$2]}" "$(mbps "${WALL[$2]}")" "$(kib_mib "${RSS[$2]}")"; }
    comp "sha256sum of every file" sha256_alone
    comp "cat files | zstd -T0 -3 > /dev/null" zstd_alone
    comp "tar -c | cat > /dev/null" tar_alone
    comp "bundle create --threads 1" create_t1
    comp "tar | zstd -T1 -3 -o F" create_limit_t1
    comp "bundle create (default threads)" create
    comp "tar | zstd -T0 -3 -o F" create_limit
    comp "tar | zstd -T0 -3 -o F; sync F  (durable)" create_limit_sync
    comp "bundle install" install
    comp "zstd -dc | tar -x" install_limit
    comp "zstd -dc | tar -x; sync -f DIR  (durable)" install_limit_sync
fi
if [[ $IMAGES == 1 ]]; then
    echo
    echo "images:   ${#IMG_NAMES[@]} images (img1: 2 base layers; img2..img${N_IMG}: one layer each on top of img1), $IMG_BLOBS blobs,"
    echo "          $(mib "$IMG_BYTES") MiB in oci/ ($(mib "$IMG_SUM_BYTES") MiB as separate images); random layers"
    echo "bundle:   $(mib "$IMG_BUNDLE_BYTES") MiB (tool)  vs  $(mib "$IMG_PIPE_BYTES") MiB (tar -c oci/ | zstd -T0 -3): ratio $(ratio "$IMG_BUNDLE_BYTES" "$IMG_PIPE_BYTES")"
    echo
    imbps() { awk -v b="$IMG_BYTES" -v s="$1" 'BEGIN {if (s > 0) printf "%.0f", b / 1048576 / s; else print "-"}'; }
    irow() {  # OP TOOLKEY 2PASSKEY BASEKEY TARGET
        local op=$1 t=${WALL[$2]:-} tp=${3:+${WALL[$3]}} l=${WALL[$4]} target=$5
        if [[ -z $t ]]; then
            printf '%-14s %9s %8s %11s %8s %13s %14s %12s %8s\n' "$op" - "${tp:--}" "$l" - - - - "$target"
            return
        fi
        printf '%-14s %9s %8s %11s %8s %13s %14s %12s %8s\n' "$op" "$t" "${tp:--}" "$l" "$(imbps "$t")" \
            "$(ratio "$t" "$l")" "$( [[ -n $tp ]] && ratio "$t" "$tp" || echo -)" "$(kib_mib "${RSS[$2]}")" "$target"
    }
    printf '%-14s %9s %8s %11s %8s %13s %14s %12s %8s\n' operation "tool s" "2-pass s" "baseline s" "tool MB/s" \
        "tool/baseline" "tool/2-pass" "tool RSS MiB" target
    irow "images create" img_create img_create_2pass img_create_limit "<=1.20"
    irow "images push" img_push "" img_push_skopeo "<=0.50"
    echo
    echo "baselines:  images create = tar -c oci/ | zstd -T0 -3 -o F  (oci/ extracted from the bundle)  (peak RSS $(kib_mib "${RSS[img_create_limit]}") MiB)"
    echo "            images create 2-pass = the same; sha256sum -c of every blob                       (peak RSS $(kib_mib "${RSS[img_create_2pass]}") MiB)"
    echo "            images push   = skopeo copy oci:oci:NAME docker://127.0.0.1:PORT/REPO:TAG, once per image,"
    echo "                            one after another, into a fresh registry each run             (peak RSS $(kib_mib "${RSS[img_push_skopeo]}") MiB)"
    echo "            tool: bundle create from the warm cache (upstream registry stopped); bundle install B --registry"
    echo "                  127.0.0.1:PORT --plain-http into a fresh registry each run; targets: tool RSS <= 64 MiB"
    if [[ $COMPONENTS == 1 ]]; then
        echo
        echo "images components (same layout):"
        icomp() { printf '  %-58s %8s s  %6s MB/s  peak RSS %7s MiB\n' "$1" "${WALL[$2]}" "$(imbps "${WALL[$2]}")" "$(kib_mib "${RSS[$2]}")"; }
        icomp "tar -c oci/ | zstd -T0 -3 -o F; sync F  (durable)" img_create_limit_sync
        icomp "registry ingest: curl POST + PUT of every blob, in turn" img_push_limit
    fi
    if [[ -n $IMG_STATUS ]]; then
        echo "images push: $IMG_STATUS (skopeo's registry holds $IMG_CHECK_SKOPEO images under the bundle's digests)"
    else
        echo "images push: the registry holds $IMG_CHECK images under the bundle's digests (skopeo's: $IMG_CHECK_SKOPEO)"
    fi
fi
if [[ -n $IMG_FAIL ]]; then
    echo "bench: the images push did not work (see above)" >&2
    exit 1
fi
exit 0
