#!/usr/bin/env bash
# tests/provision.sh — make this machine able to run the tests and the bench: the Debian
# packages they drive (browsers, mail servers, HAProxy, lighttpd) and the system users the mail
# servers look up. It changes the machine, not the work tree; build.sh calls it, and so may you:
#
#   tests/provision.sh GROUP...     install what each group needs, when it is missing
#
# Groups: chromium, browsers (Firefox ESR, WebKitGTK, Xvfb), mail (Postfix, Dovecot, Exim,
# OpenSMTPD), haproxy, lighttpd. Never a downloaded browser: Debian's packages only. Installs
# go through apt-get (with sudo when not root) and wait for another apt to finish.
set -euo pipefail

log() { printf '==> %s\n' "$*" >&2; }

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO=sudo
APT="$SUDO apt-get -o DPkg::Lock::Timeout=600"
updated=0

missing() {
  local pkg out=""
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || out="$out $pkg"
  done
  echo "$out"
}

apt_update() {
  [ "$updated" -eq 1 ] && return
  $APT update -qq
  updated=1
}

# Install the Debian packages named that are not installed yet.
install() {
  local todo
  todo=$(missing "$@")
  [ -n "$todo" ] || return 0
  log "installing Debian's$todo"
  apt_update
  # shellcheck disable=SC2086
  DEBIAN_FRONTEND=noninteractive $APT install -y -qq $todo >/dev/null
}

# The real mail servers of the interop tests (tests/mta/). Postfix, Exim and OpenSMTPD each
# conflict with mail-transport-agent, so apt installs only Postfix (with debconf's "No
# configuration": Debian's own instance gets no main.cf and never starts); Exim and OpenSMTPD
# are unpacked from their .deb into MTA_CACHE, outside the work tree, and run from there with
# their own configuration (tests/mta/ finds them there). Their shared libraries are installed
# as usual.
MTA_CACHE=${PYSMTP_MTA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/pysmtp-wasm/mta}
MTA_DEBS="exim4-base exim4-daemon-light opensmtpd"
MTA_PACKAGES="postfix dovecot-core dovecot-lmtpd libidn12 libgnutls-dane0 libevent-2.1-7 libdb5.3"
mail() {
  # shellcheck disable=SC2086
  if [ -n "$(missing $MTA_PACKAGES)" ]; then
    echo "postfix postfix/main_mailer_type select No configuration" | $SUDO debconf-set-selections
    # shellcheck disable=SC2086
    install $MTA_PACKAGES
  fi
  if [ ! -f "$MTA_CACHE/.unpacked" ]; then
    log "unpacking $MTA_DEBS into $MTA_CACHE"
    apt_update
    rm -rf "$MTA_CACHE" && mkdir -p "$MTA_CACHE/debs" "$MTA_CACHE/root"
    # shellcheck disable=SC2086
    (cd "$MTA_CACHE/debs" && apt-get download $MTA_DEBS 2>/dev/null)
    for deb in "$MTA_CACHE"/debs/*.deb; do dpkg -x "$deb" "$MTA_CACHE/root"; done
    touch "$MTA_CACHE/.unpacked"
  fi
  # The system users the unpacked servers look up by their compiled-in names (as their
  # packages' postinst scripts would make them).
  getent passwd Debian-exim >/dev/null ||
    $SUDO useradd --system --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin Debian-exim
  local user
  for user in opensmtpd opensmtpq; do
    getent passwd "$user" >/dev/null ||
      $SUDO useradd --system --user-group --no-create-home --home-dir /var/lib/opensmtpd/empty --shell /usr/sbin/nologin "$user"
  done
}

[ $# -gt 0 ] || { echo "usage: $0 chromium|browsers|mail|haproxy|lighttpd ..." >&2; exit 2; }
for group in "$@"; do
  case "$group" in
    # Debian's Chromium and its WebDriver: pytest-pyodide drives them.
    chromium) install chromium chromium-driver ;;
    # Firefox and WebKit beside Chromium (tests/browsers.py): firefox-esr (driven over WebDriver
    # BiDi by puppeteer-core: no geckodriver), WebKitGTK's WebKitWebDriver and MiniBrowser, and
    # Xvfb for MiniBrowser's window.
    browsers) install firefox-esr webkit2gtk-driver xvfb ;;
    mail) mail ;;
    # Two pysmtp-wasm-proxy behind HAProxy (tests/test_proxy_haproxy.py); lighttpd's
    # mod_wstunnel, the bench's reference proxy. Neither is configured or started here: the
    # test and the bench run their own instance with their own configuration.
    haproxy | lighttpd) install "$group" ;;
    *) echo "$0: unknown group $group" >&2; exit 2 ;;
  esac
done
