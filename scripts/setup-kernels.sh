#!/usr/bin/env bash
# Install what `sipct run --kernel` needs to boot other kernels (as root, idempotent):
#   QEMU (TCG: this machine has no usable KVM) and busybox-static (virtme-ng builds the
#   guest's initramfs with it), virtme-ng in .venv, and Debian kernel images.
#
#   scripts/setup-kernels.sh                     the default kernels (below)
#   scripts/setup-kernels.sh linux-image-6.1.0-50-amd64 ...   these instead
#
# Default kernels: linux-image-6.1.0-47-amd64 (6.1.170, oldest 6.1), linux-image-6.1.0-56-amd64
# (6.1.192, newest 6.1) and the newest linux-image-6.12.*+deb12-amd64 that apt offers.
# Only generic images: the -cloud ones lack 9p, so virtme-ng cannot share the root filesystem.
#
# The kernels are never booted by this machine, only by QEMU: they are installed
# without an initramfs generator (the package `sipct-no-initramfs`, built here,
# provides linux-initramfs-tool), so no initramfs-tools/udev/systemd upgrade comes
# along and no initramfs is built; there is no boot loader here to update.
# `dpkg -r sipct-no-initramfs` undoes that once the kernels are removed.
set -euo pipefail
cd "$(dirname "$0")/.."

VNG_VERSION=1.42   # keep in step with pyproject.toml's `vm` extra
SYSTEM_PACKAGES=(qemu-system-x86 busybox-static)

if [ "$(id -u)" -ne 0 ]; then
    echo "setup-kernels.sh: run as root (it installs Debian packages)" >&2
    exit 2
fi
export DEBIAN_FRONTEND=noninteractive

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }

kernels=("$@")
for k in "${kernels[@]}"; do
    case "$k" in
        linux-image-*-cloud-amd64) echo "setup-kernels.sh: $k is a cloud image (no 9p): use the generic one" >&2; exit 2 ;;
        linux-image-*) ;;
        *) echo "setup-kernels.sh: $k is not a linux-image-* package" >&2; exit 2 ;;
    esac
done

echo "setup-kernels.sh: apt-get update"
apt-get update -q >/dev/null

if [ ${#kernels[@]} -eq 0 ]; then
    newest_612=$(apt-cache search --names-only '^linux-image-6\.12\.[0-9]+\+deb12-amd64$' \
                 | awk '{print $1}' | sort -V | tail -n 1)
    kernels=(linux-image-6.1.0-47-amd64 linux-image-6.1.0-56-amd64)
    if [ -n "$newest_612" ]; then
        kernels+=("$newest_612")
    else
        echo "setup-kernels.sh: apt offers no linux-image-6.12.*+deb12-amd64; skipping 6.12" >&2
    fi
fi
for k in "${kernels[@]}"; do
    if ! apt-cache show "$k" >/dev/null 2>&1; then
        echo "setup-kernels.sh: apt offers no package $k (see: apt-cache search --names-only '^linux-image-6')" >&2
        exit 2
    fi
done

missing=()
for p in "${SYSTEM_PACKAGES[@]}"; do installed "$p" || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup-kernels.sh: installing ${missing[*]}"
    apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi

# The kernel packages depend on `initramfs-tools | linux-initramfs-tool`.
if ! installed initramfs-tools && ! installed dracut && ! installed tiny-initramfs \
        && ! installed sipct-no-initramfs; then
    echo "setup-kernels.sh: installing sipct-no-initramfs (provides linux-initramfs-tool)"
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    mkdir -p "$work/pkg/DEBIAN"
    cat > "$work/pkg/DEBIAN/control" <<'EOF'
Package: sipct-no-initramfs
Version: 1.0
Architecture: all
Maintainer: sipct <root@localhost>
Priority: optional
Section: misc
Provides: linux-initramfs-tool
Description: satisfies linux-image-*'s initramfs dependency without building one
 The sipct VM runner boots Debian kernel images with virtme-ng, which builds
 its own initramfs; this machine never boots them.
EOF
    dpkg-deb --build --root-owner-group "$work/pkg" "$work/sipct-no-initramfs.deb" >/dev/null
    dpkg -i "$work/sipct-no-initramfs.deb" >/dev/null
fi

todo=()
for k in "${kernels[@]}"; do installed "$k" || todo+=("$k"); done
if [ ${#todo[@]} -gt 0 ]; then
    echo "setup-kernels.sh: installing ${todo[*]}"
    apt-get install -y -q --no-install-recommends "${todo[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
    scripts/setup.sh
fi
if [ "$(.venv/bin/python -m pip show virtme-ng 2>/dev/null | sed -n 's/^Version: //p')" != "$VNG_VERSION" ]; then
    echo "setup-kernels.sh: installing virtme-ng $VNG_VERSION into .venv"
    .venv/bin/python -m pip install -q "virtme-ng==$VNG_VERSION"
fi

# What a boot needs, checked: the image, its modules, the SIP helper among them.
status=0
for k in "${kernels[@]}"; do
    release=${k#linux-image-}
    image=/boot/vmlinuz-$release
    if [ ! -f "$image" ] || [ ! -f "/lib/modules/$release/modules.dep" ]; then
        echo "setup-kernels.sh: $k is installed but $image or /lib/modules/$release is missing" >&2
        status=1
        continue
    fi
    if ! compgen -G "/lib/modules/$release/kernel/net/netfilter/nf_conntrack_sip.ko*" >/dev/null; then
        echo "setup-kernels.sh: $k has no nf_conntrack_sip module" >&2
        status=1
        continue
    fi
    version=$(dpkg-query -W -f='${Version}' "$k")
    echo "  $image  ($k $version)"
done
PATH="$PWD/.venv/bin:$PATH" vng --version >/dev/null || { echo "setup-kernels.sh: vng does not run" >&2; exit 1; }
[ $status -eq 0 ] && echo "setup-kernels.sh: ready: .venv/bin/sipct run --kernel /boot/vmlinuz-RELEASE DIALOG..."
exit $status
