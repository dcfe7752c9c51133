#!/usr/bin/env bash
# Tests of the pool's L1 contracts against a real anvil node, driven with cast.
#
#   bash contracts/test.sh        (after `npm ci`; uses the committed contracts/artifacts/*.json)
#
# Starts anvil on a port it picks itself (--port 0, read back from its output), deploys
# SequencerStaking and two BatchInboxes (one for the batches role, one for the state role) from
# anvil's dev account 0 (the admin), sets up a fixture, takes an
# EVM snapshot, and runs each named check from that snapshot (evm_revert before every check, so the
# checks do not depend on each other). Each check prints `ok <name>` or `FAIL <name>` (with the reason
# indented below). A revert check sends the real transaction with cast and asserts the exact revert
# data: the custom error's selector and its arguments. Ends with `N passed, M failed`; exit status 1
# if any check failed (or the setup failed). anvil is always stopped on exit.
#
# Environment: ANVIL, CAST override the binaries (default: the npm packages in node_modules).
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ANVIL=${ANVIL:-$ROOT/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil}
CAST=${CAST:-$ROOT/node_modules/@foundry-rs/cast-linux-amd64/bin/cast}
ARTIFACTS=$ROOT/contracts/artifacts

die() {
  echo "test.sh: $*" >&2
  echo "0 passed, 1 failed"
  exit 1
}

for bin in "$ANVIL" "$CAST"; do
  [[ -x $bin ]] || die "missing $bin (run: npm ci)"
done
command -v node >/dev/null || die "node is required"
for a in SequencerStaking BatchInbox; do
  [[ -f $ARTIFACTS/$a.json ]] || die "missing $ARTIFACTS/$a.json (run: node contracts/compile.js)"
done

