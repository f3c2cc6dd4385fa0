#!/usr/bin/env bash
# Installs the Debian packages the tests and the playground use as real peers:
# docker-registry (an OCI distribution registry) and skopeo (an OCI client); wrk, the load
# generator of `make bench`; for the local node: runc, the CNI plugins (bridge, host-local,
# loopback), busybox-static (the program of the test image), gcc and libc6-dev (the pause
# binary, linked statically) and iproute2; for the webhook's image without a Docker daemon:
# buildah and debootstrap.
set -euo pipefail
missing=()
need() { # need PACKAGE PATH: PACKAGE is missing unless PATH exists
  [ -e "$2" ] || missing+=("$1")
}
installed() { # installed PACKAGE: asks dpkg
  dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "ok installed"
}
command -v docker-registry >/dev/null 2>&1 || missing+=(docker-registry)
command -v skopeo >/dev/null 2>&1 || missing+=(skopeo)
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
need runc /usr/sbin/runc
need containernetworking-plugins /usr/lib/cni/bridge
# Debian's dynamically linked `busybox` also installs /bin/busybox: ask dpkg for the static one.
installed busybox-static || missing+=(busybox-static)
command -v gcc >/dev/null 2>&1 || missing+=(gcc)
installed libc6-dev || missing+=(libc6-dev)
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
command -v buildah >/dev/null 2>&1 || missing+=(buildah)
command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "error: missing ${missing[*]}; install them with: sudo apt-get install ${missing[*]}" >&2
  exit 1
fi
echo "installing ${missing[*]} from Debian's packages"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
