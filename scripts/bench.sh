#!/usr/bin/env bash
# Speed and peak memory of `bundle create`, `verify` and `install`, side by side with the
# plain-tools pipelines that do the same work (tar | zstd -3, sha256sum), on generated
# data served by a private apache; then the same for container images: real OCI images
# built offline with umoci, served by a private docker-registry, `bundle create` against
# `tar -c oci/ | zstd -3` and `bundle install --registry` against one `skopeo copy` per
# image; then for Debian packages: real .debs in a private signed apt repository, `bundle
# lock` + `create` against an isolated `apt-get update` + `apt-get download`, and `bundle
# install` against indexing and signing a repository of the same debs by hand
# (apt-ftparchive, gzip, xz, gpg --clearsign). A measurement, never a pass/fail test: it exits 0 unless something crashes (or
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
#   BENCH_DEBS=1         also benchmark Debian packages (real .debs from the machine's apt
#                        sources in a private signed apt repository); 0 skips them
#   BENCH_DEBS_COUNT=50  how many packages of the fixed list below (at most its length)
#   BENCH_DEBS_CACHE=... where the downloaded .debs are kept between runs (default: the
#                        tests' cache, \${CARGO_TARGET_DIR:-target}/tmp/apt-debs/<arch>)
#   BENCH_DELTA=1        also benchmark a delta bundle (one file of ~1 % of the content
#                        changes; create of the full v2 vs create --base the v1 bundle, and
#                        the delta installed over v1); 0 skips it. Needs ~2x BENCH_SIZE_MB
#                        more free disk (the v2 bundle, a web root)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

SIZE_MB=${BENCH_SIZE_MB:-1536}
RUNS=${BENCH_RUNS:-2}
COMPONENTS=${BENCH_COMPONENTS:-1}
KEEP=${BENCH_KEEP:-0}
IMAGES=${BENCH_IMAGES:-1}
IMAGES_MB=${BENCH_IMAGES_MB:-320}
DEBS=${BENCH_DEBS:-1}
DEBS_COUNT=${BENCH_DEBS_COUNT:-50}
DELTA=${BENCH_DELTA:-1}
# Real packages of Debian 12 (bookworm): small libraries and tools, most of them with their
# libraries, two of them Architecture: all. The first BENCH_DEBS_COUNT are benchmarked.
DEB_LIST=(jq libjq1 libonig5 hello curl libcurl4 tree less file libmagic1 libmagic-mgc zstd
    xz-utils lz4 bzip2 unzip zip rsync socat netcat-openbsd tmux libevent-core-2.1-7 pv bc ed
    nano wget libpsl5 libidn2-0 libunistring2 libssh2-1 libnghttp2-14 librtmp1 libbrotli1
    libldap-2.5-0 libsasl2-2 libsasl2-modules-db libgssapi-krb5-2 libkrb5-3 libk5crypto3
    libkrb5support0 libkeyutils1 publicsuffix ca-certificates openssl libssl3 libpcre2-8-0
    libxml2 libyaml-0-2 libzstd1 liblz4-1 libbz2-1.0 libsqlite3-0 sqlite3 libreadline8
    readline-common lsof strace patch diffutils make htop libnl-3-200 libnl-genl-3-200 ncdu
    dos2unix)