TMP=$(mktemp -d)
ANVIL_PID=
cleanup() {
  if [[ -n $ANVIL_PID ]]; then
    kill "$ANVIL_PID" 2>/dev/null
    wait "$ANVIL_PID" 2>/dev/null
  fi
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ------------------------------------------------------------------ anvil

# The contracts target the Cancun EVM (contracts/compile.js); test on exactly that hardfork.
# --port 0: the OS picks a free port, anvil prints it ("Listening on 127.0.0.1:PORT").
start_anvil() {
  "$ANVIL" --host 127.0.0.1 --port 0 --hardfork cancun --accounts 10 \
    --config-out "$TMP/anvil.json" >"$TMP/anvil.log" 2>&1 &
  ANVIL_PID=$!
  local port= i
  for i in $(seq 1 100); do # up to 10 s
    port=$(sed -n 's/^Listening on 127\.0\.0\.1:\([0-9][0-9]*\)$/\1/p' "$TMP/anvil.log")
    [[ -n $port ]] && break
    kill -0 "$ANVIL_PID" 2>/dev/null || break
    sleep 0.1
  done
  if [[ -z $port ]]; then
    cat "$TMP/anvil.log" >&2
    return 1
  fi
  export ETH_RPC_URL=http://127.0.0.1:$port
  for i in $(seq 1 100); do
    if "$CAST" chain-id >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  cat "$TMP/anvil.log" >&2
  return 1
}

start_anvil || die "anvil did not start"

# ----------------------------------------------------------------- helpers

# json_get FILE EXPR: print the JavaScript expression EXPR evaluated on the JSON in FILE (as `j`).
json_get() {
  node -e 'const j = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
           const v = eval(process.argv[2]); console.log(typeof v === "string" ? v : JSON.stringify(v));' "$1" "$2"
}

# Dev accounts of anvil (from its --config-out), index 0..9.
mapfile -t ADDR < <(json_get "$TMP/anvil.json" 'j.available_accounts.join("\n")')
mapfile -t KEY < <(json_get "$TMP/anvil.json" 'j.private_keys.join("\n")')
[[ ${#ADDR[@]} -ge 10 && ${#KEY[@]} -ge 10 ]] || die "could not read anvil's dev accounts"

ADMIN=0       # deployer of both contracts
SEQ1=1        # whitelisted in the fixture
SEQ2=2        # whitelisted in the fixture
OUTSIDER=3    # never whitelisted
OTHER=4       # unprivileged account
STATE_NEW=6   # state-role address after a reset
MPC_STATE=7   # pool MPC address registered for the state role in the fixture
MPC=8         # pool MPC address (batches role) set in the fixture
MPC_NEW=9     # MPC address after a reset

MIN_STAKE=1000000000000000000   # 1 ether
MAX_STAKE=10000000000000000000  # 10 ether
GENESIS=100                     # first L2 block of the inbox

NODE1=0x$(printf '11%.0s' {1..32})
NODE2=0x$(printf '22%.0s' {1..32})
NODE3=0x$(printf '33%.0s' {1..32})
H1=$("$CAST" keccak "batch 1")
H2=$("$CAST" keccak "batch 2")
H3=$("$CAST" keccak "batch 3")
ZERO_ADDR=0x0000000000000000000000000000000000000000
ZERO32=0x0000000000000000000000000000000000000000000000000000000000000000
BATCHES_ROLE=$("$CAST" keccak batches)   # SequencerStaking.BATCHES_ROLE
STATE_ROLE=$("$CAST" keccak state)       # a second role: state commitments
UNUSED_ROLE=$("$CAST" keccak unused)     # a role nobody is registered for

REASON=
fail() {
  REASON=$*
  return 1
}

lower() { tr '[:upper:]' '[:lower:]'; }

# enc TYPES VALUES...: ABI encoding (0x-hex) of VALUES as the tuple TYPES, e.g. enc uint256 5
enc() {
  local types=$1
  shift
  "$CAST" abi-encode "f($types)" "$@" | lower
}

# send I TO SIG [ARGS...] [--value V]: send a transaction from dev account I; the receipt (JSON) is
# left in $TMP/receipt.json. Fails (with REASON) if the transaction reverts.
send() {
  local i=$1
  shift
  if ! "$CAST" send --private-key "${KEY[$i]}" --json "$@" >"$TMP/receipt.json" 2>"$TMP/send.err"; then
    fail "transaction $* from account $i failed: $(tr '\n' ' ' <"$TMP/send.err")"
    return 1
  fi
  [[ $(json_get "$TMP/receipt.json" 'j.status') == 0x1 ]] || fail "transaction $* has status != 1"
}

# expect_revert I ERROR_SIG ERROR_ARGS_CSV -- TO SIG [ARGS...] [--value V]
# Sends the transaction from dev account I and asserts that it reverts with exactly the custom error
# ERROR_SIG (e.g. "NotWhitelisted(address)") and arguments (comma-separated, may be empty).
expect_revert() {
  local i=$1 esig=$2 eargs=$3
  shift 4 # i, esig, eargs, --
  local expected got args=()
  [[ -n $eargs ]] && IFS=, read -r -a args <<<"$eargs"
  expected=$("$CAST" calldata "$esig" "${args[@]}" | lower)
  if "$CAST" send --private-key "${KEY[$i]}" --json "$@" >"$TMP/receipt.json" 2>"$TMP/send.err"; then
    fail "expected revert $esig($eargs), but $* from account $i succeeded"
    return 1
  fi
  got=$(sed -n 's/.*data: "\(0x[0-9a-fA-F]*\)".*/\1/p' "$TMP/send.err" | head -n 1 | lower)
  if [[ $got != "$expected" ]]; then
    fail "expected revert $esig($eargs) = $expected, got ${got:-no revert data}: $(tr '\n' ' ' <"$TMP/send.err")"
    return 1
  fi
}

# expect_call TO SIG ARGS... = TYPES VALUES...: the raw return data of the view call equals the ABI
# encoding of VALUES as TYPES.
expect_call() {
  local call=() got expected
  while [[ $1 != = ]]; do
    call+=("$1")
    shift
  done
  shift
  got=$("$CAST" call "${call[@]}" 2>&1 | lower) || true
  expected=$(enc "$@")
  [[ $got == "$expected" ]] || fail "${call[*]:1}: expected $* ($expected), got $got"
}

# expect_log_count N: the receipt in $TMP/receipt.json has exactly N logs.
expect_log_count() {
  local n
  n=$(json_get "$TMP/receipt.json" 'j.logs.length')
  [[ $n == "$1" ]] || fail "expected $1 log(s), the receipt has $n: $(json_get "$TMP/receipt.json" 'j.logs')"
}

# expect_log ADDRESS EVENT_SIG TOPIC_ARGS_CSV DATA_TYPES DATA_VALUES_CSV: the receipt in
# $TMP/receipt.json has a log from ADDRESS with topic0 = EVENT_SIG's hash, the indexed arguments
# (each ABI-encoded as its type in EVENT_SIG order, given as type:value) and the data.
expect_log() {
  local address=$1 esig=$2 tcsv=$3 dtypes=$4 dcsv=$5
  local topics=() t data dargs=()
  topics+=("$("$CAST" sig-event "$esig" | lower)")
  if [[ -n $tcsv ]]; then
    local parts
    IFS=, read -r -a parts <<<"$tcsv"
    for t in "${parts[@]}"; do topics+=("$(enc "${t%%:*}" "${t#*:}")"); done
  fi
  [[ -n $dcsv ]] && IFS=, read -r -a dargs <<<"$dcsv"
  if [[ -n $dtypes ]]; then data=$(enc "$dtypes" "${dargs[@]}"); else data=0x; fi
  local want
  want=$(printf '%s\n' "$address" "$data" "${topics[@]}" | lower | paste -sd' ')
  local found
  found=$(node -e '
    const r = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
    const [address, data, ...topics] = process.argv[2].split(" ");
    const hit = r.logs.some((l) => l.address.toLowerCase() === address && l.data.toLowerCase() === data &&
      l.topics.length === topics.length && l.topics.every((t, k) => t.toLowerCase() === topics[k]));
    console.log(hit ? "yes" : "no: " + JSON.stringify(r.logs.map((l) => [l.address, l.topics, l.data])));
  ' "$TMP/receipt.json" "$want")
  [[ $found == yes ]] || fail "no log $esig [$tcsv] ($dcsv) from $address; logs: ${found#no: }"
}

# big ARITHMETIC: evaluate an integer expression with arbitrary precision (wei amounts).
big() { node -e 'console.log(String(eval(process.argv[1].replace(/\d+/g, (d) => d + "n"))))' "$1"; }

# ----------------------------------------------------------------- fixture

deploy() { # deploy ARTIFACT CONSTRUCTOR_SIG ARGS... -> prints the address
  local name=$1
  shift
  local bytecode
  bytecode=$(json_get "$ARTIFACTS/$name.json" 'j.bytecode')
  if ! send "$ADMIN" --create "$bytecode" "$@"; then
    echo "$REASON" >&2
    return 1
  fi
  json_get "$TMP/receipt.json" 'j.contractAddress'
}

STAKING=$(deploy SequencerStaking "constructor(uint256,uint256)" "$MIN_STAKE" "$MAX_STAKE") ||
  die "deploying SequencerStaking failed"
INBOX=$(deploy BatchInbox "constructor(address,bytes32,uint64)" "$STAKING" "$BATCHES_ROLE" "$GENESIS") ||
  die "deploying BatchInbox (batches role) failed"
STATE_INBOX=$(deploy BatchInbox "constructor(address,bytes32,uint64)" "$STAKING" "$STATE_ROLE" "$GENESIS") ||
  die "deploying BatchInbox (state role) failed"
STAKING=$(lower <<<"$STAKING")
INBOX=$(lower <<<"$INBOX")
STATE_INBOX=$(lower <<<"$STATE_INBOX")

send "$ADMIN" "$STAKING" "setWhitelisted(address,bool)" "${ADDR[$SEQ1]}" true || die "fixture: $REASON"
send "$ADMIN" "$STAKING" "setWhitelisted(address,bool)" "${ADDR[$SEQ2]}" true || die "fixture: $REASON"
send "$ADMIN" "$STAKING" "setMpcAddress(address)" "${ADDR[$MPC]}" || die "fixture: $REASON"
send "$ADMIN" "$STAKING" "setRoleAddress(bytes32,address)" "$STATE_ROLE" "${ADDR[$MPC_STATE]}" ||
  die "fixture: $REASON"

SNAPSHOT=$("$CAST" rpc evm_snapshot | tr -d '"') || die "evm_snapshot failed"

# ------------------------------------------------------------------ checks

check_deployment_state() {
  expect_call "$STAKING" "admin()" = address "${ADDR[$ADMIN]}" || return 1
  expect_call "$STAKING" "minStake()" = uint256 "$MIN_STAKE" || return 1
  expect_call "$STAKING" "maxStake()" = uint256 "$MAX_STAKE" || return 1
  expect_call "$STAKING" "isWhitelisted(address)" "${ADDR[$SEQ1]}" = bool true || return 1
  expect_call "$STAKING" "isWhitelisted(address)" "${ADDR[$OUTSIDER]}" = bool false || return 1
  expect_call "$STAKING" "sequencerCount()" = uint256 0 || return 1
  expect_call "$INBOX" "staking()" = address "$STAKING" || return 1
  expect_call "$INBOX" "genesisBlock()" = uint64 "$GENESIS" || return 1
  expect_call "$INBOX" "nextBlock()" = uint64 "$GENESIS" || return 1
  expect_call "$INBOX" "batchCount()" = uint256 0 || return 1
  # Roles: the batches inbox serves BATCHES_ROLE, the second inbox the state role.
  expect_call "$STAKING" "BATCHES_ROLE()" = bytes32 "$BATCHES_ROLE" || return 1
  expect_call "$INBOX" "role()" = bytes32 "$BATCHES_ROLE" || return 1
  expect_call "$STATE_INBOX" "role()" = bytes32 "$STATE_ROLE" || return 1
  expect_call "$STATE_INBOX" "staking()" = address "$STAKING" || return 1
  expect_call "$STATE_INBOX" "nextBlock()" = uint64 "$GENESIS" || return 1
  expect_call "$STAKING" "roleAddress(bytes32)" "$BATCHES_ROLE" = address "${ADDR[$MPC]}" || return 1
  expect_call "$STAKING" "roleAddress(bytes32)" "$STATE_ROLE" = address "${ADDR[$MPC_STATE]}" || return 1
  expect_call "$STAKING" "roleAddress(bytes32)" "$UNUSED_ROLE" = address "$ZERO_ADDR" || return 1
  expect_call "$STAKING" "roleOf(address)" "${ADDR[$MPC]}" = bytes32 "$BATCHES_ROLE" || return 1
  expect_call "$STAKING" "roleOf(address)" "${ADDR[$MPC_STATE]}" = bytes32 "$STATE_ROLE" || return 1
  expect_call "$STAKING" "roleOf(address)" "${ADDR[$OTHER]}" = bytes32 "$ZERO32" || return 1
}

check_whitelisted_lock_emits_event_and_lists_sequencer() {
  local a3=${ADDR[$OUTSIDER]} a1=${ADDR[$SEQ1]}
  # Whitelisting emits WhitelistUpdated; the newly whitelisted account can lock.
  send "$ADMIN" "$STAKING" "setWhitelisted(address,bool)" "$a3" true || return 1
  expect_log "$STAKING" "WhitelistUpdated(address,bool)" "address:$a3" bool true || return 1
  send "$SEQ1" "$STAKING" "lock(bytes32)" "$NODE1" --value 2ether || return 1
  expect_log "$STAKING" "Locked(address,bytes32,uint256)" "address:$a1,bytes32:$NODE1" uint256 2000000000000000000 || return 1
  send "$OUTSIDER" "$STAKING" "lock(bytes32)" "$NODE3" --value 1ether || return 1
  expect_log "$STAKING" "Locked(address,bytes32,uint256)" "address:$a3,bytes32:$NODE3" uint256 "$MIN_STAKE" || return 1
  expect_call "$STAKING" "sequencerCount()" = uint256 2 || return 1
  expect_call "$STAKING" "sequencers()" = "(bytes32,address,uint256)[]" \
    "[($NODE1,$a1,2000000000000000000),($NODE3,$a3,$MIN_STAKE)]" || return 1
  expect_call "$STAKING" "sequencerAt(uint256)" 1 = "(bytes32,address,uint256)" "($NODE3,$a3,$MIN_STAKE)" || return 1
  expect_call "$STAKING" "nodeIdOf(address)" "$a1" = bytes32 "$NODE1" || return 1
  expect_call "$STAKING" "accountOf(bytes32)" "$NODE1" = address "$a1" || return 1
  expect_call "$STAKING" "stakeOf(address)" "$a1" = uint256 2000000000000000000 || return 1
  expect_call "$STAKING" "isSequencer(address)" "$a1" = bool true || return 1
  expect_call "$STAKING" "totalStake()" = uint256 3000000000000000000 || return 1
  [[ $("$CAST" balance "$STAKING") == 3000000000000000000 ]] || fail "contract balance is not 3 ether" || return 1
}

check_non_whitelisted_lock_reverts() {
  expect_revert "$OUTSIDER" "NotWhitelisted(address)" "${ADDR[$OUTSIDER]}" -- \
    "$STAKING" "lock(bytes32)" "$NODE3" --value 1ether || return 1
  # De-whitelisting blocks a new lock too.
  send "$ADMIN" "$STAKING" "setWhitelisted(address,bool)" "${ADDR[$SEQ1]}" false || return 1
  expect_log "$STAKING" "WhitelistUpdated(address,bool)" "address:${ADDR[$SEQ1]}" bool false || return 1
  expect_revert "$SEQ1" "NotWhitelisted(address)" "${ADDR[$SEQ1]}" -- \
    "$STAKING" "lock(bytes32)" "$NODE1" --value 1ether || return 1
  expect_call "$STAKING" "sequencerCount()" = uint256 0 || return 1
}

check_stake_below_minimum_reverts() {
  expect_revert "$SEQ1" "StakeBelowMinimum(uint256,uint256)" "500000000000000000,$MIN_STAKE" -- \
    "$STAKING" "lock(bytes32)" "$NODE1" --value 0.5ether || return 1
  expect_revert "$SEQ1" "StakeBelowMinimum(uint256,uint256)" "0,$MIN_STAKE" -- \
    "$STAKING" "lock(bytes32)" "$NODE1" || return 1
  expect_call "$STAKING" "sequencerCount()" = uint256 0 || return 1
}

check_stake_above_maximum_reverts() {
  expect_revert "$SEQ1" "StakeAboveMaximum(uint256,uint256)" "11000000000000000000,$MAX_STAKE" -- \
    "$STAKING" "lock(bytes32)" "$NODE1" --value 11ether || return 1
  # Exactly the maximum is accepted; any increase beyond it is not.
  send "$SEQ1" "$STAKING" "lock(bytes32)" "$NODE1" --value 10ether || return 1
  expect_revert "$SEQ1" "StakeAboveMaximum(uint256,uint256)" "10000000000000000001,$MAX_STAKE" -- \
    "$STAKING" "increase()" --value 1wei || return 1
  expect_call "$STAKING" "stakeOf(address)" "${ADDR[$SEQ1]}" = uint256 "$MAX_STAKE" || return 1
}

check_node_id_is_unique_per_account_and_node() {
  send "$SEQ1" "$STAKING" "lock(bytes32)" "$NODE1" --value 1ether || return 1
  expect_revert "$SEQ1" "AlreadyLocked(address,bytes32)" "${ADDR[$SEQ1]},$NODE1" -- \
    "$STAKING" "lock(bytes32)" "$NODE2" --value 1ether || return 1
  expect_revert "$SEQ2" "NodeIdTaken(bytes32,address)" "$NODE1,${ADDR[$SEQ1]}" -- \
    "$STAKING" "lock(bytes32)" "$NODE1" --value 1ether || return 1
  expect_revert "$SEQ2" "ZeroNodeId()" "" -- \
    "$STAKING" "lock(bytes32)" 0x0000000000000000000000000000000000000000000000000000000000000000 --value 1ether ||
    return 1
}

check_increase_then_unlock_returns_stake() {
  local a2=${ADDR[$SEQ2]} a1=${ADDR[$SEQ1]}
  send "$SEQ1" "$STAKING" "lock(bytes32)" "$NODE1" --value 1ether || return 1
  send "$SEQ2" "$STAKING" "lock(bytes32)" "$NODE2" --value 1ether || return 1
  send "$SEQ2" "$STAKING" "increase()" --value 3ether || return 1
  expect_log "$STAKING" "StakeIncreased(address,bytes32,uint256,uint256)" "address:$a2,bytes32:$NODE2" \
    uint256,uint256 3000000000000000000,4000000000000000000 || return 1
  expect_call "$STAKING" "stakeOf(address)" "$a2" = uint256 4000000000000000000 || return 1
  expect_call "$STAKING" "totalStake()" = uint256 5000000000000000000 || return 1

  # Unlock: the whole stake comes back (balance after = before + stake - fee of the unlock tx).
  local before after fee
  before=$("$CAST" balance "$a2")
  send "$SEQ2" "$STAKING" "unlock()" || return 1
  expect_log "$STAKING" "Unlocked(address,bytes32,uint256)" "address:$a2,bytes32:$NODE2" uint256 4000000000000000000 || return 1
  after=$("$CAST" balance "$a2")
  fee=$(json_get "$TMP/receipt.json" 'String(BigInt(j.gasUsed) * BigInt(j.effectiveGasPrice))')
  [[ $(big "$after - $before + $fee") == 4000000000000000000 ]] ||
    fail "balance $before -> $after with fee $fee: not +4 ether" || return 1
  [[ $("$CAST" balance "$STAKING") == "$MIN_STAKE" ]] || fail "contract keeps more than the remaining stake" || return 1

  # The entry is gone, the other sequencer is still listed, the nodeId is free again.
  expect_call "$STAKING" "sequencers()" = "(bytes32,address,uint256)[]" "[($NODE1,$a1,$MIN_STAKE)]" || return 1
  expect_call "$STAKING" "isSequencer(address)" "$a2" = bool false || return 1
  expect_call "$STAKING" "nodeIdOf(address)" "$a2" = bytes32 0x0000000000000000000000000000000000000000000000000000000000000000 || return 1
  expect_call "$STAKING" "accountOf(bytes32)" "$NODE2" = address "$ZERO_ADDR" || return 1
  expect_call "$STAKING" "totalStake()" = uint256 "$MIN_STAKE" || return 1
  expect_revert "$SEQ2" "NotLocked(address)" "$a2" -- "$STAKING" "unlock()" || return 1
  expect_revert "$SEQ2" "NotLocked(address)" "$a2" -- "$STAKING" "increase()" --value 1ether || return 1
  send "$SEQ2" "$STAKING" "lock(bytes32)" "$NODE2" --value 1ether || return 1
}

check_only_admin_sets_mpc_address() {
  local other=${ADDR[$OTHER]}
  expect_revert "$OTHER" "NotAdmin(address)" "$other" -- "$STAKING" "setMpcAddress(address)" "$other" || return 1
  expect_revert "$MPC" "NotAdmin(address)" "${ADDR[$MPC]}" -- "$STAKING" "setMpcAddress(address)" "$other" || return 1
  expect_revert "$OTHER" "NotAdmin(address)" "$other" -- "$STAKING" "setWhitelisted(address,bool)" "$other" true || return 1
  expect_call "$STAKING" "mpcAddress()" = address "${ADDR[$MPC]}" || return 1
  expect_revert "$ADMIN" "ZeroAddress()" "" -- "$STAKING" "setMpcAddress(address)" "$ZERO_ADDR" || return 1
}

check_slash_is_an_admin_only_stub() {
  expect_revert "$OTHER" "NotAdmin(address)" "${ADDR[$OTHER]}" -- \
    "$STAKING" "slash(address,uint256)" "${ADDR[$SEQ1]}" 1 || return 1
  expect_revert "$ADMIN" "NotImplemented()" "" -- "$STAKING" "slash(address,uint256)" "${ADDR[$SEQ1]}" 1 || return 1
}

check_admin_can_reset_mpc_address() {
  local old=${ADDR[$MPC]} new=${ADDR[$MPC_NEW]}
  send "$MPC" "$INBOX" "appendBatch(uint64,uint64,uint64,bytes32)" 1 100 109 "$H1" || return 1
  send "$ADMIN" "$STAKING" "setMpcAddress(address)" "$new" || return 1
  expect_log "$STAKING" "RoleAddressSet(bytes32,address,address)" \
    "bytes32:$BATCHES_ROLE,address:$old,address:$new" "" "" || return 1
  expect_call "$STAKING" "mpcAddress()" = address "$new" || return 1
  # The inbox follows at once: the old key is refused, the new one continues the sequence.
  expect_revert "$MPC" "NotRoleAddress(address,bytes32)" "$old,$BATCHES_ROLE" -- \
    "$INBOX" "appendBatch(uint64,uint64,uint64,bytes32)" 2 110 119 "$H2" || return 1
  send "$MPC_NEW" "$INBOX" "appendBatch(uint64,uint64,uint64,bytes32)" 2 110 119 "$H2" || return 1
  expect_call "$INBOX" "batchCount()" = uint256 2 || return 1
}

check_batch_from_mpc_address_is_appended() {
  send "$MPC" "$INBOX" "appendBatch(uint64,uint64,uint64,bytes32)" 1 100 109 "$H1" || return 1
  expect_log "$INBOX" "BatchAppended(uint64,uint64,uint64,bytes32)" "uint64:1" \
    uint64,uint64,bytes32 "100,109,$H1" || return 1
  # A one-block batch right after it, then a later epoch.
  send "$MPC" "$INBOX" "appendBatch(uint64,uint64,uint64,bytes32)" 1 110 110 "$H2" || return 1
  send "$MPC" "$INBOX" "appendBatch(uint64,uint64,uint64,bytes32)" 3 111 150 "$H3" || return 1
  expect_log "$INBOX" "BatchAppended(uint64,uint64,uint64,bytes32)" "uint64:3" \
    uint64,uint64,bytes32 "111,150,$H3" || return 1
  expect_call "$INBOX" "batchCount()" = uint256 3 || return 1
  expect_call "$INBOX" "nextBlock()" = uint64 151 || return 1
  expect_call "$INBOX" "lastEpoch()" = uint64 3 || return 1
  expect_call "$INBOX" "batchAt(uint256)" 1 = "(uint64,uint64,uint64,bytes32)" "(1,110,110,$H2)" || return 1
  expect_call "$INBOX" "lastBatch()" = "(uint64,uint64,uint64,bytes32)" "(3,111,150,$H3)" || return 1
}

check_batch_from_other_account_reverts() {
  local k
  for k in "$OTHER" "$ADMIN" "$SEQ1" "$MPC_STATE"; do
    expect_revert "$k" "NotRoleAddress(address,bytes32)" "${ADDR[$k]},$BATCHES_ROLE" -- \
      "$INBOX" "appendBatch(uint64,uint64,uint64,bytes32)" 1 100 109 "$H1" || return 1
  done
  expect_call "$INBOX" "batchCount()" = uint256 0 || return 1
}

check_batch_with_gap_reverts() {
  # The first batch must start at genesis ...
  expect_revert "$MPC" "BlockRangeGap(uint64,uint64)" "100,101" -- \
    "$INBOX" "appendBatch(uint64,uint64,uint64,bytes32)" 1 101 109 "$H1" || return 1
  send "$MPC" "$INBOX" "appendBatch(uint64,uint64,uint64,bytes32)" 1 100 109 "$H1" || return 1
  # ... and each next one at previous lastBlock + 1.
  expect_revert "$MPC" "BlockRangeGap(uint64,uint64)" "110,111" -- \
    "$INBOX" "appendBatch(uint64,uint64,uint64,bytes32)" 1 111 120 "$H2" || return 1
  expect_call "$INBOX" "nextBlock()" = uint64 110 || return 1
  expect_call "$INBOX" "batchCount()" = uint256 1 || return 1
}

check_overlapping_batch_reverts() {
  send "$MPC" "$INBOX" "appendBatch(uint64,uint64,uint64,bytes32)" 1 100 109 "$H1" || return 1
  expect_revert "$MPC" "BlockRangeOverlap(uint64,uint64)" "110,105" -- \
    "$INBOX" "appendBatch(uint64,uint64,uint64,bytes32)" 1 105 115 "$H2" || return 1
  expect_revert "$MPC" "BlockRangeOverlap(uint64,uint64)" "110,109" -- \
    "$INBOX" "appendBatch(uint64,uint64,uint64,bytes32)" 1 109 109 "$H2" || return 1
  # A batch starting before genesis overlaps too (nothing before genesis can be appended).
  expect_revert "$MPC" "BlockRangeOverlap(uint64,uint64)" "110,0" -- \
    "$INBOX" "appendBatch(uint64,uint64,uint64,bytes32)" 1 0 200 "$H2" || return 1
  expect_call "$INBOX" "batchCount()" = uint256 1 || return 1
}

check_replayed_range_reverts() {
  send "$MPC" "$INBOX" "appendBatch(uint64,uint64,uint64,bytes32)" 1 100 109 "$H1" || return 1
  send "$MPC" "$INBOX" "appendBatch(uint64,uint64,uint64,bytes32)" 1 110 119 "$H2" || return 1
  # The exact same batches again (same epoch, range and hash) are refused.
  expect_revert "$MPC" "BlockRangeOverlap(uint64,uint64)" "120,100" -- \
    "$INBOX" "appendBatch(uint64,uint64,uint64,bytes32)" 1 100 109 "$H1" || return 1
  expect_revert "$MPC" "BlockRangeOverlap(uint64,uint64)" "120,110" -- \
    "$INBOX" "appendBatch(uint64,uint64,uint64,bytes32)" 1 110 119 "$H2" || return 1
  expect_call "$INBOX" "batchCount()" = uint256 2 || return 1
  expect_call "$INBOX" "nextBlock()" = uint64 120 || return 1
}

check_invalid_batch_reverts() {
  expect_revert "$MPC" "InvalidBlockRange(uint64,uint64)" "100,99" -- \
    "$INBOX" "appendBatch(uint64,uint64,uint64,bytes32)" 1 100 99 "$H1" || return 1
  expect_revert "$MPC" "InvalidBlockRange(uint64,uint64)" "100,18446744073709551615" -- \
    "$INBOX" "appendBatch(uint64,uint64,uint64,bytes32)" 1 100 18446744073709551615 "$H1" || return 1
  expect_revert "$MPC" "ZeroBatchHash()" "" -- \
    "$INBOX" "appendBatch(uint64,uint64,uint64,bytes32)" 1 100 109 \
    0x0000000000000000000000000000000000000000000000000000000000000000 || return 1
  send "$MPC" "$INBOX" "appendBatch(uint64,uint64,uint64,bytes32)" 5 100 109 "$H1" || return 1
  expect_revert "$MPC" "EpochRegression(uint64,uint64)" "4,5" -- \
    "$INBOX" "appendBatch(uint64,uint64,uint64,bytes32)" 4 110 119 "$H2" || return 1
  expect_call "$INBOX" "batchCount()" = uint256 1 || return 1
}

check_only_admin_sets_role_address() {
  local other=${ADDR[$OTHER]} k
  for k in "$OTHER" "$MPC" "$MPC_STATE"; do
    expect_revert "$k" "NotAdmin(address)" "${ADDR[$k]}" -- \
      "$STAKING" "setRoleAddress(bytes32,address)" "$STATE_ROLE" "$other" || return 1
    expect_revert "$k" "NotAdmin(address)" "${ADDR[$k]}" -- \
      "$STAKING" "setRoleAddress(bytes32,address)" "$UNUSED_ROLE" "$other" || return 1
  done
  expect_call "$STAKING" "roleAddress(bytes32)" "$STATE_ROLE" = address "${ADDR[$MPC_STATE]}" || return 1
  expect_call "$STAKING" "roleAddress(bytes32)" "$UNUSED_ROLE" = address "$ZERO_ADDR" || return 1
  expect_call "$STAKING" "roleOf(address)" "$other" = bytes32 "$ZERO32" || return 1
}

check_zero_role_or_zero_address_is_refused() {
  local other=${ADDR[$OTHER]}
  expect_revert "$ADMIN" "ZeroRole()" "" -- "$STAKING" "setRoleAddress(bytes32,address)" "$ZERO32" "$other" || return 1
  expect_revert "$ADMIN" "ZeroAddress()" "" -- \
    "$STAKING" "setRoleAddress(bytes32,address)" "$STATE_ROLE" "$ZERO_ADDR" || return 1
  expect_revert "$ADMIN" "ZeroAddress()" "" -- \
    "$STAKING" "setRoleAddress(bytes32,address)" "$UNUSED_ROLE" "$ZERO_ADDR" || return 1
  # Both zero: the role is checked first.
  expect_revert "$ADMIN" "ZeroRole()" "" -- "$STAKING" "setRoleAddress(bytes32,address)" "$ZERO32" "$ZERO_ADDR" ||
    return 1
  expect_call "$STAKING" "roleAddress(bytes32)" "$ZERO32" = address "$ZERO_ADDR" || return 1
  expect_call "$STAKING" "roleOf(address)" "$other" = bytes32 "$ZERO32" || return 1
  expect_call "$STAKING" "roleAddress(bytes32)" "$STATE_ROLE" = address "${ADDR[$MPC_STATE]}" || return 1
}

check_one_address_cannot_serve_two_roles() {
  local mpc=${ADDR[$MPC]} state=${ADDR[$MPC_STATE]}
  # The error names the address and the role it already serves.
  expect_revert "$ADMIN" "AddressHasRole(address,bytes32)" "$mpc,$BATCHES_ROLE" -- \
    "$STAKING" "setRoleAddress(bytes32,address)" "$STATE_ROLE" "$mpc" || return 1
  expect_revert "$ADMIN" "AddressHasRole(address,bytes32)" "$mpc,$BATCHES_ROLE" -- \
    "$STAKING" "setRoleAddress(bytes32,address)" "$UNUSED_ROLE" "$mpc" || return 1
  expect_revert "$ADMIN" "AddressHasRole(address,bytes32)" "$state,$STATE_ROLE" -- \
    "$STAKING" "setRoleAddress(bytes32,address)" "$BATCHES_ROLE" "$state" || return 1
  expect_revert "$ADMIN" "AddressHasRole(address,bytes32)" "$state,$STATE_ROLE" -- \
    "$STAKING" "setMpcAddress(address)" "$state" || return 1
  expect_call "$STAKING" "roleAddress(bytes32)" "$BATCHES_ROLE" = address "$mpc" || return 1
  expect_call "$STAKING" "roleAddress(bytes32)" "$STATE_ROLE" = address "$state" || return 1
  expect_call "$STAKING" "roleAddress(bytes32)" "$UNUSED_ROLE" = address "$ZERO_ADDR" || return 1
  expect_call "$STAKING" "roleOf(address)" "$mpc" = bytes32 "$BATCHES_ROLE" || return 1
  expect_call "$STAKING" "roleOf(address)" "$state" = bytes32 "$STATE_ROLE" || return 1
}

check_reregistering_an_address_for_its_own_role_is_allowed() {
  local mpc=${ADDR[$MPC]} state=${ADDR[$MPC_STATE]}
  send "$ADMIN" "$STAKING" "setRoleAddress(bytes32,address)" "$STATE_ROLE" "$state" || return 1
  expect_log "$STAKING" "RoleAddressSet(bytes32,address,address)" \
    "bytes32:$STATE_ROLE,address:$state,address:$state" "" "" || return 1
  send "$ADMIN" "$STAKING" "setMpcAddress(address)" "$mpc" || return 1
  expect_log "$STAKING" "RoleAddressSet(bytes32,address,address)" \
    "bytes32:$BATCHES_ROLE,address:$mpc,address:$mpc" "" "" || return 1
  # Nothing changed: both addresses keep their roles and both inboxes still accept them.
  expect_call "$STAKING" "roleAddress(bytes32)" "$STATE_ROLE" = address "$state" || return 1
  expect_call "$STAKING" "roleOf(address)" "$state" = bytes32 "$STATE_ROLE" || return 1
  expect_call "$STAKING" "roleAddress(bytes32)" "$BATCHES_ROLE" = address "$mpc" || return 1
  expect_call "$STAKING" "roleOf(address)" "$mpc" = bytes32 "$BATCHES_ROLE" || return 1
  send "$MPC_STATE" "$STATE_INBOX" "appendBatch(uint64,uint64,uint64,bytes32)" 1 100 109 "$H1" || return 1
  send "$MPC" "$INBOX" "appendBatch(uint64,uint64,uint64,bytes32)" 1 100 109 "$H1" || return 1
}

check_moving_a_role_frees_the_old_address() {
  local mpc=${ADDR[$MPC]} state=${ADDR[$MPC_STATE]} new=${ADDR[$STATE_NEW]}
  # The state role moves to a new address: the old one has no role any more ...
  send "$ADMIN" "$STAKING" "setRoleAddress(bytes32,address)" "$STATE_ROLE" "$new" || return 1
  expect_log "$STAKING" "RoleAddressSet(bytes32,address,address)" \
    "bytes32:$STATE_ROLE,address:$state,address:$new" "" "" || return 1
  expect_call "$STAKING" "roleAddress(bytes32)" "$STATE_ROLE" = address "$new" || return 1
  expect_call "$STAKING" "roleOf(address)" "$new" = bytes32 "$STATE_ROLE" || return 1
  expect_call "$STAKING" "roleOf(address)" "$state" = bytes32 "$ZERO32" || return 1
  # ... and the state inbox follows at once.
  expect_revert "$MPC_STATE" "NotRoleAddress(address,bytes32)" "$state,$STATE_ROLE" -- \
    "$STATE_INBOX" "appendBatch(uint64,uint64,uint64,bytes32)" 1 100 109 "$H1" || return 1
  send "$STATE_NEW" "$STATE_INBOX" "appendBatch(uint64,uint64,uint64,bytes32)" 1 100 109 "$H1" || return 1
  # The freed address can serve another role: here it becomes the batches address, which frees
  # the old batches address in turn (and that one can take a third role).
  send "$ADMIN" "$STAKING" "setMpcAddress(address)" "$state" || return 1
  expect_log "$STAKING" "RoleAddressSet(bytes32,address,address)" \
    "bytes32:$BATCHES_ROLE,address:$mpc,address:$state" "" "" || return 1
  expect_call "$STAKING" "roleOf(address)" "$state" = bytes32 "$BATCHES_ROLE" || return 1
  expect_call "$STAKING" "roleOf(address)" "$mpc" = bytes32 "$ZERO32" || return 1
  send "$ADMIN" "$STAKING" "setRoleAddress(bytes32,address)" "$UNUSED_ROLE" "$mpc" || return 1
  expect_log "$STAKING" "RoleAddressSet(bytes32,address,address)" \
    "bytes32:$UNUSED_ROLE,address:$ZERO_ADDR,address:$mpc" "" "" || return 1
  expect_call "$STAKING" "roleOf(address)" "$mpc" = bytes32 "$UNUSED_ROLE" || return 1
  expect_call "$STAKING" "roleAddress(bytes32)" "$UNUSED_ROLE" = address "$mpc" || return 1
  # The address it left still cannot take a second role.
  expect_revert "$ADMIN" "AddressHasRole(address,bytes32)" "$new,$STATE_ROLE" -- \
    "$STAKING" "setMpcAddress(address)" "$new" || return 1
}

check_mpc_address_is_the_batches_role_address() {
  local mpc=${ADDR[$MPC]} new=${ADDR[$MPC_NEW]} other=${ADDR[$OTHER]}
  [[ $BATCHES_ROLE == "$("$CAST" keccak batches)" ]] || fail "BATCHES_ROLE is not keccak256(\"batches\")" || return 1
  expect_call "$STAKING" "BATCHES_ROLE()" = bytes32 "$BATCHES_ROLE" || return 1
  expect_call "$STAKING" "mpcAddress()" = address "$mpc" || return 1
  # setMpcAddress emits RoleAddressSet with the batches role, and nothing else.
  send "$ADMIN" "$STAKING" "setMpcAddress(address)" "$new" || return 1
  expect_log "$STAKING" "RoleAddressSet(bytes32,address,address)" \
    "bytes32:$BATCHES_ROLE,address:$mpc,address:$new" "" "" || return 1
  expect_log_count 1 || return 1
  expect_call "$STAKING" "roleAddress(bytes32)" "$BATCHES_ROLE" = address "$new" || return 1
  expect_call "$STAKING" "roleOf(address)" "$new" = bytes32 "$BATCHES_ROLE" || return 1
  expect_call "$STAKING" "roleOf(address)" "$mpc" = bytes32 "$ZERO32" || return 1
  # setRoleAddress(BATCHES_ROLE, ..) is what mpcAddress() reads.
  send "$ADMIN" "$STAKING" "setRoleAddress(bytes32,address)" "$BATCHES_ROLE" "$other" || return 1
  expect_log "$STAKING" "RoleAddressSet(bytes32,address,address)" \
    "bytes32:$BATCHES_ROLE,address:$new,address:$other" "" "" || return 1
  expect_log_count 1 || return 1
  expect_call "$STAKING" "mpcAddress()" = address "$other" || return 1
  # Another role does not touch it.
  send "$ADMIN" "$STAKING" "setRoleAddress(bytes32,address)" "$STATE_ROLE" "$mpc" || return 1
  expect_call "$STAKING" "mpcAddress()" = address "$other" || return 1
  # The MpcAddressSet event is gone from the ABI.
  [[ $(json_get "$ARTIFACTS/SequencerStaking.json" 'j.abi.filter((x) => x.type === "event").map((x) => x.name).sort().join(",")') == \
    Locked,RoleAddressSet,StakeIncreased,Unlocked,WhitelistUpdated ]] ||
    fail "SequencerStaking events are not exactly Locked, RoleAddressSet, StakeIncreased, Unlocked, WhitelistUpdated" ||
    return 1
}

check_state_inbox_accepts_only_the_state_role_address() {
  local mpc=${ADDR[$MPC]} state=${ADDR[$MPC_STATE]} k
  # The batches address (and anyone else) is refused, with the state role in the error.
  for k in "$MPC" "$ADMIN" "$OTHER"; do
    expect_revert "$k" "NotRoleAddress(address,bytes32)" "${ADDR[$k]},$STATE_ROLE" -- \
      "$STATE_INBOX" "appendBatch(uint64,uint64,uint64,bytes32)" 1 100 109 "$H1" || return 1
  done
  send "$MPC_STATE" "$STATE_INBOX" "appendBatch(uint64,uint64,uint64,bytes32)" 1 100 109 "$H1" || return 1
  expect_log "$STATE_INBOX" "BatchAppended(uint64,uint64,uint64,bytes32)" "uint64:1" \
    uint64,uint64,bytes32 "100,109,$H1" || return 1
  send "$MPC_STATE" "$STATE_INBOX" "appendBatch(uint64,uint64,uint64,bytes32)" 2 110 119 "$H2" || return 1
  expect_call "$STATE_INBOX" "batchCount()" = uint256 2 || return 1
  expect_call "$STATE_INBOX" "nextBlock()" = uint64 120 || return 1
  # The two inboxes keep separate sequences: the batches inbox is still at genesis.
  expect_call "$INBOX" "batchCount()" = uint256 0 || return 1
  send "$MPC" "$INBOX" "appendBatch(uint64,uint64,uint64,bytes32)" 1 100 109 "$H3" || return 1
  expect_call "$INBOX" "lastBatch()" = "(uint64,uint64,uint64,bytes32)" "(1,100,109,$H3)" || return 1
  expect_call "$STATE_INBOX" "lastBatch()" = "(uint64,uint64,uint64,bytes32)" "(2,110,119,$H2)" || return 1
}

check_batches_inbox_refuses_the_state_role_address() {
  expect_revert "$MPC_STATE" "NotRoleAddress(address,bytes32)" "${ADDR[$MPC_STATE]},$BATCHES_ROLE" -- \
    "$INBOX" "appendBatch(uint64,uint64,uint64,bytes32)" 1 100 109 "$H1" || return 1
  expect_call "$INBOX" "batchCount()" = uint256 0 || return 1
}

check_inbox_of_unregistered_role_refuses_everyone() {
  local unused k
  unused=$(deploy BatchInbox "constructor(address,bytes32,uint64)" "$STAKING" "$UNUSED_ROLE" "$GENESIS") ||
    fail "deploying BatchInbox (unused role) failed" || return 1
  for k in "$MPC" "$MPC_STATE" "$ADMIN"; do
    expect_revert "$k" "NotRoleAddress(address,bytes32)" "${ADDR[$k]},$UNUSED_ROLE" -- \
      "$unused" "appendBatch(uint64,uint64,uint64,bytes32)" 1 100 109 "$H1" || return 1
  done
  # Once the admin registers an address for the role, that address may append.
  send "$ADMIN" "$STAKING" "setRoleAddress(bytes32,address)" "$UNUSED_ROLE" "${ADDR[$OTHER]}" || return 1
  send "$OTHER" "$unused" "appendBatch(uint64,uint64,uint64,bytes32)" 1 100 109 "$H1" || return 1
  expect_call "$unused" "batchCount()" = uint256 1 || return 1
}

check_inbox_constructor_refuses_zero_role() {
  local bytecode
  bytecode=$(json_get "$ARTIFACTS/BatchInbox.json" 'j.bytecode')
  expect_revert "$ADMIN" "ZeroRole()" "" -- \
    --create "$bytecode" "constructor(address,bytes32,uint64)" "$STAKING" "$ZERO32" "$GENESIS" || return 1
  # A zero staking address is refused first.
  expect_revert "$ADMIN" "ZeroAddress()" "" -- \
    --create "$bytecode" "constructor(address,bytes32,uint64)" "$ZERO_ADDR" "$ZERO32" "$GENESIS" || return 1
  expect_revert "$ADMIN" "ZeroAddress()" "" -- \
    --create "$bytecode" "constructor(address,bytes32,uint64)" "$ZERO_ADDR" "$STATE_ROLE" "$GENESIS" || return 1
}

CHECKS=(
  deployment_state
  whitelisted_lock_emits_event_and_lists_sequencer
  non_whitelisted_lock_reverts
  stake_below_minimum_reverts
  stake_above_maximum_reverts
  node_id_is_unique_per_account_and_node
  increase_then_unlock_returns_stake
  only_admin_sets_mpc_address
  admin_can_reset_mpc_address
  slash_is_an_admin_only_stub
  batch_from_mpc_address_is_appended
  batch_from_other_account_reverts
  batch_with_gap_reverts
  overlapping_batch_reverts
  replayed_range_reverts
  invalid_batch_reverts
  only_admin_sets_role_address
  zero_role_or_zero_address_is_refused
  one_address_cannot_serve_two_roles
  reregistering_an_address_for_its_own_role_is_allowed
  moving_a_role_frees_the_old_address
  mpc_address_is_the_batches_role_address
  state_inbox_accepts_only_the_state_role_address
  batches_inbox_refuses_the_state_role_address
  inbox_of_unregistered_role_refuses_everyone
  inbox_constructor_refuses_zero_role
)

passed=0
failed=0
for name in "${CHECKS[@]}"; do
  REASON=
  # Every check starts from the fixture snapshot (anvil drops a snapshot once reverted to: retake it).
  if [[ $("$CAST" rpc evm_revert "$SNAPSHOT" 2>&1) != true ]]; then
    REASON="evm_revert to the fixture snapshot failed"
    ok=false
  else
    SNAPSHOT=$("$CAST" rpc evm_snapshot | tr -d '"')
    if "check_$name"; then ok=true; else ok=false; fi
  fi
  if $ok; then
    echo "ok $name"
    passed=$((passed + 1))
  else
    echo "FAIL $name"
    echo "    ${REASON:-(no reason recorded)}"
    failed=$((failed + 1))
  fi
done

echo "$passed passed, $failed failed"
[[ $failed -eq 0 ]]
