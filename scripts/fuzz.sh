#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for a bounded time each.
#
#   scripts/fuzz.sh                 # every target, 45 s each
#   FUZZ_SECONDS=300 scripts/fuzz.sh car dagcbor
#
# Environment:
#   FUZZ_SECONDS     seconds per target (default 45), libFuzzer -max_total_time
#   FUZZ_TOOLCHAIN   rustup toolchain to use, e.g. "nightly" (default: the
#                    default toolchain; a stable one runs with RUSTC_BOOTSTRAP=1,
#                    since cargo fuzz needs -Zsanitizer and friends)
#   FUZZ_JOBS        cargo build jobs (default 1: the machines have 2 cores)
#   FUZZ_ARGS        extra libFuzzer arguments for every target
#   FUZZ_KNOWN_BUGS  1: fail on the known, reported bugs that the checks
#                    otherwise tolerate (see fuzz/known-bugs/README.md)
#
# Installs cargo-fuzz from crates.io if it is missing. Seeds from
# fuzz/seeds/<target>/ are copied into the scratch corpus fuzz/corpus/<target>/
# (git-ignored), which keeps what the fuzzer learns between runs on one
# machine. Exits non-zero if any target crashes (panic, sanitizer report,
# timeout, out of memory) and prints where the crashing input is and how to
# replay it; logs are in fuzz/artifacts/logs/.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
fuzz_dir="$root/fuzz"
seconds="${FUZZ_SECONDS:-45}"
export CARGO_BUILD_JOBS="${FUZZ_JOBS:-1}"
cargo_fuzz_version="0.13.2"

log() { printf 'fuzz: %s\n' "$*"; }

case "$seconds" in
    '' | *[!0-9]*) log "FUZZ_SECONDS must be a whole number, got '$seconds'"; exit 2 ;;
esac

# --- toolchain ---------------------------------------------------------------
cargo_cmd=(cargo)
rustc_cmd=(rustc)
if [[ -n "${FUZZ_TOOLCHAIN:-}" ]]; then
    cargo_cmd=(cargo "+$FUZZ_TOOLCHAIN")
    rustc_cmd=(rustup run "$FUZZ_TOOLCHAIN" rustc)
fi
rustc_version="$("${rustc_cmd[@]}" --version)"

# --- cargo-fuzz (built like any other tool: no RUSTC_BOOTSTRAP) ---------------
if ! "${cargo_cmd[@]}" fuzz --version >/dev/null 2>&1; then
    log "installing cargo-fuzz $cargo_fuzz_version"
    env -u RUSTC_BOOTSTRAP "${cargo_cmd[@]}" install cargo-fuzz --locked --version "$cargo_fuzz_version"
fi
log "$("${cargo_cmd[@]}" fuzz --version)"

if [[ "$rustc_version" != *nightly* && "$rustc_version" != *-dev* ]]; then
    # cargo fuzz passes -Zsanitizer=address and other -Z flags to rustc.
    export RUSTC_BOOTSTRAP=1
    log "using $rustc_version with RUSTC_BOOTSTRAP=1"
else
    log "using $rustc_version"
fi

cd "$fuzz_dir"

# --- targets -----------------------------------------------------------------
mapfile -t all_targets < <("${cargo_cmd[@]}" fuzz list)
if [[ $# -gt 0 ]]; then
    targets=("$@")
    for t in "${targets[@]}"; do
        if [[ " ${all_targets[*]} " != *" $t "* ]]; then
            log "no target '$t' (have: ${all_targets[*]})"
            exit 2
        fi
    done
else
    targets=("${all_targets[@]}")
fi

log "building ${targets[*]}"
"${cargo_cmd[@]}" fuzz build

mkdir -p "$fuzz_dir/artifacts/logs"
crashed=()
for t in "${targets[@]}"; do
    corpus="$fuzz_dir/corpus/$t"
    artifacts="$fuzz_dir/artifacts/$t"
    logfile="$fuzz_dir/artifacts/logs/$t.log"
    mkdir -p "$corpus" "$artifacts"
    if [[ -d "$fuzz_dir/seeds/$t" ]]; then
        cp -n "$fuzz_dir/seeds/$t"/* "$corpus"/ 2>/dev/null || true
    fi
    marker="$(mktemp)"
    log "running $t for ${seconds}s (corpus: $(find "$corpus" -type f | wc -l) inputs)"
    status=0
    # shellcheck disable=SC2086 # FUZZ_ARGS is a list of flags
    "${cargo_cmd[@]}" fuzz run "$t" "$corpus" -- \
        -max_total_time="$seconds" -timeout=30 -rss_limit_mb=4096 \
        -print_final_stats=1 ${FUZZ_ARGS:-} \
        >"$logfile" 2>&1 </dev/null || status=$?
    # libFuzzer's last status line: coverage, features, corpus, execs/s.
    grep -E '^#[0-9]+[[:space:]]+DONE' "$logfile" | tail -n 1 | sed "s/^/fuzz: $t: /" || true
    grep -E '^stat::(number_of_executed_units|average_exec_per_sec|peak_rss_mb)' "$logfile" \
        | sed "s/^/fuzz: $t: /" || true
    new_artifacts="$(find "$artifacts" -type f -newer "$marker" | sort)"
    rm -f "$marker"
    if [[ $status -ne 0 || -n "$new_artifacts" ]]; then
        crashed+=("$t")
        log "$t FAILED (exit $status); log: $logfile"
        grep -E -A 12 "panicked at|ERROR: (AddressSanitizer|LeakSanitizer)|ERROR: libFuzzer: (timeout|out-of-memory|fuzz target)" "$logfile" \
            | head -n 40 | sed "s/^/    /" || true
        for a in $new_artifacts; do
            log "crashing input: $a"
            log "  replay:   cd fuzz && ${RUSTC_BOOTSTRAP:+RUSTC_BOOTSTRAP=1 }${cargo_cmd[*]} fuzz run $t $a"
            log "  minimize: cd fuzz && ${RUSTC_BOOTSTRAP:+RUSTC_BOOTSTRAP=1 }${cargo_cmd[*]} fuzz tmin $t $a"
        done
        log "  keep it: copy it to crates/barn-repo/testdata/fuzz/$t/ (see tests/fuzz_regressions.rs)"
    fi
done

if [[ ${#crashed[@]} -gt 0 ]]; then
    log "${#crashed[@]} of ${#targets[@]} targets crashed: ${crashed[*]}"
    exit 1
fi
log "${#targets[@]} targets ran ${seconds}s each without a crash"
