#!/usr/bin/env bash
# Admission webhook at the TLS limit (issue 6, first bullet).
#
# Sends captured AdmissionReviews over real TLS to `canary-gate serve` and, in the same run, to
# a bare axum + rustls server (examples/bare_tls_server.rs, the floor) that answers every POST
# with the webhook's own answer for that request, byte for byte, without decoding anything,
# and to a second bare server that checks each body is JSON before answering (`--scan`): the
# ceiling for any webhook that reads its input at all.
#
# For each request kind (managed UPDATE that gets a patch, a pass-through, a validate):
#   * max throughput: closed loop, $MAX_CONNS connections, $DURATION, $ROUNDS rounds alternating
#     webhook, bare and bare+scan (the floor alone swings by ±15 % between runs on a shared
#     2-core box); the report gives the median of the per-round ratios and their range, and
#     each server's CPU time per request (from /proc, steadier than req/s)
#   * fixed rates $RATES req/s, $DURATION each, $ROUNDS rounds alternating webhook and bare:
#     p50 / p99 / p99.9 (coordinated-omission corrected) of the requests after the first $WARMUP s
#     (the load generator's own connection set-up), medians and each round's p99
# plus the webhook's RSS at start, after the load, and with $IDLE_CONNS idle keep-alive
# connections open (memory per connection), the same for the bare server.
#
# Load generator: oha (cargo install oha --locked --root .tools/cargo), found on PATH or in
# .tools/cargo/bin. Without oha, Debian's wrk measures max throughput only (no fixed rate).
#
# Output: a Markdown report on stdout, also written to $OUT (default bench/webhook-results.md).
# Everything started here is stopped on exit. With PIN=1 (the default on 2+ cores) every server
# runs on core $SERVER_CPU and the load generator on the others (taskset), so a throughput ratio
# between two servers is a ratio of server CPU per request; PIN=0 lets them share all cores.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

DURATION=${DURATION:-10s}
MAX_CONNS=${MAX_CONNS:-32}
ROUNDS=${ROUNDS:-3}
RATE_CONNS=${RATE_CONNS:-32}
RATES=${RATES:-"500 1000 2000"}
IDLE_CONNS=${IDLE_CONNS:-1000}
OUT=${OUT:-bench/webhook-results.md}
FIXTURES=${FIXTURES:-tests/fixtures/admission}
WEBHOOK_PORT=${WEBHOOK_PORT:-18443}
ADMIN_PORT=${ADMIN_PORT:-18080}
BARE_PORT=${BARE_PORT:-19443}
SCAN_PORT=${SCAN_PORT:-19444}
SKIP_BUILD=${SKIP_BUILD:-0}
WARMUP=${WARMUP:-1}
SERVER_CPU=${SERVER_CPU:-0}
if [[ -z "${PIN:-}" ]]; then
  PIN=$([[ $(nproc) -ge 2 ]] && command -v taskset >/dev/null && echo 1 || echo 0)
fi
if [[ "$PIN" == 1 ]]; then
  LOAD_CPUS=$(seq -s, 0 $(($(nproc) - 1)) | tr ',' '\n' | grep -vx "$SERVER_CPU" | paste -sd,)
  ON_SERVER=(taskset -c "$SERVER_CPU")
  ON_LOAD=(taskset -c "$LOAD_CPUS")
else
  LOAD_CPUS=all
  ON_SERVER=()
  ON_LOAD=()
fi

# kind | webhook path | bare path | fixture
KINDS=(
  "patch|/mutate?timeout=10s|/mutate-patch|21-managed-update-image-kubectl-apply.mutate.json"
  "pass-through|/mutate?timeout=10s|/mutate-pass|23-managed-update-image-server-side-apply.mutate.2.json"
  "validate|/validate?timeout=10s|/validate|21-managed-update-image-kubectl-apply.validate.json"
)

log() { echo "bench-webhook: $*" >&2; }
die() { log "$*"; exit 1; }

