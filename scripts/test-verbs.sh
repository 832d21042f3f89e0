#!/usr/bin/env bash
# Runs the multi-process suite over RDMA verbs on a real kernel RDMA device:
# builds the workspace with the `verbs` feature on this machine, then boots a
# small VM with a Soft-RoCE device (scripts/rxe-vm) and runs the one-sided,
# two-sided, collective and failure tests inside it with WEFT_TRANSPORT=verbs,
# plus the verbs transport's own tests. Needs root for the first set-up (apt).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-debian.sh --verbs
scripts/rxe-vm setup
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target/verbs}
cargo build --workspace --bins --features weft/verbs
tests=$(cargo test --workspace --features weft/verbs --no-run --message-format=json 2>/dev/null |
    grep -o '"executable":"[^"]*"' | sed 's/"executable":"\(.*\)"/\1/' |
    grep -E '/(one_sided|two_sided|collectives|failures|weft_transport)-[0-9a-f]+$')
[ -n "$tests" ] || { echo "test-verbs: no test executables found" >&2; exit 1; }
# Inside: every PE reaches every other (itself included) through rxe0.
scripts/rxe-vm run --mem 3072 --timeout 3000 -- "
    set -e
    export WEFT_TRANSPORT=verbs WEFT_TEST_EMULATED=1 TWOSIDED_STRESS_SECONDS=10
    ibv_devices
    for t in $(echo $tests); do
        echo \"== \$t\"
        case \$t in
            */weft_transport-*)
                \$t --ignored --test-threads=1 verbs | tee /tmp/verbs-tests
                grep -q '^test result: ok' /tmp/verbs-tests && grep -q '^test verbs::' /tmp/verbs-tests ||
                    { echo 'test-verbs: the verbs transport tests failed or did not run'; exit 1; } ;;
            *) \$t --test-threads=1 ;;
        esac
    done
"
