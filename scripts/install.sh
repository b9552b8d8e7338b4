#!/usr/bin/env bash
# Install everything netlab needs on a fresh Debian 12 machine (run as root).
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
need=()
# one package per line. iperf3: the report's bulk transfer and the benchmarks; chromium: the
# report's browser test (headless); sockperf, wrk, nginx-light: the data-path benchmarks;
# shellcheck: the export tests; nftables: netlab trace (nft); conntrack: the teaching labs'
# connection views
packages=(
  iproute2
  iptables
  nftables
  ipset
  tcpdump
  tshark
  curl
  util-linux
  procps
  conntrack
  nghttp2-proxy
  libcurl4-openssl-dev
  libssl-dev
  iperf3
  chromium
  sockperf
  wrk
  nginx-light
  shellcheck
)
for pkg in "${packages[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq
  # tshark asks whether non-root users may capture; answer for it
  echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
  # iperf3 asks whether to run a system daemon; the benchmarks start their own servers
  echo "iperf3 iperf3/start_daemon boolean false" | debconf-set-selections
  apt-get install -y -qq "${need[@]}" >/dev/null
fi
# vagrant: only so that a test can run `vagrant validate` on the Vagrantfile (Debian 12 packages
# it; without recommends it brings ruby, not a hypervisor)
if ! command -v vagrant >/dev/null 2>&1 && apt-cache show vagrant >/dev/null 2>&1; then
  apt-get install -y -qq --no-install-recommends vagrant >/dev/null
fi
python3 -m pip install -q --disable-pip-version-check -e ".[test]"