# ---------------------------------------------------------------- cleanup of what we started
PIDS=()
WORK=$(mktemp -d -t canary-gate-bench.XXXXXX)
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- machine facts (before load)
NPROC=$(nproc)
CPU_MODEL=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
CPU_MODEL=${CPU_MODEL:-unknown}
LOADAVG_START=$(cut -d' ' -f1-3 /proc/loadavg)
KERNEL=$(uname -r)
MEM_TOTAL=$(awk '/^MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)

# ---------------------------------------------------------------- tools and binaries
OHA=$(command -v oha || true)
[[ -z "$OHA" && -x .tools/cargo/bin/oha ]] && OHA=$ROOT/.tools/cargo/bin/oha
WRK=$(command -v wrk || true)
[[ -z "$OHA" && -z "$WRK" ]] &&
  die "no load generator: cargo install oha --locked --root .tools/cargo (or apt-get install wrk)"
command -v python3 >/dev/null || die "python3 is needed (JSON compaction, idle connections)"
command -v curl >/dev/null || die "curl is needed"

if [[ "$SKIP_BUILD" != 1 ]]; then
  log "building release binaries"
  cargo build --release --quiet --bin canary-gate --example bare_tls_server
fi
BIN=$ROOT/target/release/canary-gate
BARE=$ROOT/target/release/examples/bare_tls_server
[[ -x "$BIN" && -x "$BARE" ]] || die "missing $BIN or $BARE"

if [[ -n "$OHA" ]]; then
  GEN="oha $("$OHA" --version | awk '{print $2}')"
  if "$OHA" --help | grep -q -- '--output-format'; then
    OHA_JSON=(--output-format json)
  else
    OHA_JSON=(--json)
  fi
else
  GEN="wrk (no fixed-rate mode: latency columns are empty)"
fi

# ---------------------------------------------------------------- certificates and bodies
"$BIN" certs --out-dir "$WORK/certs" --extra-dns localhost --extra-ip 127.0.0.1 >/dev/null
CA=$WORK/certs/ca.crt

# The apiserver sends compact JSON; the captures are pretty-printed.
for entry in "${KINDS[@]}"; do
  IFS='|' read -r kind _ _ fixture <<<"$entry"
  python3 -c 'import json,sys; json.dump(json.load(open(sys.argv[1])), open(sys.argv[2],"w"), separators=(",",":"))' \
    "$FIXTURES/$fixture" "$WORK/req-$kind.json"
done

rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
# user + system CPU of a process (all its threads), in clock ticks
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
CLK_TCK=$(getconf CLK_TCK)
wait_https() { # url
  local i
  for i in $(seq 1 100); do
    curl -s -o /dev/null --cacert "$CA" -X POST -d '{}' "$1" && return 0
    sleep 0.1
  done
  return 1
}

# ---------------------------------------------------------------- the webhook
"${ON_SERVER[@]}" "$BIN" serve --no-analyzer --listen "127.0.0.1:$WEBHOOK_PORT" --admin-listen "127.0.0.1:$ADMIN_PORT" \
  --tls-cert "$WORK/certs/tls.crt" --tls-key "$WORK/certs/tls.key" >"$WORK/webhook.log" 2>&1 &
WEBHOOK_PID=$!
PIDS+=("$WEBHOOK_PID")
wait_https "https://127.0.0.1:$WEBHOOK_PORT/validate" || { cat "$WORK/webhook.log" >&2; die "webhook did not start"; }

# The webhook's answers: what the bare server will send back, byte for byte.
for entry in "${KINDS[@]}"; do
  IFS='|' read -r kind wpath _ _ <<<"$entry"
  curl -sS --fail --cacert "$CA" -H 'Content-Type: application/json' \
    --data-binary "@$WORK/req-$kind.json" -o "$WORK/resp-$kind.json" \
    "https://127.0.0.1:$WEBHOOK_PORT$wpath"
done
python3 - "$WORK" <<'EOF'
import json, sys
w = sys.argv[1]
r = {k: json.load(open(f"{w}/resp-{k}.json"))["response"] for k in ("patch", "pass-through", "validate")}
assert r["patch"].get("patch"), f"patch kind got no patch: {r['patch']}"
assert r["patch"]["allowed"] and r["pass-through"]["allowed"] and r["validate"]["allowed"], r
assert not r["pass-through"].get("patch"), f"pass-through kind got a patch: {r['pass-through']}"
EOF

BARE_ARGS=()
for entry in "${KINDS[@]}"; do
  IFS='|' read -r kind _ bpath _ <<<"$entry"
  BARE_ARGS+=(--body "$bpath=$WORK/resp-$kind.json")
done
"${ON_SERVER[@]}" "$BARE" --listen "127.0.0.1:$BARE_PORT" --tls-cert "$WORK/certs/tls.crt" \
  --tls-key "$WORK/certs/tls.key" "${BARE_ARGS[@]}" >"$WORK/bare.log" 2>&1 &
BARE_PID=$!
PIDS+=("$BARE_PID")
wait_https "https://127.0.0.1:$BARE_PORT/validate" || { cat "$WORK/bare.log" >&2; die "bare server did not start"; }
"${ON_SERVER[@]}" "$BARE" --scan --listen "127.0.0.1:$SCAN_PORT" --tls-cert "$WORK/certs/tls.crt" \
  --tls-key "$WORK/certs/tls.key" "${BARE_ARGS[@]}" >"$WORK/scan.log" 2>&1 &
SCAN_PID=$!
PIDS+=("$SCAN_PID")
wait_https "https://127.0.0.1:$SCAN_PORT/validate" || { cat "$WORK/scan.log" >&2; die "bare+scan server did not start"; }

sleep 1
WEBHOOK_RSS_START=$(rss_kib "$WEBHOOK_PID")
BARE_RSS_START=$(rss_kib "$BARE_PID")

# ---------------------------------------------------------------- load
# run_oha NAME URL BODY [extra oha args] -> $WORK/NAME.json
run_oha() {
  local name=$1 url=$2 body=$3
  shift 3
  "${ON_LOAD[@]}" "$OHA" --no-tui "${OHA_JSON[@]}" --cacert "$CA" -m POST -H 'Content-Type: application/json' \
    -D "$body" -z "$DURATION" "$@" "$url" >"$WORK/$name.json" 2>"$WORK/$name.err" ||
    { cat "$WORK/$name.err" >&2; die "oha failed for $name"; }
}
# run_wrk NAME URL BODY -> $WORK/NAME.txt (requests/s only)
run_wrk() {
  local name=$1 url=$2 body=$3
  cat >"$WORK/$name.lua" <<EOF
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = io.open("$body", "rb"); wrk.body = f:read("*a"); f:close()
EOF
  "${ON_LOAD[@]}" "$WRK" -t 2 -c "$MAX_CONNS" -d "$DURATION" -s "$WORK/$name.lua" "$url" >"$WORK/$name.txt"
}

# url_of SERVER WEBHOOK_PATH BARE_PATH
url_of() {
  case $1 in
    webhook) echo "https://127.0.0.1:$WEBHOOK_PORT$2" ;;
    bare) echo "https://127.0.0.1:$BARE_PORT$3" ;;
    scan) echo "https://127.0.0.1:$SCAN_PORT$3" ;;
  esac
}
for entry in "${KINDS[@]}"; do
  IFS='|' read -r kind wpath bpath _ <<<"$entry"
  for round in $(seq 1 "$ROUNDS"); do
    for server in webhook bare scan; do
      url=$(url_of "$server" "$wpath" "$bpath")
      case $server in webhook) pid=$WEBHOOK_PID ;; bare) pid=$BARE_PID ;; scan) pid=$SCAN_PID ;; esac
      log "$kind / $server: max throughput, round $round of $ROUNDS ($MAX_CONNS connections, $DURATION)"
      ticks=$(cpu_ticks "$pid")
      if [[ -n "$OHA" ]]; then
        run_oha "$kind.$server.max$round" "$url" "$WORK/req-$kind.json" -c "$MAX_CONNS"
      else
        run_wrk "$kind.$server.max$round" "$url" "$WORK/req-$kind.json"
      fi
      echo $(($(cpu_ticks "$pid") - ticks)) >"$WORK/$kind.$server.max$round.ticks"
    done
  done
  [[ -n "$OHA" ]] || continue
  for rate in $RATES; do
    for round in $(seq 1 "$ROUNDS"); do
      for server in webhook bare; do
        log "$kind / $server: $rate req/s, round $round of $ROUNDS"
        run_oha "$kind.$server.q$rate.$round" "$(url_of "$server" "$wpath" "$bpath")" \
          "$WORK/req-$kind.json" -c "$RATE_CONNS" -q "$rate" --latency-correction \
          --db-url "$WORK/$kind.$server.q$rate.$round.db"
      done
    done
  done
