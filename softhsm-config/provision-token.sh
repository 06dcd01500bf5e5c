#!/usr/bin/env bash
# Provision a SoftHSM2 token for Strongroom by hand (production-like setups).
#   softhsm-config/provision-token.sh DIR [LABEL]
# Writes DIR/softhsm2.conf and DIR/hsm-pin (0600), initialises token LABEL (default
# "strongroom"). Export SOFTHSM2_CONF=DIR/softhsm2.conf before `strongroom init/serve`.
set -euo pipefail
dir=${1:?usage: provision-token.sh DIR [LABEL]}
label=${2:-strongroom}
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$dir/tokens"
dir=$(cd "$dir" && pwd)
sed "s#@TOKENDIR@#$dir/tokens#" "$here/softhsm2.conf.in" > "$dir/softhsm2.conf"
export SOFTHSM2_CONF="$dir/softhsm2.conf"
umask 077
pin=$(head -c 24 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 24)
so_pin=$(head -c 24 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 24)
softhsm2-util --init-token --free --label "$label" --pin "$pin" --so-pin "$so_pin" >/dev/null
printf '%s\n' "$pin" > "$dir/hsm-pin"
echo "token $label ready; SOFTHSM2_CONF=$dir/softhsm2.conf; PIN in $dir/hsm-pin"
