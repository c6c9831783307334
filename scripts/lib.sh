# Shared by scripts/test and scripts/demo (sourced, not run): logging, apt installs and
# the project's .venv. Expects to be sourced from the repository root.

export PIP_DISABLE_PIP_VERSION_CHECK=1

log() { printf '%s: %s\n' "${EDGEAGENT_SCRIPT:-scripts}" "$*" >&2; }

find_python() {
    local candidate
    for candidate in "${PYTHON:-}" python3.11 python3.12 python3.13 python3; do
        [[ -n "$candidate" ]] || continue
        if command -v "$candidate" >/dev/null &&
            "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            echo "$candidate"
            return 0
        fi
    done
    log "need Python >= 3.11 (set PYTHON=/path/to/python3.11)"
    return 1
}

apt_updated=0
apt_install() {
    if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null; then
        log "missing $*; not root or no apt-get, so not installing (some tests will skip)"
        return 0
    fi
    if [[ $apt_updated -eq 0 ]]; then
        apt-get update -qq
        apt_updated=1
    fi
    log "apt-get install $*"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# ensure_build_tools: a C compiler and the Python headers, which installing edgeagent needs
# for its one compiled module (edgeagent/engine/_glue.c); from apt when missing.
ensure_build_tools() {
    local include
    include=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
    if ! command -v cc >/dev/null || [[ ! -f $include/Python.h ]]; then
        apt_install gcc libc6-dev python3-dev
    fi
}

# ensure_venv EXTRAS: .venv with Python >= 3.11 and edgeagent installed editable with
# EXTRAS ("[test]", or "" for the package alone), reinstalled when the packaging files or
# the C source change, or EXTRAS asks for more than is installed.
ensure_venv() {
    local extras=$1 python packaging stamp=.venv/.edgeagent-install-stamp
    if [[ ! -x .venv/bin/python ]]; then
        python=$(find_python)
        log "creating .venv with $python"
        if ! "$python" -m venv .venv; then
            rm -rf .venv
            apt_install python3-venv
            "$python" -m venv .venv
        fi
    fi
    packaging=$(cat pyproject.toml setup.py edgeagent/engine/*.c | sha256sum | cut -d' ' -f1)
    # the stamp: the packaging hash, then the extras installed with it
    if [[ -f $stamp && $(sed -n 1p "$stamp") == "$packaging" ]] &&
        [[ -z $extras || $(sed -n 2p "$stamp") == "$extras" ]]; then
        return 0
    fi
    log "installing edgeagent$extras into .venv"
    ensure_build_tools
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q -e ".$extras"
    printf '%s\n%s\n' "$packaging" "$extras" >"$stamp"
}