done

WEBHOOK_RSS_LOADED=$(rss_kib "$WEBHOOK_PID")
BARE_RSS_LOADED=$(rss_kib "$BARE_PID")

# ---------------------------------------------------------------- idle keep-alive connections
# Opens N TLS connections, sends one validate review on each (keep-alive), then holds them
# idle; prints "ready" when all are open and waits for stdin to close.
IDLE_PY=$(
  cat <<'EOF'
import http.client, ssl, sys
port, n, ca, body, path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], open(sys.argv[4], "rb").read(), sys.argv[5]
from concurrent.futures import ThreadPoolExecutor
ctx = ssl.create_default_context(cafile=ca)
def one(_):
    c = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=30)
    c.request("POST", path, body=body, headers={"Content-Type": "application/json"})
    r = c.getresponse(); r.read()
    assert r.status == 200, r.status
    return c
# In parallel: all N must be open well within the server's idle timeouts.
with ThreadPoolExecutor(64) as pool:
    conns = list(pool.map(one, range(n)))
print("ready", flush=True)
sys.stdin.read()
EOF
)
# idle_rss PID PORT PATH -> "rss_without rss_with established_after_open established_after_15s"
idle_rss() {
  local pid=$1 port=$2 path=$3 before with open_now open_later
  before=$(rss_kib "$pid")
  coproc IDLE { python3 -c "$IDLE_PY" "$port" "$IDLE_CONNS" "$CA" "$WORK/req-validate.json" "$path"; }
  local idle_pid=$IDLE_PID
  PIDS+=("$idle_pid")
  local line=""
  read -r -t 120 line <&"${IDLE[0]}" || true
  [[ $line == ready ]] || die "could not open $IDLE_CONNS idle connections to port $port"
  sleep 1
  with=$(rss_kib "$pid")
  open_now=$(ss -Htn state established "( sport = :$port )" | wc -l)
  sleep 15
  open_later=$(ss -Htn state established "( sport = :$port )" | wc -l)
  exec {IDLE[1]}>&-
  wait "$idle_pid" 2>/dev/null || true
  echo "$before $with $open_now $open_later"
}
log "webhook: $IDLE_CONNS idle keep-alive connections"
read -r W_IDLE_BEFORE W_IDLE_WITH W_OPEN W_OPEN_LATER < <(idle_rss "$WEBHOOK_PID" "$WEBHOOK_PORT" "/validate?timeout=10s")
log "bare: $IDLE_CONNS idle keep-alive connections"
read -r B_IDLE_BEFORE B_IDLE_WITH B_OPEN B_OPEN_LATER < <(idle_rss "$BARE_PID" "$BARE_PORT" "/validate")
WEBHOOK_LOG_BYTES=$(stat -c %s "$WORK/webhook.log")

