#!/usr/bin/env bash
# Prints the path of a tansu 0.6.0 binary: a Kafka-protocol broker from
# crates.io, the real broker of the end-to-end Kafka tests
# (crates/roster/tests/kafka_broker.rs). Installs it with cargo when it is
# missing: about ten minutes the first time on two cores, then cached in
# ~/.cargo/bin. Everything it prints but the path goes to stderr.
set -euo pipefail
want=0.6.0
bin="${CARGO_HOME:-$HOME/.cargo}/bin/tansu"
if [ -x "$bin" ] && "$bin" --version 2>/dev/null | grep -q "$want"; then
  echo "$bin"
  exit 0
fi
echo "installing tansu $want (cargo install, ~10 min the first time)..." >&2
cargo install tansu --version "$want" --features dynostore --locked >&2
echo "$bin"
