#!/usr/bin/env bash
# Make sure Debian's `bubblewrap` (bwrap) is installed: the sandbox that runs model-written
# code for the `code` probe family (lib/gguf_fragility/probes/codeexec.py, tests/test_sandbox.py).
# Idempotent: returns at once when a working bwrap is there.
#
#   bash scripts/ensure_sandbox.sh          # needs root (or sudo) the first time
#
# It also says how the total memory of a program is capped here: its own memory cgroup where
# one is writable (root, or a delegated cgroup v2), else per-process limits.
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

memory_cap() {  # which total memory cap the sandbox gets here (lib/gguf_fragility/probes/memcap.py)
  local cap
  cap=$("${PYTHON:-python3}" "$(dirname "$0")/../lib/gguf_fragility/probes/memcap.py" 2>&1) ||
    cap="not checked (${cap##*$'\n'})"
  echo "ensure_sandbox: memory cap: $cap"
}

if works; then
  echo "ensure_sandbox: $(command -v bwrap) ($(bwrap --version)) works"
  memory_cap
  exit 0
fi

if ! command -v bwrap >/dev/null 2>&1; then
  bash "$(dirname "$0")/apt_install.sh" ensure_sandbox "install Debian's 'bubblewrap' package" \
    bubblewrap
fi

if works; then
  echo "ensure_sandbox: installed $(command -v bwrap) ($(bwrap --version))"
  memory_cap
else
  echo "ensure_sandbox: bwrap is installed but cannot create user namespaces here" \
       "(containers often forbid them: allow unprivileged user namespaces, or run the" \
       "container with --privileged / a seccomp profile that permits clone(CLONE_NEWUSER))" >&2
  exit 1
fi
