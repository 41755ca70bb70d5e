#!/usr/bin/env bash
# Set up everything labkit needs on a fresh Debian/Ubuntu machine, as root:
#   scripts/bootstrap.sh          system packages + .venv with labkit
#   scripts/bootstrap.sh --test   the same, plus what the test suite needs (Docker engine started, node image built)
# Idempotent: running it again only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

want_tests=0
[ "${1:-}" = "--test" ] && want_tests=1

if [ "$(id -u)" -ne 0 ]; then
  echo "bootstrap: run as root (labkit builds network namespaces)" >&2
  exit 1
fi

# busybox-static and socat: the shipped labs' pods run them (and the docker runtime's image holds them).
# bird2: the bgp backend's routing daemon; tcpdump: `labkit capture`.
# haproxy: the ingress controller's proxy (Ingress and Gateway API routes, labkit.ingress).
# containernetworking-plugins and iptables: a docker-host's bridge and portmap plugins (iptables-nft rules).
packages=(iproute2 nftables iputils-ping procps util-linux python3 python3-venv python3-pip busybox-static socat
          bird2 tcpdump containernetworking-plugins iptables haproxy)
if [ "$want_tests" = 1 ]; then
  packages+=(dnsutils dnsperf dnsmasq-base docker.io chromium graphviz
            iperf3 tshark openssl)
fi
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

python=python3
[ -x .venv/bin/python ] || "$python" -m venv .venv
extra=""
[ "$want_tests" = 1 ] && extra="[test]"
.venv/bin/pip install -q --disable-pip-version-check -e ".${extra}"

if [ "$want_tests" = 1 ]; then
  # an ordinary user: the tests check that it can change nothing a lab made (files, pid files, launcher)
  id -u labkit-test >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin labkit-test
  # labs without root: a second ordinary user (the two must not reach each other's labs), each with a
  # runtime folder of its own as a login session makes it, and a labkit every user can run
  id -u labkit-test2 >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin labkit-test2
  for u in labkit-test labkit-test2; do
    install -d -m 0755 /run/user && install -d -m 0700 -o "$u" -g "$u" "/run/user/$(id -u "$u")"
  done
  scripts/rootless-venv.sh
  scripts/start-dockerd.sh            # the docker runtime's tests need an engine ...
  .venv/bin/labkit image build        # ... and labkit's images, built locally (nothing is pulled)
fi