[[ $SIZE_MB =~ ^[0-9]+$ && $SIZE_MB -ge 20 ]] || { echo "BENCH_SIZE_MB must be an integer >= 20" >&2; exit 1; }
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || { echo "BENCH_RUNS must be a positive integer" >&2; exit 1; }
[[ $IMAGES == 0 || $IMAGES == 1 ]] || { echo "BENCH_IMAGES must be 0 or 1" >&2; exit 1; }
[[ $IMAGES_MB =~ ^[0-9]+$ && $IMAGES_MB -ge 10 ]] || { echo "BENCH_IMAGES_MB must be an integer >= 10" >&2; exit 1; }
[[ $DEBS == 0 || $DEBS == 1 ]] || { echo "BENCH_DEBS must be 0 or 1" >&2; exit 1; }
[[ $DELTA == 0 || $DELTA == 1 ]] || { echo "BENCH_DELTA must be 0 or 1" >&2; exit 1; }
[[ $DEBS_COUNT =~ ^[1-9][0-9]*$ && $DEBS_COUNT -le ${#DEB_LIST[@]} ]] \
    || { echo "BENCH_DEBS_COUNT must be an integer from 1 to ${#DEB_LIST[@]}" >&2; exit 1; }

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
if [[ $DEBS == 1 ]]; then
    # ~20 MiB of debs (50 packages) held up to 8 times: upstream pool, bundle cache, bundle,
    # apt's download, two web roots, slack
    NEED_MB=$((NEED_MB + 256))
    NEED_WHY+=" + 256 for debs"
fi
if [[ $DELTA == 1 ]]; then
    # the full v2 bundle beside the v1 one, and a web root holding v1 then v2
    NEED_MB=$((NEED_MB + SIZE_MB * 2))
    NEED_WHY+=" + 2 x BENCH_SIZE_MB for the delta"
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
    if [[ -n ${DEB_GNUPG:-} ]]; then
        GNUPGHOME=$DEB_GNUPG gpgconf --kill gpg-agent 2>/dev/null || true
    fi
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

# f. split volumes (64 MiB): create straight into volumes, and install from them, each
# beside the unsplit run above (the volumes are hashed against the signed list as they
# stream, so the target is <= 1.05x)
SPLIT_DIR=$OUT/split
mkdir -p "$SPLIT_DIR"
measure create_split "rm -f '$SPLIT_DIR'/full.bundle*" \
    "$BUNDLE" create "$B/full.lock.yaml" -o "$SPLIT_DIR/full.bundle" --key "$B/key.key" --cache "$CACHE" --split-size 64M --quiet
SPLIT_VOLUMES=$(find "$SPLIT_DIR" -name 'full.bundle.[0-9][0-9][0-9]' | wc -l)
measure install_volumes "rm -rf '$X'; mkdir -p '$X'" \
    "$BUNDLE" install "$SPLIT_DIR/full.bundle" --pubkey "$B/key.pub" --web-root "$X" --quiet
rm -rf "$X" "$SPLIT_DIR"

# g. resumed install: an install SIGKILLed once 80 % of the content bytes are staged, run again
# (it reuses the staged entries and jumps over them through the seek table), beside the
# full install above (target <= 0.35x). The kill is part of the untimed preparation.
staged_bytes() {  # WEB_ROOT: bytes of the complete (verified) entries in its staging
    du -sb --exclude='*.part' "$1"/.bundle-staging-* 2>/dev/null | awk '{s += $1} END {print s + 0}'
}
kill_at_80() {  # WEB_ROOT: start an install into WEB_ROOT, SIGKILL it once 80 % is staged
    local web=$1 want=$(( DATA_BYTES * 8 / 10 )) pid
    rm -rf "$web"; mkdir -p "$web"
    "$BUNDLE" install "$TOOL_BUNDLE" --pubkey "$B/key.pub" --web-root "$web" --quiet &
    pid=$!
    while kill -0 "$pid" 2>/dev/null; do
        if (($(staged_bytes "$web") >= want)); then kill -9 "$pid" 2>/dev/null || true; break; fi
    done
    wait "$pid" 2>/dev/null || true
    RESUME_STAGED=$(staged_bytes "$web")
    ((RESUME_STAGED > 0)) || log "warning: the install finished before the kill (nothing staged)"
}
measure install_resumed "kill_at_80 '$X'" \
    "$BUNDLE" install "$TOOL_BUNDLE" --pubkey "$B/key.pub" --web-root "$X" --quiet
# the resumed install must hold every file, byte for byte (not timed)
(cd "$X" && sha256sum -c --quiet "$TMPW/SUMS") \
    || { echo "the resumed install differs from the data" >&2; exit 1; }
rm -rf "$X"

# h. parity: create into 64 MiB volumes with 2 parity volumes beside the unsplit create
# (target <= 1.3x), and an install that must rebuild a deleted data volume beside a clean
# install of the same volumes (target <= 1.5x)
PARITY_DIR=$OUT/parity
mkdir -p "$PARITY_DIR"
measure create_parity "rm -f '$PARITY_DIR'/full.bundle*" \
    "$BUNDLE" create "$B/full.lock.yaml" -o "$PARITY_DIR/full.bundle" --key "$B/key.key" --cache "$CACHE" --split-size 64M --parity 2 --quiet
measure install_parity_clean "rm -rf '$X'; mkdir -p '$X'" \
    "$BUNDLE" install "$PARITY_DIR/full.bundle" --pubkey "$B/key.pub" --web-root "$X" --quiet
measure install_rebuild "rm -rf '$X'; mkdir -p '$X'; rm -f '$PARITY_DIR/full.bundle.001'" \
    "$BUNDLE" install "$PARITY_DIR/full.bundle" --pubkey "$B/key.pub" --web-root "$X" --quiet
rm -rf "$X" "$PARITY_DIR"

# i. delta bundle: the random file closest to 1 % of the content gets new bytes upstream
# (same size, same URL) and v2 is locked (untimed, through a `mirrors:` entry to a new
# apache: the canonical URLs, hence the web-root paths, stay v1's). Then, from the warm
# cache: create of the full v2 bundle beside create --base the v1 bundle (the delta
# carries only the changed file); and install of the delta over a web root holding v1,
# beside the full v2 installed over the same (v1's untimed install is the preparation of
# each run), the result checked with sha256sum -c against v2's data.
if [[ $DELTA == 1 ]]; then
    read -r DELTA_FILE_BYTES DELTA_FILE < <(cd "$DATA" && find rand -type f -printf '%s %p\n' \
        | awk -v t=$((DATA_BYTES / 100)) '{d = $1 - t; if (d < 0) d = -d; print d, $1, $2}' \
        | sort -k1,1n -k3,3 | head -n1 | cut -d' ' -f2-)
    DELTA_OLD_SHA=$(sha256sum "$DATA/$DELTA_FILE" | cut -d' ' -f1)
    log "delta: $DELTA_FILE ($DELTA_FILE_BYTES bytes) changes upstream; lock v2 (not timed)"
    make_rand "$DATA/$DELTA_FILE" "$DELTA_FILE_BYTES"
    chmod a+r "$DATA/$DELTA_FILE"
    DELTA_NEW_SHA=$(sha256sum "$DATA/$DELTA_FILE" | cut -d' ' -f1)
    V1_BASE=$BASE
    start_apache "$DATA" "$B/apache-v2"
    {
        sed 's/^version: 1.0.0$/version: 2.0.0/' "$B/full.yaml"
        echo "mirrors:"
        echo "  - {prefix: '$V1_BASE/', url: 'http://127.0.0.1:$APACHE_PORT/'}"
    } >"$B/v2.yaml"
    "$BUNDLE" lock "$B/v2.yaml" -o "$B/v2.lock.yaml" --cache "$CACHE" --quiet
    stop_apache
    # v2's data as the web root must hold it: v1's list with the changed file's new hash
    sed "s/^$DELTA_OLD_SHA /$DELTA_NEW_SHA /" "$TMPW/SUMS" >"$TMPW/V2SUMS"
    [[ $(grep -c "^$DELTA_NEW_SHA " "$TMPW/V2SUMS") == 1 ]] \
        || { echo "delta: $DELTA_FILE is not listed once in the bundle's checksums" >&2; exit 1; }

    V1_BUNDLE=$TOOL_BUNDLE
    V2_BUNDLE=$OUT/v2.bundle
    DELTA_BUNDLE=$OUT/v2-delta.bundle
    log "delta: measuring create ($RUNS runs each, warm cache)"
    find "$CACHE" -type f -print0 | xargs -0 cat >/dev/null
    measure delta_full_create "rm -f '$V2_BUNDLE' '$V2_BUNDLE.minisig'" \
        "$BUNDLE" create "$B/v2.lock.yaml" -o "$V2_BUNDLE" --key "$B/key.key" --cache "$CACHE" --quiet
    measure delta_create "rm -f '$DELTA_BUNDLE' '$DELTA_BUNDLE.minisig'" \
        "$BUNDLE" create "$B/v2.lock.yaml" -o "$DELTA_BUNDLE" --key "$B/key.key" --cache "$CACHE" \
        --base "$V1_BUNDLE" --quiet
    V2_BUNDLE_BYTES=$(stat -c %s "$V2_BUNDLE")
    DELTA_BUNDLE_BYTES=$(stat -c %s "$DELTA_BUNDLE")

    log "delta: measuring install over v1 ($RUNS runs each; v1 installed untimed before each)"
    V1_INSTALL="rm -rf '$X'; mkdir -p '$X'; '$BUNDLE' install '$V1_BUNDLE' --pubkey '$B/key.pub' --web-root '$X' --quiet"
    measure delta_full_install "$V1_INSTALL" \
        "$BUNDLE" install "$V2_BUNDLE" --pubkey "$B/key.pub" --web-root "$X" --quiet
    measure delta_install "$V1_INSTALL" \
        "$BUNDLE" install "$DELTA_BUNDLE" --pubkey "$B/key.pub" --web-root "$X" --quiet
    # the web root after the delta: v2's data, byte for byte, and no other file
    (cd "$X" && sha256sum -c --quiet "$TMPW/V2SUMS") \
        || { echo "delta: the web root after the delta install differs from v2's data" >&2; exit 1; }
    DELTA_INSTALLED_FILES=$(find "$X/files" -type f | wc -l)
    ((DELTA_INSTALLED_FILES == N_FILES)) \
        || { echo "delta: the web root holds $DELTA_INSTALLED_FILES files, v2 has $N_FILES" >&2; exit 1; }
    rm -rf "$X" "$V2_BUNDLE" "$V2_BUNDLE.minisig"
fi

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

# ---- 3c. debs ---------------------------------------------------------------------------
# The first BENCH_DEBS_COUNT packages of DEB_LIST, downloaded once with `apt-get download`
# from the machine's own apt sources (kept in BENCH_DEBS_CACHE between runs; not timed),
# laid out as a signed upstream apt repository (dists/stable/main/binary-ARCH, pool/main/…,
# Packages(.gz, .xz) and Release by apt-ftparchive, InRelease by gpg --clearsign with a
# throwaway key in a private GNUPGHOME) served by a private apache, then:
#   debs lock+create: bundle lock + bundle create (closure: none, cold cache each run) vs
#                     an isolated stock apt (own APT_CONFIG, sources with signed-by, lists
#                     and cache, all emptied each run): apt-get update + apt-get download
#   debs install:     bundle install B --web-root (fresh web root each run) vs the same
#                     repository made by hand from the same debs: cp of the pool,
#                     apt-ftparchive packages, gzip, xz, apt-ftparchive release, gpg --clearsign
DEB_STATUS=""        # why the debs were not measured, if they were not
DEB_FAIL=""          # a real failure to report (the bench then exits 1 after the report)
if [[ $DEBS == 1 ]]; then
    D=$B/debs
    DROOT=$D/www/debian         # the upstream repository, as served
    DCACHE=$D/cache             # bundle's download cache (emptied before each lock)
    DEB_GNUPG=$D/gnupg          # the throwaway signing key's home (cleanup kills its agent)
    DAPT=$D/apt                 # the isolated apt client's directory
    DW=$D/www-tool              # bundle install's web root
    DW2=$D/www-base             # the hand-made repository
    DEB_BUNDLE=$OUT/debs.bundle
    DEB_ARCH=$(dpkg --print-architecture)
    DEB_NAMES=("${DEB_LIST[@]:0:DEBS_COUNT}")
    DEB_CACHE=${BENCH_DEBS_CACHE:-$(cd "${CARGO_TARGET_DIR:-target}" && pwd)/tmp/apt-debs/$DEB_ARCH}
    mkdir -p "$D/www" "$DROOT" "$DEB_CACHE"
    chmod 755 "$D" "$D/www"

    # The cache has the tests' layout (NAME/NAME_VERSION_ARCH.deb, one deb per name) and
    # lock (flock on .lock), so the bench and `cargo test` share their downloads.
    deb_missing=()
    for name in "${DEB_NAMES[@]}"; do [[ -d $DEB_CACHE/$name ]] || deb_missing+=("$name"); done
    apt_download_host() {  # DIR NAMES...: apt-get download with the machine's own apt config
        local dir=$1; shift
        (cd "$dir" && apt-get -q -o APT::Sandbox::User=root download "$@") >"$D/download.log" 2>&1
    }
    if ((${#deb_missing[@]})); then
        log "debs: apt-get download of ${#deb_missing[@]} packages from this machine's apt sources (not timed)"
        exec {deb_lock_fd}>"$DEB_CACHE/.lock"
        flock "$deb_lock_fd"
        rm -rf "$DEB_CACHE/.partial"
        mkdir -p "$DEB_CACHE/.partial"
        if ! apt_download_host "$DEB_CACHE/.partial" "${deb_missing[@]}"; then
            # missing or stale lists (no candidate, or a 404 for a superseded version): one
            # apt-get update of the machine's lists, then a second try
            if apt-get -q update >"$D/update.log" 2>&1; then
                apt_download_host "$DEB_CACHE/.partial" "${deb_missing[@]}" || true
            fi
        fi
        for f in "$DEB_CACHE"/.partial/*.deb; do
            [[ -e $f ]] || continue
            name=$(dpkg-deb --field "$f" Package)
            mkdir -p "$DEB_CACHE/$name"
            mv "$f" "$DEB_CACHE/$name/"
        done
        rm -rf "$DEB_CACHE/.partial"
        exec {deb_lock_fd}>&-
    fi
    DEB_FILES=()
    for name in "${DEB_NAMES[@]}"; do
        f=("$DEB_CACHE/$name"/*.deb)
        if [[ ! -e ${f[0]} ]]; then
            DEB_STATUS="skipped (apt-get download gave no deb for $name: $(grep -E '^(E|Err):' "$D/download.log" 2>/dev/null | head -n1))"
            break
        fi
        ((${#f[@]} == 1)) || { echo "more than one deb in $DEB_CACHE/$name" >&2; exit 1; }
        DEB_FILES+=("${f[0]}")
    done
    [[ -z $DEB_STATUS ]] || log "debs: $DEB_STATUS"
fi
if [[ $DEBS == 1 && -z $DEB_STATUS ]]; then
    # the upstream repository, Debian's pool layout: pool/main/<prefix>/<source>/ and
    # NAME_VERSION_ARCH.deb without the epoch (apt-get download names the file it saves
    # NAME_EPOCH%3aVERSION_ARCH.deb: a literal '%3a' that no archive has)
    log "debs: building a signed apt repository of ${#DEB_FILES[@]} packages"
    for f in "${DEB_FILES[@]}"; do
        { read -r pkg; read -r ver; read -r arch; } < <(dpkg-deb --showformat '${Package}\n${Version}\n${Architecture}\n' --show "$f")
        src=$(dpkg-deb --field "$f" Source | awk '{print $1}')
        [[ -n $src ]] || src=$pkg
        if [[ $src == lib?* ]]; then prefix=${src:0:4}; else prefix=${src:0:1}; fi
        mkdir -p "$DROOT/pool/main/$prefix/$src"
        cp "$f" "$DROOT/pool/main/$prefix/$src/${pkg}_${ver#*:}_$arch.deb"
    done
    mkdir -p "$DEB_GNUPG"
    chmod 700 "$DEB_GNUPG"
    dgpg() { GNUPGHOME=$DEB_GNUPG gpg --batch --quiet --no-tty "$@" </dev/null; }
    dgpg --passphrase '' --quick-gen-key 'airgap-bundle bench repo <bench@example.org>' ed25519 sign never
    DEB_FPR=$(dgpg --with-colons --list-keys bench@example.org | awk -F: '$1 == "fpr" {print $10; exit}')
    dgpg --armor --yes --output "$D/key.asc" --export "$DEB_FPR"
    # publish_repo DIR: indexes, Release and InRelease for the pool under DIR (the same
    # commands are the install baseline, so they live in a file that both run)
    cat >"$D/publish.sh" <<'SH'
set -euo pipefail
dir=$1 arch=$2 gnupg=$3 fpr=$4 scan=${5:-ftparchive}
cd "$dir"
idx=dists/stable/main/binary-$arch
mkdir -p "$idx"
if [[ $scan == dpkg ]]; then
    dpkg-scanpackages -m pool /dev/null >"$idx/Packages" 2>/dev/null
else
    apt-ftparchive packages pool >"$idx/Packages"
fi
gzip -9nc "$idx/Packages" >"$idx/Packages.gz"
xz -c "$idx/Packages" >"$idx/Packages.xz"
cd dists/stable
apt-ftparchive -o APT::FTPArchive::Release::Origin=airgap-bundle-bench \
    -o APT::FTPArchive::Release::Label=airgap-bundle-bench \
    -o APT::FTPArchive::Release::Suite=stable -o APT::FTPArchive::Release::Codename=stable \
    -o APT::FTPArchive::Release::Components=main \
    -o APT::FTPArchive::Release::Architectures="$arch" release . >Release.new
mv Release.new Release
GNUPGHOME=$gnupg gpg --batch --quiet --no-tty --yes --armor --digest-algo SHA512 \
    --local-user "$fpr" --clearsign --output InRelease Release </dev/null
SH
    bash "$D/publish.sh" "$DROOT" "$DEB_ARCH" "$DEB_GNUPG" "$DEB_FPR"
    chmod -R a+rX "$D/www"
    DEB_N=$(grep -c '^Package: ' "$DROOT/dists/stable/main/binary-$DEB_ARCH/Packages")
    DEB_BYTES=$(find "$DROOT/pool" -name '*.deb' -printf '%s\n' | awk '{s+=$1} END {print s}')
    (cd "$DROOT" && find pool -name '*.deb' -print0 | sort -z | xargs -0 sha256sum) >"$D/POOLSUMS"
    start_apache "$D/www" "$D/apache"
    DEB_URL=http://127.0.0.1:$APACHE_PORT/debian
    log "debs: $DEB_N packages, $DEB_BYTES bytes, served at $DEB_URL"

    {
        echo "apiVersion: bundle/v1"
        echo "name: bench-debs"
        echo "version: 1.0.0"
        echo "debs:"
        echo "  - name: bench"
        echo "    url: $DEB_URL"
        echo "    suite: stable"
        echo "    components: [main]"
        echo "    architectures: [$DEB_ARCH]"
        echo "    signed-by: key.asc"
        echo "    closure: none"
        echo "    packages:"
        for name in "${DEB_NAMES[@]}"; do echo "      - {name: $name}"; done
    } >"$D/bench.yaml"

    # the isolated apt client (as tests/common/apt.rs's AptClient): its own APT_CONFIG keeps
    # out the host's apt.conf.d, sources, keys and preferences, and it never locks or
    # writes the host's apt state; signatures are checked with apt's defaults
    mkdir -p "$DAPT"/{apt.conf.d,sources.list.d,trusted.gpg.d,preferences.d}
    echo "deb [arch=$DEB_ARCH signed-by=$D/key.asc] $DEB_URL stable main" >"$DAPT/sources.list.d/bench.list"
    cat >"$DAPT/apt.conf" <<CONF
Dir::Etc::Main "/dev/null";
Dir::Etc::Parts "$DAPT/apt.conf.d";
Dir::Etc::SourceList "/dev/null";
Dir::Etc::SourceParts "$DAPT/sources.list.d";
Dir::Etc::Trusted "$DAPT/trusted.gpg";
Dir::Etc::TrustedParts "$DAPT/trusted.gpg.d";
Dir::Etc::Preferences "/dev/null";
Dir::Etc::PreferencesParts "$DAPT/preferences.d";
Dir::State::Lists "$DAPT/lists";
Dir::Cache "$DAPT/cache";
Debug::NoLocking "1";
APT::Sandbox::User "root";
Acquire::http::Proxy "DIRECT";
Acquire::Retries "0";
CONF
    APT_RESET="rm -rf '$DAPT/lists' '$DAPT/cache' '$D/got'; mkdir -p '$DAPT/lists/partial' '$DAPT/cache/archives/partial' '$D/got'"
    APT_RUN='set -euo pipefail; unset http_proxy HTTP_PROXY; export APT_CONFIG=$1/apt.conf LC_ALL=C
             apt-get -qq update 2>"$1/update.err"; cd "$2"; shift 2; apt-get -qq download "$@"'
    TOOL_RESET="rm -rf '$DCACHE' '$D/bench.lock.yaml' '$DEB_BUNDLE' '$DEB_BUNDLE.minisig'"
    TOOL_RUN='set -euo pipefail; cd "$1"
              "$2" lock bench.yaml -o bench.lock.yaml --cache "$3" --quiet
              "$2" create bench.lock.yaml -o "$4" --key "$5" --cache "$3" --quiet'

    # untimed probes (also the warm-up): does this `bundle` carry debs, and does apt agree
    # that the repository is sound?
    log "debs: probes (bundle lock + create, apt-get update + download; not timed)"
    eval "$TOOL_RESET"
    probe_rc=0
    bash -c "$TOOL_RUN" _ "$D" "$BUNDLE" "$DCACHE" "$DEB_BUNDLE" "$B/key.key" 2>"$D/probe.err" || probe_rc=$?
    if ((probe_rc == 2)) && grep -qiE "not supported|not in this version" "$D/probe.err"; then
        DEB_STATUS="skipped (not implemented): $(head -n1 "$D/probe.err")"
    elif ((probe_rc != 0)); then
        DEB_STATUS="FAILED (exit $probe_rc): $(head -n1 "$D/probe.err")"
        DEB_FAIL=1
        sed 's/^/    /' "$D/probe.err" >&2
    fi
    eval "$APT_RESET"
    apt_rc=0
    bash -c "$APT_RUN" _ "$DAPT" "$D/got" "${DEB_NAMES[@]}" 2>"$D/apt-probe.err" || apt_rc=$?
    DEB_GOT=$(find "$D/got" -name '*.deb' | wc -l)
    if ((apt_rc != 0)) || grep -qE '^(W|E):' "$DAPT/update.err" || ((DEB_GOT != DEB_N)); then
        DEB_STATUS="FAILED: isolated apt-get (exit $apt_rc, $DEB_GOT of $DEB_N debs): $(cat "$DAPT/update.err" "$D/apt-probe.err" | head -n1)"
        DEB_FAIL=1
    fi
    [[ -z $DEB_STATUS ]] || log "debs: $DEB_STATUS"
fi
if [[ $DEBS == 1 && -z $DEB_STATUS ]]; then
    DEB_BUNDLE_BYTES=$(stat -c %s "$DEB_BUNDLE")
    log "debs: measuring lock+create ($RUNS runs each, cold cache each run)"
    measure deb_create "$TOOL_RESET" bash -c "$TOOL_RUN" _ "$D" "$BUNDLE" "$DCACHE" "$DEB_BUNDLE" "$B/key.key"
    measure deb_apt "$APT_RESET" bash -c "$APT_RUN" _ "$DAPT" "$D/got" "${DEB_NAMES[@]}"
    if [[ $COMPONENTS == 1 ]]; then
        measure deb_lock "rm -rf '$DCACHE' '$D/bench.lock.yaml'" \
            bash -c 'cd "$1" && "$2" lock bench.yaml -o bench.lock.yaml --cache "$3" --quiet' _ "$D" "$BUNDLE" "$DCACHE"
        # lock fetches only the signed Release and the indexes; create downloads the debs:
        # one untimed create fills the cache, so that every timed run is a warm one
        rm -f "$DEB_BUNDLE" "$DEB_BUNDLE.minisig"
        "$BUNDLE" create "$D/bench.lock.yaml" -o "$DEB_BUNDLE" --key "$B/key.key" --cache "$DCACHE" --quiet
        measure deb_create_warm "rm -f '$DEB_BUNDLE' '$DEB_BUNDLE.minisig'" \
            "$BUNDLE" create "$D/bench.lock.yaml" -o "$DEB_BUNDLE" --key "$B/key.key" --cache "$DCACHE" --quiet
        measure deb_apt_update "$APT_RESET" bash -c \
            'set -euo pipefail; unset http_proxy HTTP_PROXY; APT_CONFIG=$1/apt.conf LC_ALL=C apt-get -qq update' _ "$DAPT"
    fi
    # the upstream server is not needed any more: install and its baseline are offline
    stop_apache

    log "debs: measuring install ($RUNS runs each, a fresh web root each run)"
    measure deb_install "rm -rf '$DW'; mkdir -p '$DW'" \
        "$BUNDLE" install "$DEB_BUNDLE" --pubkey "$B/key.pub" --web-root "$DW" --quiet
    HAND_RUN='set -euo pipefail; mkdir -p "$2/debian"; cp -r "$1/pool" "$2/debian/"; bash "$3" "$2/debian" "${@:4}"'
    measure deb_hand "rm -rf '$DW2'; mkdir -p '$DW2'" bash -c "$HAND_RUN" \
        _ "$DROOT" "$DW2" "$D/publish.sh" "$DEB_ARCH" "$DEB_GNUPG" "$DEB_FPR"
    if [[ $COMPONENTS == 1 ]]; then
        measure deb_hand_dpkg "rm -rf '$DW2'; mkdir -p '$DW2'" bash -c "$HAND_RUN" \
            _ "$DROOT" "$DW2" "$D/publish.sh" "$DEB_ARCH" "$DEB_GNUPG" "$DEB_FPR" dpkg
        measure deb_hand_sync "rm -rf '$DW2'; mkdir -p '$DW2'" bash -c "$HAND_RUN"'; sync -f "$2"' \
            _ "$DROOT" "$DW2" "$D/publish.sh" "$DEB_ARCH" "$DEB_GNUPG" "$DEB_FPR"
    fi

    # what install wrote: the upstream debs byte for byte at their pool paths, upstream's
    # InRelease byte for byte
    DEB_INSTALLED=$(cd "$DW/debs/bench" 2>/dev/null && find pool -name '*.deb' -print0 | sort -z | xargs -0 -r sha256sum | cmp -s - "$D/POOLSUMS" && echo same || echo DIFFERENT)
    cmp -s "$DW/debs/bench/dists/stable/InRelease" "$DROOT/dists/stable/InRelease" \
        && DEB_INREL=same || DEB_INREL=DIFFERENT
    if [[ $DEB_INSTALLED != same || $DEB_INREL != same ]]; then
        DEB_FAIL=1
        log "debs: the installed repository differs from upstream (debs: $DEB_INSTALLED, InRelease: $DEB_INREL)"
    fi
    rm -rf "$DW" "$DW2" "$D/got" "$DCACHE"
fi
stop_apache

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
echo
echo "split volumes (--split-size 64M, $SPLIT_VOLUMES volumes):"
printf '  create into volumes  %8s s  vs unsplit %8s s  ratio %5s  peak RSS %7s MiB\n' \
    "${WALL[create_split]}" "${WALL[create]}" "$(ratio "${WALL[create_split]}" "${WALL[create]}")" "$(kib_mib "${RSS[create_split]}")"
printf '  install from volumes %8s s  vs unsplit %8s s  ratio %5s  peak RSS %7s MiB  (target <= 1.05)\n' \
    "${WALL[install_volumes]}" "${WALL[install]}" "$(ratio "${WALL[install_volumes]}" "${WALL[install]}")" "$(kib_mib "${RSS[install_volumes]}")"
echo "parity (--split-size 64M --parity 2):"
printf '  create with parity   %8s s  vs unsplit %8s s  ratio %5s  peak RSS %7s MiB  (target <= 1.3)\n' \
    "${WALL[create_parity]}" "${WALL[create]}" "$(ratio "${WALL[create_parity]}" "${WALL[create]}")" "$(kib_mib "${RSS[create_parity]}")"
printf '  install, 1 rebuilt   %8s s  vs clean   %8s s  ratio %5s  peak RSS %7s MiB  (target <= 1.5)\n' \
    "${WALL[install_rebuild]}" "${WALL[install_parity_clean]}" "$(ratio "${WALL[install_rebuild]}" "${WALL[install_parity_clean]}")" "$(kib_mib "${RSS[install_rebuild]}")"
echo "resumed install (killed once $(mib "$RESUME_STAGED") of $(mib "$DATA_BYTES") MiB were staged, then run again; checked with sha256sum -c):"
printf '  resumed install      %8s s  vs full   %8s s  ratio %5s  peak RSS %7s MiB  (target <= 0.35)\n' \
    "${WALL[install_resumed]}" "${WALL[install]}" "$(ratio "${WALL[install_resumed]}" "${WALL[install]}")" "$(kib_mib "${RSS[install_resumed]}")"
if [[ $DELTA == 1 ]]; then
    echo "delta (create --base the v1 bundle; $DELTA_FILE, $(mib "$DELTA_FILE_BYTES") MiB = $(awk -v a="$DELTA_FILE_BYTES" -v b="$DATA_BYTES" 'BEGIN {printf "%.1f", 100 * a / b}') % of the content, changed; warm cache):"
    printf '  full v2 bundle  %10s MiB  create %8s s  peak RSS %7s MiB\n' \
        "$(mib "$V2_BUNDLE_BYTES")" "${WALL[delta_full_create]}" "$(kib_mib "${RSS[delta_full_create]}")"
    printf '  delta bundle    %10s MiB  create %8s s  peak RSS %7s MiB\n' \
        "$(mib "$DELTA_BUNDLE_BYTES")" "${WALL[delta_create]}" "$(kib_mib "${RSS[delta_create]}")"
    printf '  delta / full    size %s %%, create time %s\n' \
        "$(awk -v a="$DELTA_BUNDLE_BYTES" -v b="$V2_BUNDLE_BYTES" 'BEGIN {printf "%.2f", 100 * a / b}')" \
        "$(ratio "${WALL[delta_create]}" "${WALL[delta_full_create]}")"
    printf '  install over v1: delta %8s s  vs full v2 %8s s  ratio %5s  peak RSS %7s MiB\n' \
        "${WALL[delta_install]}" "${WALL[delta_full_install]}" "$(ratio "${WALL[delta_install]}" "${WALL[delta_full_install]}")" \
        "$(kib_mib "${RSS[delta_install]}")"
    echo "  after the delta the web root holds v2's data byte for byte (sha256sum -c, $DELTA_INSTALLED_FILES files)"
fi
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
if [[ $DEBS == 1 ]]; then
    echo
    if [[ -n $DEB_STATUS ]]; then
        echo "debs:     $DEB_STATUS"
    else
        echo "debs:     $DEB_N packages of Debian $(cut -d. -f1 /etc/debian_version 2>/dev/null || echo '?') (${DEB_NAMES[0]} .. ${DEB_NAMES[DEB_N - 1]}; closure: none), $(mib "$DEB_BYTES") MiB of .debs,"
        echo "          a signed apt repository (InRelease, Packages .gz .xz) served by a private apache"
        echo "bundle:   $(mib "$DEB_BUNDLE_BYTES") MiB"
        echo
        dmbps() { awk -v b="$DEB_BYTES" -v s="$1" 'BEGIN {if (s > 0) printf "%.0f", b / 1048576 / s; else print "-"}'; }
        drow() {  # OP TOOLKEY BASEKEY
            printf '%-17s %9s %11s %8s %13s %12s %16s\n' "$1" "${WALL[$2]}" "${WALL[$3]}" "$(dmbps "${WALL[$2]}")" \
                "$(ratio "${WALL[$2]}" "${WALL[$3]}")" "$(kib_mib "${RSS[$2]}")" "$(kib_mib "${RSS[$3]}")"
        }
        printf '%-17s %9s %11s %8s %13s %12s %16s\n' operation "tool s" "baseline s" "tool MB/s" \
            "tool/baseline" "tool RSS MiB" "baseline RSS MiB"
        drow "debs lock+create" deb_create deb_apt
        drow "debs install" deb_install deb_hand
        echo
        echo "baselines:  debs lock+create = isolated stock apt (own APT_CONFIG, sources with signed-by, lists and cache"
        echo "                               emptied each run): apt-get update; apt-get download of the $DEB_N packages"
        echo "            debs install     = cp -r pool; apt-ftparchive packages; gzip -9n; xz; apt-ftparchive release;"
        echo "                               gpg --clearsign (InRelease), into a fresh directory each run"
        echo "            tool: bundle lock + bundle create, cold cache each run (upstream on 127.0.0.1); bundle install B"
        echo "                  --web-root W into a fresh web root each run (checks the signature and every hash, syncs)"
        if [[ $COMPONENTS == 1 ]]; then
            echo
            echo "debs components (same packages):"
            # (MB/s of the .debs' bytes; "-" where no .deb is moved)
            dcomp() { printf '  %-58s %8s s  %6s MB/s  peak RSS %7s MiB\n' "$1" "${WALL[$2]}" \
                "$( [[ ${3:-} == nodebs ]] && echo - || dmbps "${WALL[$2]}")" "$(kib_mib "${RSS[$2]}")"; }
            dcomp "bundle lock (cold cache; Release and indexes only)" deb_lock nodebs
            dcomp "bundle create (warm cache: the debs already in it)" deb_create_warm
            dcomp "apt-get update alone (empty lists)" deb_apt_update nodebs
            dcomp "hand-made repository with dpkg-scanpackages -m" deb_hand_dpkg
            dcomp "hand-made repository; sync -f DIR  (durable)" deb_hand_sync
        fi
        echo "debs install: the web root holds the upstream debs ($DEB_INSTALLED) and InRelease ($DEB_INREL)"
    fi
fi
if [[ -n $IMG_FAIL ]]; then
    echo "bench: the images push did not work (see above)" >&2
    exit 1
fi
if [[ -n $DEB_FAIL ]]; then
    echo "bench: the debs did not work (see above)" >&2
    exit 1
fi
exit 0
