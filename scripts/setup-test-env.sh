#!/usr/bin/env bash
# Installs the real components the integration tests and the demo run against:
# apache2 (served on a private 127.0.0.1 port by each test), minisign, zstd,
# tar, GNU time, coreutils, curl, openssl; for images docker-registry (CNCF
# distribution), skopeo and umoci; for debs apt (`apt-get download` of real
# .debs), dpkg-dev, apt-utils (apt-ftparchive), gnupg and gpg-agent (a throwaway
# signing key), xz-utils and gzip (compressed Packages indexes); for python, pip and
# venv when python3 lacks them. Idempotent: a
# re-run with everything present does nothing but report, and never touches the
# package index.
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive

# package -> a command it provides (checked with `command -v`)
declare -A wanted=(
    [apache2]=/usr/sbin/apache2
    [apache2-utils]=htpasswd
    [minisign]=minisign
    [zstd]=zstd
    [tar]=tar
    [time]=/usr/bin/time
    [coreutils]=sha256sum
    [curl]=curl
    [openssl]=openssl
    [docker-registry]=docker-registry
    [skopeo]=skopeo
    [umoci]=umoci
    [apt]=apt-get
    [dpkg-dev]=dpkg-scanpackages
    [apt-utils]=apt-ftparchive
    [gnupg]=gpg
    [gpg-agent]=gpg-agent
    [xz-utils]=xz
    [gzip]=gzip
    [file]=file
)

missing=()
packages=(apache2 apache2-utils minisign zstd tar time coreutils curl openssl docker-registry skopeo umoci
    apt dpkg-dev apt-utils gnupg gpg-agent xz-utils gzip file)
for pkg in "${packages[@]}"; do
    cmd=${wanted[$pkg]}
    if command -v "$cmd" >/dev/null 2>&1 \
        && dpkg -s "$pkg" 2>/dev/null | grep -q '^Status: install ok installed'; then
        echo "ok: $pkg already installed ($cmd)"
    else
        echo "missing: $pkg (no $cmd)"
        missing+=("$pkg")
    fi
done

# python: stock pip (`pip download` of real wheels, `pip install --index-url` against the
# installed mirror) and venv. Whatever python3 is first on PATH (pyenv's, say) will do;
# Debian's packages only when it lacks either.
if python3 -m pip --version >/dev/null 2>&1 && python3 -m venv --help >/dev/null 2>&1; then
    echo "ok: python3 has pip and venv ($(command -v python3))"
else
    echo "missing: python3 pip/venv"
    missing+=(python3-pip python3-venv)
    wanted[python3-pip]=pip3
    wanted[python3-venv]=python3
fi

if ((${#missing[@]} == 0)); then
    echo "done: nothing to install"
    exit 0
fi

SUDO=()
if [[ $(id -u) -ne 0 ]]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO=(sudo --preserve-env=DEBIAN_FRONTEND)
    else
        echo "error: need root (or sudo) to install: ${missing[*]}" >&2
        exit 1
    fi
fi

echo "running: apt-get update"
"${SUDO[@]}" apt-get update -qq
echo "running: apt-get install -y --no-install-recommends ${missing[*]}"
"${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"

for pkg in "${missing[@]}"; do
    cmd=${wanted[$pkg]}
    if command -v "$cmd" >/dev/null 2>&1; then
        echo "installed: $pkg ($cmd)"
    else
        echo "error: $pkg installed but $cmd still not found" >&2
        exit 1
    fi
done
echo "done: installed ${missing[*]}"