# ---------------------------------------------------------------- report
export PIN SERVER_CPU LOAD_CPUS
export WORK RATES ROUNDS GEN CLK_TCK WARMUP NPROC CPU_MODEL LOADAVG_START KERNEL MEM_TOTAL DURATION MAX_CONNS RATE_CONNS IDLE_CONNS
export WEBHOOK_RSS_START WEBHOOK_RSS_LOADED BARE_RSS_START BARE_RSS_LOADED WEBHOOK_LOG_BYTES
export W_IDLE_BEFORE W_IDLE_WITH W_OPEN W_OPEN_LATER B_IDLE_BEFORE B_IDLE_WITH B_OPEN B_OPEN_LATER
export HAVE_OHA=${OHA:+1}
mkdir -p "$(dirname "$OUT")"
python3 - >"$WORK/report.md" <<'EOF'
import json, math, os, re, sqlite3
E = os.environ
W = E["WORK"]
rates = E["RATES"].split()
kinds = [("patch", "managed UPDATE → patch (`21-…kubectl-apply.mutate.json`, /mutate)"),
         ("pass-through", "pass-through (`23-…server-side-apply.mutate.2.json`, /mutate)"),
         ("validate", "validate (`21-…kubectl-apply.validate.json`, /validate)")]
oha = bool(E.get("HAVE_OHA"))

