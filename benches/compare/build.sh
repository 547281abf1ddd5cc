#!/usr/bin/env bash
# Builds stowage-compare in release mode with RocksDB: against Debian's librocksdb-dev when it
# is installed (about a minute), else the crate compiles its bundled RocksDB from source (long).
# Without RocksDB: `cargo build --release`.
set -euo pipefail
cd "$(dirname "$0")"
lib=/usr/lib/x86_64-linux-gnu
if [ -e "$lib/librocksdb.so" ]; then
    export ROCKSDB_LIB_DIR="$lib"
    echo "RocksDB: system library in $lib"
else
    echo "RocksDB: no system librocksdb; building the bundled one (apt-get install -y librocksdb-dev libclang-dev avoids this)"
fi
exec cargo build --release --features rocksdb "$@"
