#!/usr/bin/env bash
# Speed and peak memory of `bundle create`, `verify` and `install`, side by side with the
# plain-tools pipelines that do the same work (tar | zstd -3, sha256sum), on generated
# data served by a private apache. A measurement, never a pass/fail test: it exits 0
# unless something crashes (or there is not enough free disk to start).
#
#   BENCH_SIZE_MB=1536   total data size in MiB (half random, half text)
#   BENCH_DIR=...        work directory (default: a fresh /tmp/airgap-bench.XXXXXX);
#                        needs ~4x BENCH_SIZE_MB free
#   BENCH_RUNS=2         runs per measurement (best wall time, max peak RSS)
#   BENCH_COMPONENTS=1   also time the components (sha256sum alone, zstd alone,
#                        create --threads 1 vs tar | zstd -T1); 0 skips them
#   BENCH_KEEP=1         keep BENCH_DIR afterwards
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

SIZE_MB=${BENCH_SIZE_MB:-1536}
RUNS=${BENCH_RUNS:-2}
COMPONENTS=${BENCH_COMPONENTS:-1}
KEEP=${BENCH_KEEP:-0}
[[ $SIZE_MB =~ ^[0-9]+$ && $SIZE_MB -ge 20 ]] || { echo "BENCH_SIZE_MB must be an integer >= 20" >&2; exit 1; }
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || { echo "BENCH_RUNS must be a positive integer" >&2; exit 1; }

# ---- disk check, before anything is built or written ------------------------------------
NEED_MB=$((SIZE_MB * 4))
if [[ -n ${BENCH_DIR:-} ]]; then
    probe=$BENCH_DIR
    while [[ ! -d $probe ]]; do probe=$(dirname "$probe"); done
else
    probe=/tmp
fi
AVAIL_MB=$(df -Pm "$probe" | awk 'NR==2 {print $4}')
if ((AVAIL_MB < NEED_MB)); then
    echo "not enough free disk in $probe: ${AVAIL_MB} MiB free, the benchmark needs ~${NEED_MB} MiB (4 x BENCH_SIZE_MB=${SIZE_MB})" >&2
    echo "hint: set BENCH_DIR to a larger filesystem or lower BENCH_SIZE_MB" >&2
    exit 1
fi

bash scripts/setup-test-env.sh >/dev/null
cargo build --release --quiet
BUNDLE=$ROOT/target/release/bundle
source scripts/lib/apache.sh

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
exit 0
