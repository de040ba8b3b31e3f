#!/usr/bin/env bash
# web/openssl/build.sh OUTDIR — OpenSSL 3 and tls.c compiled to WebAssembly with Debian's
# emscripten: writes OUTDIR/openssl-tls.js (the loader, a classic script defining
# PySmtpOpenSSL), OUTDIR/openssl-tls.wasm and OUTDIR/LICENSE-openssl.txt.
#
# Pinned inputs: openssl.pin (the source tarball's version and sha256), tls.c, this script, the
# emcc version. The result is cached outside the work tree under a key made of those inputs
# ($PYSMTP_CACHE, default ~/.cache/pysmtp-wasm), so only the first build pays (~2-4 minutes on
# 2 cores); the source tarball is cached there too. Installs emscripten with apt-get if missing.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:?usage: $0 OUTDIR}
cache=${PYSMTP_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/pysmtp-wasm}/openssl
# shellcheck source=openssl.pin
. "$here/openssl.pin"
export NODE_PATH=/usr/share/nodejs # Debian's emscripten finds acorn there

log() { printf '==> %s\n' "$*" >&2; }
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

# What OpenSSL is built with: TLS 1.2/1.3 clients need none of the rest.
CONFIGURE_OPTIONS=(
  linux-generic32 no-asm no-threads no-shared no-dso no-engine no-sock no-afalgeng
  no-ui-console no-tests no-comp no-dtls no-srp no-ssl3 no-tls1 no-tls1_1 no-weak-ssl-ciphers
  no-legacy no-capieng no-ec2m no-gost no-sm2 no-sm3 no-sm4 no-whirlpool no-seed no-camellia
  no-aria no-bf no-cast no-rc2 no-rc4 no-md4 no-mdc2 no-rmd160 no-idea no-srtp no-sctp no-ct
  no-cms no-ts no-ocsp no-siphash no-scrypt no-ocb no-async no-secure-memory -O3
)
LINK_OPTIONS=(
  -O3 -s MODULARIZE=1 -s EXPORT_NAME=PySmtpOpenSSL -s ALLOW_MEMORY_GROWTH=1
  -s ENVIRONMENT=web,worker,node -s EXPORTED_FUNCTIONS=_malloc,_free
  -s TOTAL_STACK=524288 -s INITIAL_MEMORY=4194304
)

if ! command -v emcc >/dev/null; then
  log "installing Debian's emscripten"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get -o DPkg::Lock::Timeout=600 install -y -qq emscripten >/dev/null
fi

emcc_version=$(emcc --version | sed -n 1p)  # sed reads it all: head may close the pipe early (pipefail)
# Two levels: OpenSSL's libraries (the slow part) by source and options; the module by those
# plus the glue and the link.
libkey=$(printf '%s\n' "$OPENSSL_SHA256" "${CONFIGURE_OPTIONS[*]}" "$emcc_version" | sha256sum | cut -c1-16)
key=$(cat "$here/openssl.pin" "$here/tls.c" "$0" <(echo "$emcc_version") | sha256sum | cut -c1-16)
libs=$cache/lib-$libkey
built=$cache/$key

fetch_source() {
  local tarball=$1 got apt_private
  log "fetching OpenSSL $OPENSSL_VERSION's source from Debian (apt-get source)"
  mkdir -p "$cache/src/lists/partial"
  printf 'deb-src http://deb.debian.org/debian %s main\n' bookworm bookworm-updates >"$cache/src/sources.list"
  printf 'deb-src http://deb.debian.org/debian-security bookworm-security main\n' >>"$cache/src/sources.list"
  apt_private=(-o "Dir::Etc::SourceList=$cache/src/sources.list" -o Dir::Etc::SourceParts=/dev/null
    -o "Dir::State::Lists=$cache/src/lists" -o APT::Sandbox::User=root)
  apt-get -qq "${apt_private[@]}" update
  # Only the upstream tarball is used (not Debian's patches): --tar-only.
  (cd "$cache/src" && apt-get -qq "${apt_private[@]}" source --download-only --tar-only "openssl=$DEBIAN_VERSION") ||
    true # the .dsc may be missing from a mirror: what counts is the tarball and its sha256
  got=$(sha256sum "$tarball" 2>/dev/null | cut -d' ' -f1) || true
  if [ "$got" != "$OPENSSL_SHA256" ]; then
    echo "web/openssl/build.sh: no OpenSSL $OPENSSL_VERSION source with sha256 $OPENSSL_SHA256 (got: ${got:-nothing})." >&2
    echo "Debian's archive may have moved on: see 'apt-cache showsrc openssl' and update web/openssl/openssl.pin." >&2
    exit 1
  fi
}

if [ ! -f "$libs/libcrypto.a" ]; then
  tarball=$cache/src/openssl_$OPENSSL_VERSION.orig.tar.gz
  if [ "$(sha256sum "$tarball" 2>/dev/null | cut -d' ' -f1)" != "$OPENSSL_SHA256" ]; then
    fetch_source "$tarball"
  fi
  log "building OpenSSL $OPENSSL_VERSION for WebAssembly (first time only; cached in $libs)"
  work=$(mktemp -d "$cache/build.XXXXXX")
  trap 'rm -rf "$work"' EXIT
  tar -xzf "$tarball" -C "$work"
  src=$work/openssl-$OPENSSL_VERSION
  (
    cd "$src"
    CC=emcc AR=emar RANLIB=emranlib ./Configure "${CONFIGURE_OPTIONS[@]}" >"$work/configure.log" 2>&1
    make -j"$(nproc)" build_generated libssl.a libcrypto.a >"$work/make.log" 2>&1
  ) || {
    tail -n 30 "$work"/*.log >&2
    exit 1
  }
  mkdir -p "$work/lib"
  cp -r "$src/include" "$src/libssl.a" "$src/libcrypto.a" "$src/LICENSE.txt" "$work/lib/"
  rm -rf "$libs"
  mv "$work/lib" "$libs"
fi
if [ ! -f "$built/openssl-tls.wasm" ]; then
  log "linking the OpenSSL module ($built)"
  tmp=$(mktemp -d "$cache/link.XXXXXX")
  emcc "${LINK_OPTIONS[@]}" -I "$libs/include" "$here/tls.c" "$libs/libssl.a" "$libs/libcrypto.a" \
    -o "$tmp/openssl-tls.js" || {
    rm -rf "$tmp"
    exit 1
  }
  cp "$libs/LICENSE.txt" "$tmp/LICENSE-openssl.txt" # Apache-2.0: its text goes with the binary
  chmod 755 "$tmp"
  rm -rf "$built"
  mv "$tmp" "$built"
fi
mkdir -p "$out"
cp "$built/openssl-tls.js" "$built/openssl-tls.wasm" "$built/LICENSE-openssl.txt" "$out/"
chmod 644 "$out/openssl-tls.js" "$out/openssl-tls.wasm" "$out/LICENSE-openssl.txt"
