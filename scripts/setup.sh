#!/usr/bin/env bash
# Set up sipct on a Debian 12 machine (as root): system packages and a venv in .venv.
#   scripts/setup.sh          what the harness and the helper need
#   scripts/setup.sh --dev    plus the test and documentation tools
set -euo pipefail
cd "$(dirname "$0")/.."

dev=0
[ "${1:-}" = "--dev" ] && dev=1

if [ "$(id -u)" -ne 0 ]; then
    echo "setup.sh: run as root (it installs Debian packages; the labs need root too)" >&2
    exit 2
fi

# sip-tester: SIPp, the user agents of `sipct observe`; tshark: the tests read `sipct run --pcap` back with it;
# conntrack: the VM tests and bench/router.py count the conntracks per helper with `conntrack -L`.
packages=(python3 python3-venv python3-pip nftables iproute2 kmod sip-tester)
[ $dev -eq 1 ] && packages+=(graphviz tshark conntrack)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
fi
extra=""
[ $dev -eq 1 ] && extra="[dev]"
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".${extra}"
echo "setup.sh: ready (.venv/bin/sipct)"
