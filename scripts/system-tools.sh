#!/usr/bin/env bash
# Make sure the system tools the demo and the TUN tests drive are present:
# ping (iputils-ping), ip (iproute2), nc (netcat-openbsd), and the web clients the server's
# tests and demo drive: curl, ab (apache2-utils), wrk and httperf. As root with apt-get, install what
# is missing; otherwise say exactly what is missing and how to get it.
# With --with-browser, also chromium: only tests/test_spec_show_html.py needs it (screenshots of
# `pystack spec show --html`); without it those tests are skipped.
set -euo pipefail
missing=()
if [ "${1:-}" = "--with-browser" ]; then
  command -v chromium >/dev/null 2>&1 || missing+=(chromium)
fi
command -v ping >/dev/null 2>&1 || missing+=(iputils-ping)
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
command -v nc >/dev/null 2>&1 || missing+=(netcat-openbsd)
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v ab >/dev/null 2>&1 || missing+=(apache2-utils)
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
command -v httperf >/dev/null 2>&1 || missing+=(httperf)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing ${missing[*]} (Debian packages) ..."
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  exit 0
fi
echo "missing Debian packages: ${missing[*]}; install them with: sudo apt-get install ${missing[*]}" >&2
exit 1