def load(name):
    if oha:
        d = json.load(open(f"{W}/{name}.json"))
        s = d["summary"]
        codes = d.get("statusCodeDistribution", {})
        ok = sum(v for k, v in codes.items() if k == "200")
        # oha cancels the requests in flight when -z runs out: not an error of the server.
        errors = {k: v for k, v in d.get("errorDistribution", {}).items() if "deadline" not in k}
        total = sum(codes.values()) + sum(errors.values())
        p = d.get("latencyPercentiles", {})
        return dict(rps=s["requestsPerSec"], p50=p.get("p50"), p99=p.get("p99"),
                    p999=p.get("p99.9"), ok=ok, total=total, answered=sum(codes.values()))
    txt = open(f"{W}/{name}.txt").read()
    m = re.search(r"Requests/sec:\s+([\d.]+)", txt)
    n = re.search(r"(\d+) requests in", txt)
    return dict(rps=float(m.group(1)), p50=None, p99=None, p999=None, ok=None, total=None,
                answered=int(n.group(1)))

def steady(name):
    """Latency percentiles of the requests scheduled after the warm-up, from oha's per-request
    database: the first requests of a run wait for the load generator's own connection set-up
    (32 TLS handshakes), up to ~100 ms, with either server. Returns (p50, p99, p99.9, left out)."""
    db = sqlite3.connect(f"{W}/{name}.db")
    rows = db.execute("SELECT start_latency_correction, duration FROM oha WHERE status = 200").fetchall()
    kept = sorted(d for start, d in rows if start >= float(E["WARMUP"]))
    pick = lambda q: kept[max(math.ceil(q * len(kept)) - 1, 0)] if kept else None
    return pick(0.50), pick(0.99), pick(0.999), len(rows) - len(kept)

def cpu_us(name, run):
    """The server's CPU time (user + system, all threads) per answered request, in µs."""
    ticks = int(open(f"{W}/{name}.ticks").read())
    return ticks / int(E["CLK_TCK"]) / max(run["answered"], 1) * 1e6

ms = lambda v: "–" if v is None else f"{v * 1000:.2f}"
# Failed requests over one or more runs; "–" when the generator does not count them.
errs = lambda *xs: "–" if any(x["total"] is None for x in xs) else str(sum(x["total"] - x["ok"] for x in xs))
size = lambda k, side: os.path.getsize(f"{W}/{side}-{k}.json")
out = []
P = out.append
P("# canary-gate webhook: admission at the TLS limit\n")
P("Produced by `scripts/bench-webhook.sh` (issue 6). Webhook = `canary-gate serve --no-analyzer` "
  "(release build, default `info` logging to a file); bare = `examples/bare_tls_server.rs` "
  "(same axum / axum-server / rustls-ring, fixed answer of the same bytes, no decoding); "
  "bare+scan = the same server with `--scan`: it also checks that each body is JSON "
  "(serde_json, building nothing) before answering, the least any webhook that reads its "
  "input must do.\n")
