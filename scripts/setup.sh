# Sourced by `serve-examples` and `test`: installs what building and testing dohost need and a
# fresh machine with rustup may lack.

# Guests are built for this target.
ensure_wasm_target() {
  if ! rustup target list --installed | grep -qx wasm32-wasip2; then
    rustup target add wasm32-wasip2
  fi
}

# Installs Debian packages for the commands that are missing: `ensure_commands cmd:package ...`.
ensure_commands() {
  local missing=()
  for pair in "$@"; do
    command -v "${pair%%:*}" >/dev/null || missing+=("${pair#*:}")
  done
  [ ${#missing[@]} -eq 0 ] && return
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  $sudo apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
}

# The host links jemalloc, which its build compiles from C source with `make`.
ensure_host_build_tools() {
  ensure_commands cc:gcc make:make
}

# Debian's PostgreSQL server, which tests start throwaway instances of. Its binaries live in
# /usr/lib/postgresql/<version>/bin, off the PATH, so `ensure_commands` cannot look for them.
# Installing it may start a system cluster on port 5432; the tests' servers use their own ports.
ensure_postgres() {
  # The tests run the server as `nobody` through setpriv when they run as root.
  ensure_commands setpriv:util-linux
  compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null && return
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  $sudo apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql
}
