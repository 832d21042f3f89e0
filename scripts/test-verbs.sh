#!/usr/bin/env bash
# Runs the multi-process suite over RDMA verbs on a real kernel RDMA device:
# builds the workspace with the `verbs` feature on this machine, then
#  1. boots a small VM with a Soft-RoCE device (scripts/rxe-vm) and runs the
#     one-sided, two-sided, collective and failure tests inside it with
#     WEFT_TRANSPORT=verbs, plus the verbs transport's own tests;
#  2. boots two linked VMs, each with its own rxe0, and runs the same suites
#     as two-node jobs: weftrun in the first VM is the controller, every job
#     of two or more ranks puts half its ranks on the second VM, whose agent
#     joins by hand (weftrun --join) with the job's secret. Ranks reach their
#     node's peers through shared memory and the other node's through verbs.
# Under emulation the suite is built with the `checked` profile (optimized,
# with debug assertions), scales down its iteration counts and sizes
# (WEFT_TEST_EMULATED) and gives each PE a 16 MiB heap: the emulated CPU
# zeroes and registers 128 MiB per PE in seconds, at every job's start.
# `test-verbs.sh one` runs only the first, `test-verbs.sh pair` only the
# second. Needs root for the first set-up (apt).
set -euo pipefail
phases=${1:-all}
case $phases in all|one|pair) ;; *) echo "usage: $0 [all|one|pair]" >&2; exit 2 ;; esac
cd "$(dirname "$0")/.."
scripts/setup-debian.sh --verbs
scripts/rxe-vm setup
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target/verbs}
cargo build --workspace --bins --profile checked --features weft/verbs
tests=$(cargo test --workspace --profile checked --features weft/verbs --no-run --message-format=json 2>/dev/null |
    grep -o '"executable":"[^"]*"' | sed 's/"executable":"\(.*\)"/\1/' |
    grep -E '/(one_sided|two_sided|collectives|failures|weft_transport)-[0-9a-f]+$')
[ -n "$tests" ] || { echo "test-verbs: no test executables found" >&2; exit 1; }
common="export WEFT_TEST_EMULATED=1 TWOSIDED_STRESS_SECONDS=10 WEFT_SYMMETRIC_SIZE=16M"
# Inside: every PE reaches every other (itself included) through rxe0.
[ "$phases" = pair ] || scripts/rxe-vm run --mem 3072 --timeout 3000 -- "
    set -e
    $common WEFT_TRANSPORT=verbs
    ibv_devices
    for t in $(echo $tests); do
        echo \"== \$t\"
        case \$t in
            */weft_transport-*)
                \$t --include-ignored --test-threads=1 verbs | tee /tmp/verbs-tests
                grep -q '^test result: ok' /tmp/verbs-tests && grep -q '^test verbs::' /tmp/verbs-tests ||
                    { echo 'test-verbs: the verbs transport tests failed or did not run'; exit 1; } ;;
            *) \$t --test-threads=1 --nocapture ;;
        esac
    done
"

# Two nodes. The secret file is made here, before the VMs boot, so that both
# see it.
[ "$phases" != one ] || exit 0
pair=$CARGO_TARGET_DIR/pair
rm -rf "$pair" && mkdir -m 700 -p "$pair"
od -An -tx1 -N32 /dev/urandom | tr -d ' \n' >"$pair/job.key"
chmod 600 "$pair/job.key"
weftrun=$CARGO_TARGET_DIR/checked/weftrun
pair_tests=$(echo "$tests" | grep -v /weft_transport-)
scripts/rxe-vm pair --mem 2048 --timeout 3000 -- "
    set -e
    $common WEFT_TEST_HOSTS=rxe-vm-0,rxe-vm-1 WEFT_TEST_PORT=7700 WEFT_TEST_SECRET_FILE=$pair/job.key
    for t in $(echo $pair_tests); do
        echo \"== \$t (two nodes)\"
        \$t --test-threads=1 --nocapture
    done
    # The last job tells the second node's agent loop that the suite is over.
    $weftrun --hosts rxe-vm-0:1,rxe-vm-1:1 --launcher manual --port 7700 \\
        --secret-file $pair/job.key sh -c 'touch /tmp/weft-pair-done'
" -- "
    $common
    while [ ! -e /tmp/weft-pair-done ]; do
        $weftrun --join rxe-vm-0:7700 --secret-file $pair/job.key --join-timeout 120 >/tmp/agent.log 2>&1 || true
        cat /tmp/agent.log
        if grep -q 'cannot reach the controller' /tmp/agent.log; then exit 1; fi
    done
"