P("## Machine\n")
if E["PIN"] == "1":
    P(f"- nproc: **{E['NPROC']}** — each server pinned to core {E['SERVER_CPU']}, the load generator to {E['LOAD_CPUS']} (taskset): a throughput ratio is a ratio of server CPU per request")
else:
    P(f"- nproc: **{E['NPROC']}** — load generator, webhook and bare server share these cores; nothing is pinned (PIN=0)")
P(f"- CPU: {E['CPU_MODEL']}")
P(f"- memory: {E['MEM_TOTAL']}, kernel {E['KERNEL']}")
P(f"- load average at start: {E['LOADAVG_START']}")
P(f"- load generator: {E['GEN']}; max throughput = closed loop, {E['MAX_CONNS']} connections, {E['DURATION']}, "
  f"{E['ROUNDS']} rounds alternating webhook, bare and bare+scan; "
  f"fixed rates with {E['RATE_CONNS']} connections, {E['DURATION']} each, {E['ROUNDS']} rounds alternating webhook and bare, latency corrected for coordinated omission")
P("- TLS: server certificate from `canary-gate certs` (ECDSA P-256), client trusts the CA; keep-alive connections (handshakes are not in the steady state)\n")
P("## Max throughput (closed loop)\n")
P("Medians over the rounds; a ratio is the median of each round's ratio, with its range. "
  "*Ceiling* = bare+scan / bare: what is left of the floor once the body is read as JSON.\n")
