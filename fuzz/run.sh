#!/usr/bin/env bash
# Runs each fuzz target (or those named as arguments) for FUZZ_SECONDS seconds (default 60), one
# after the other, with cargo-fuzz on nightly; installs cargo-fuzz if it is missing.
#
#   fuzz/run.sh                       # every target, 60 s each
#   FUZZ_SECONDS=600 fuzz/run.sh open_pool
#
# An input running longer than FUZZ_TIMEOUT seconds (default 60) is reported as a hang.
# New inputs go to fuzz/work-corpus/<target> (not committed); the committed seeds in
# fuzz/corpus/<target> are read only. Builds with debug assertions and overflow checks. Crashes land in fuzz/artifacts/<target>/: minimise one
# with `cargo +nightly fuzz tmin <target> <file>` and add it to fuzz/regressions/<target>/,
# which pmem-core/tests/fuzz_corpus.rs (header_parse, open_pool, journal_scan),
# ptm/tests/fuzz_corpus.rs (recover_log, tx_sequence) and collections/tests/fuzz_corpus.rs
# (collections_image) replay on stable; ptm/tests/checked.rs replays checked_values.
set -euo pipefail

cd "$(dirname "$0")"
seconds="${FUZZ_SECONDS:-60}"
if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    targets=(header_parse open_pool recover_log tx_sequence collections_image journal_scan checked_values)
fi

if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

# Scratch directories of fuzz processes that are gone (each target makes one per process).
clean_scratch() {
    local d
    for d in /dev/shm/ptm-fuzz-*-* "${TMPDIR:-/tmp}"/ptm-fuzz-*-*; do
        [ -d "$d" ] || continue
        kill -0 "${d##*-}" 2>/dev/null || rm -rf -- "$d"
    done
}
trap clean_scratch EXIT

for target in "${targets[@]}"; do
    mkdir -p "work-corpus/$target"
    echo "== $target: ${seconds}s"
    cargo +nightly fuzz run --debug-assertions "$target" "work-corpus/$target" "corpus/$target" -- \
        -max_total_time="$seconds" -timeout="${FUZZ_TIMEOUT:-60}" -max_len=4200 -print_final_stats=1
done
