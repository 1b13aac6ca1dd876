#!/usr/bin/env bash
# Install Debian's headless Chromium (+ chromedriver) for the browser tests.
# Idempotent: does nothing when /usr/bin/chromium exists. Retries while another apt/dpkg
# holds the lock (CI and helpers may run apt at the same time).
set -euo pipefail

if [[ -x /usr/bin/chromium ]]; then
    echo "browser-setup: /usr/bin/chromium present ($(/usr/bin/chromium --version 2>/dev/null || echo '?'))"
    exit 0
fi

SUDO=""
if [[ "$(id -u)" != "0" ]]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive

# apt_retry CMD...: rerun CMD while the dpkg/apt lock is held (exit 100 + "lock" message), up to ~10 min.
apt_retry() {
    local attempt log
    log="$(mktemp)"
    for attempt in $(seq 1 60); do
        if $SUDO "$@" >"$log" 2>&1; then
            tail -n 3 "$log"; rm -f "$log"; return 0
        fi
        if grep -qiE 'lock|Could not get lock|dpkg was interrupted' "$log"; then
            echo "browser-setup: apt lock held, waiting (attempt $attempt)"
            grep -qi 'dpkg was interrupted' "$log" && $SUDO dpkg --configure -a || true
            sleep 10
            continue
        fi
        cat "$log"; rm -f "$log"; return 1
    done
    cat "$log"; rm -f "$log"; return 1
}

apt_retry apt-get -o DPkg::Lock::Timeout=120 update
apt_retry apt-get -o DPkg::Lock::Timeout=120 install -y --no-install-recommends \
    chromium chromium-driver fonts-dejavu-core
/usr/bin/chromium --version
