#!/usr/bin/env bash
# Bundle emailjs-smtp-client 2.0.1 for the page (bench/build/emailjs-smtp-client.js).
set -euo pipefail
cd "$(dirname "$0")"
# Our socket as the page gets it: tls.js and socket.js share one scope (build.sh concatenates
# them the same way into dist/pysmtp-wasm.js).
mkdir -p build
cat ../web/src/tls.js ../web/src/socket.js >build/pysmtp-socket.js
npx --no-install esbuild emailjs-entry.js --bundle --format=iife --target=es2020 \
  --alias:emailjs-tcp-socket=./tcp-shim.js --log-level=warning \
  --outfile=build/emailjs-smtp-client.js