P("Goal: webhook / bare+scan ≥ 0.8 for the patch path (a managed UPDATE that starts a release), ≥ 0.9 for pass-through and validate.\n")
P("| request kind | req bytes | resp bytes | webhook req/s | bare req/s | bare+scan req/s | webhook / bare (range) | ceiling (range) | webhook / bare+scan (range) | goal | errors (webhook/bare/scan) |")
P("|---|---:|---:|---:|---:|---:|---:|:-:|---:|---:|---|")
median = lambda xs: sorted(xs)[len(xs) // 2]
goal_mark = lambda k, r: ("✅ " if r >= (0.8 if k == "patch" else 0.9) else "❌ ") + ("≥ 0.8" if k == "patch" else "≥ 0.9")
ratio_cell = lambda rs: f"{median(rs):.2f} ({min(rs):.2f}–{max(rs):.2f})"
rounds = range(1, int(E["ROUNDS"]) + 1)
runs = {(k, side): [load(f"{k}.{side}.max{r}") for r in rounds]
        for k, _ in kinds for side in ("webhook", "bare", "scan")}
for k, label in kinds:
    ws, bs, ss = (runs[(k, side)] for side in ("webhook", "bare", "scan"))
    rps = lambda runs: median([x["rps"] for x in runs])
    ratios = [w["rps"] / b["rps"] for w, b in zip(ws, bs)]
    ceilings = [s["rps"] / b["rps"] for s, b in zip(ss, bs)]
    of_scan = [w["rps"] / s["rps"] for w, s in zip(ws, ss)]
    P(f"| {label} | {size(k, 'req')} | {size(k, 'resp')} | {rps(ws):.0f} | {rps(bs):.0f} | {rps(ss):.0f} | "
      f"{ratio_cell(ratios)} | {ratio_cell(ceilings)} | {ratio_cell(of_scan)} | "
      f"{goal_mark(k, median(of_scan))} | {errs(*ws)} / {errs(*bs)} / {errs(*ss)} |")
P("\n### Server CPU per request (µs, user + system, median over the rounds)\n")
P("Read from `/proc/PID/stat` around each closed-loop run; includes the kernel's TCP work. "
  "Steadier than req/s, which also depends on how the load generator shares the cores.\n")
P("| request kind | webhook | bare | bare+scan | webhook − bare+scan |")
P("|---|---:|---:|---:|---:|")
for k, _ in kinds:
    cpu = {side: median([cpu_us(f"{k}.{side}.max{r}", x) for r, x in zip(rounds, runs[(k, side)])])
           for side in ("webhook", "bare", "scan")}
    P(f"| {k} | {cpu['webhook']:.1f} | {cpu['bare']:.1f} | {cpu['scan']:.1f} | {cpu['webhook'] - cpu['scan']:.1f} |")
if oha:
    P("\n## Latency at fixed rates (ms)\n")
    P(f"Steady state: requests scheduled in the first {E['WARMUP']} s of each run are left out "
      "(they wait for the load generator's own 32 TLS handshakes, up to ~100 ms, with either "
      "server; the apiserver keeps its connections). Medians over the rounds, webhook and bare "
      "alternating at each rate; the p99 of each round and the whole run's p99 (warm-up "
      "included, as oha reports it) are listed too.\n")
    P("| request kind | rate req/s | server | achieved req/s | p50 | p99 | p99 of each round | p99.9 | p99 with warm-up | left out | errors |")
    P("|---|---:|---|---:|---:|---:|---|---:|---:|---:|---:|")
    for k, label in kinds:
        for r in rates:
            for side in ("webhook", "bare"):
                names = [f"{k}.{side}.q{r}.{n}" for n in rounds]
                xs = [load(n) for n in names]
                st = [steady(n) for n in names]
                mid = lambda i: median([x[i] for x in st]) if all(x[i] is not None for x in st) else None
                p99 = mid(1)
                mark = ""
                if side == "webhook" and r == "1000":
                    mark = " ✅" if p99 is not None and p99 < 0.001 else " ❌"
                each = " / ".join(ms(x[1]) for x in st)
                P(f"| {k} | {r} | {side} | {median([x['rps'] for x in xs]):.0f} | {ms(mid(0))} | {ms(p99)}{mark} | "
                  f"{each} | {ms(mid(2))} | {ms(median([x['p99'] for x in xs]))} | {sum(x[3] for x in st)} | {errs(*xs)} |")
    P("\nGoal: p99 < 1 ms at 1,000 req/s (steady state, median over the rounds, marked on the webhook rows).")
kib = lambda v: f"{int(v) / 1024:.1f} MiB"
# Divided by the connections really open when RSS was read (a server may close idle ones).
per = lambda a, b, n: f"{(int(b) - int(a)) / max(int(n), 1):.1f} KiB"
P("\n## Memory (RSS)\n")
P(f"| server | at start | after the load above | before {E['IDLE_CONNS']} idle conns | with them | per connection | established when read / after 15 s idle |")
P("|---|---:|---:|---:|---:|---:|---|")
P(f"| webhook | {kib(E['WEBHOOK_RSS_START'])} | {kib(E['WEBHOOK_RSS_LOADED'])} | {kib(E['W_IDLE_BEFORE'])} | {kib(E['W_IDLE_WITH'])} | "
  f"{per(E['W_IDLE_BEFORE'], E['W_IDLE_WITH'], E['W_OPEN'])} | {E['W_OPEN']} / {E['W_OPEN_LATER']} |")
P(f"| bare | {kib(E['BARE_RSS_START'])} | {kib(E['BARE_RSS_LOADED'])} | {kib(E['B_IDLE_BEFORE'])} | {kib(E['B_IDLE_WITH'])} | "
  f"{per(E['B_IDLE_BEFORE'], E['B_IDLE_WITH'], E['B_OPEN'])} | {E['B_OPEN']} / {E['B_OPEN_LATER']} |")
P(f"\nIdle connections: TLS handshake + one validate request each, then silent. "
  f"Webhook log written during the run: {int(E['WEBHOOK_LOG_BYTES']) / 1048576:.1f} MiB.")
print("\n".join(out))
EOF
cp "$WORK/report.md" "$OUT"
cat "$OUT"
log "written to $OUT"
