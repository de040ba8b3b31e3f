#!/usr/bin/env bash
# Bundle emailjs-smtp-client 2.0.1 for the page (bench/build/emailjs-smtp-client.js), with our
# socket (web/src/socket.js, an ES module) bundled in through tcp-shim.js.
set -euo pipefail
cd "$(dirname "$0")"
mkdir -p build
npx --no-install esbuild emailjs-entry.js --bundle --format=iife --target=es2020 \
  --alias:emailjs-tcp-socket=./tcp-shim.js --log-level=warning \
  --outfile=build/emailjs-smtp-client.js
