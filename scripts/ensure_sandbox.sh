#!/usr/bin/env bash
# Make sure Debian's `bubblewrap` (bwrap) is installed: the sandbox that runs model-written
# code for the `code` probe family (lib/gguf_fragility/codeexec.py, tests/test_sandbox.py).
# Idempotent: returns at once when a working bwrap is there.
#
#   bash scripts/ensure_sandbox.sh          # needs root (or sudo) the first time
#
# Without bwrap the code family falls back to util-linux `unshare` (weaker: the host
# filesystem stays visible) or is refused unless the profile sets allow_unisolated_code.
set -euo pipefail

works() {  # bwrap exists and can create the namespaces the sandbox uses
  # root: namespaces without a user namespace (setpriv then drops to 65534), as codeexec.py does
  local user=(--unshare-user --uid 65534 --gid 65534)
  [ "$(id -u)" -eq 0 ] && user=()
  command -v bwrap >/dev/null 2>&1 &&
    bwrap --unshare-ipc --unshare-pid --unshare-net --unshare-uts "${user[@]}" \
      --ro-bind /usr /usr --symlink usr/bin /bin --symlink usr/lib /lib \
      --symlink usr/lib64 /lib64 --proc /proc --dev /dev /usr/bin/true >/dev/null 2>&1
}

if works; then
  echo "ensure_sandbox: $(command -v bwrap) ($(bwrap --version)) works"
  exit 0
fi

if ! command -v bwrap >/dev/null 2>&1; then
  if [ "$(id -u)" -eq 0 ]; then
    SUDO=""
  elif command -v sudo >/dev/null 2>&1; then
    SUDO="sudo"
  else
    echo "ensure_sandbox: bubblewrap is missing and this user cannot run apt-get (not root," \
         "no sudo); install Debian's 'bubblewrap' package" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -q
  $SUDO apt-get install -y -q --no-install-recommends bubblewrap
fi

if works; then
  echo "ensure_sandbox: installed $(command -v bwrap) ($(bwrap --version))"
else
  echo "ensure_sandbox: bwrap is installed but cannot create user namespaces here" \
       "(containers often forbid them: allow unprivileged user namespaces, or run the" \
       "container with --privileged / a seccomp profile that permits clone(CLONE_NEWUSER))" >&2
  exit 1
fi
