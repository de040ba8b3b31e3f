#!/usr/bin/env bash
# Bundle emailjs-smtp-client 2.0.1 for the page (bench/build/emailjs-smtp-client.js).
set -euo pipefail
cd "$(dirname "$0")"
npx --no-install esbuild emailjs-entry.js --bundle --format=iife --target=es2020 \
  --alias:emailjs-tcp-socket=./tcp-shim.js --log-level=warning \
  --outfile=build/emailjs-smtp-client.js
