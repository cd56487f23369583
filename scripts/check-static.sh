#!/usr/bin/env bash
# check-static.sh: the static binary the image ships (`make static`) really stands alone.
#
#  1. `make static` builds target/static/canary-gate.
#  2. ELF: no program interpreter (PT_INTERP) and no NEEDED entry: no loader, no shared library.
#  3. It runs in an empty root holding only the binary, mounted READ-ONLY (as the chart runs it,
#     readOnlyRootFilesystem: true) with one writable /out: `--version`, `certs --out-dir /out`,
#     `serve` answering /readyz and a TLS handshake with the certificate it just made.
#  4. Name resolution of a static glibc binary (reqwest resolves through getaddrinfo), in that
#     root with no NSS module and no nsswitch.conf: `loadtest` against
#     http://canary-gate-test.local:<port>/ found in /etc/hosts, then against
#     http://prometheus.monitoring:<port>/ found by DNS through the search domains of a
#     kubelet-style /etc/resolv.conf (a tiny DNS server on a loopback address answers for
#     prometheus.monitoring.svc.cluster.local). glibc >= 2.34 has `files` and `dns` built in,
#     so both must work; a failure here means the image cannot reach Prometheus or hooks.
#  5. The Dockerfile: builder runs `make static` on the same Rust as here, final stage is
#     distroless static (or scratch), USER 65532, the OCI labels, ENTRYPOINT/CMD.
#
# Needs root for chroot (CI runs as root); otherwise it uses an unprivileged user namespace
# (`unshare --user --map-root-user`); if neither works it fails, it never skips.
set -euo pipefail
cd "$(dirname "$0")/.."

passed=0
failed=0
pass() { echo "PASS $*"; passed=$((passed + 1)); }
fail() { echo "FAIL $*"; failed=$((failed + 1)); }

work=$(mktemp -d /tmp/check-static.XXXXXX)
pids=()
cleanup() {
  local pid
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

finish() {
  echo "check-static: $passed passed, $failed failed"
  if [ "$failed" -ne 0 ]; then exit 1; fi
  exit 0
}

version=$(awk -F'"' '/^\[/ { p = ($0 == "[package]") } p && /^version *=/ { print $2; exit }' Cargo.toml)
bin=target/static/canary-gate

# --- 1. build ---------------------------------------------------------------------------
if "${MAKE:-make}" --no-print-directory static >"$work/build.log" 2>&1 && [ -x "$bin" ]; then
  pass "make static built $bin ($(stat -c %s "$bin") bytes, version $version)"
else
  tail -n 30 "$work/build.log"
  fail "make static did not build $bin"
  finish
fi

# --- 2. ELF ------------------------------------------------------------------------------
if readelf -lW "$bin" | grep -q 'INTERP'; then
  fail "ELF has a program interpreter: $(readelf -lW "$bin" | grep -A1 INTERP | tr -s ' ' | tail -n1)"
else
  pass "ELF has no program interpreter (readelf -l: no INTERP)"
fi
needed=$(readelf -dW "$bin" | grep '(NEEDED)' || true)
if [ -n "$needed" ]; then
  fail "ELF needs shared libraries: $(echo "$needed" | tr -s ' ' | tr '\n' ';')"
else
  pass "ELF has no NEEDED entry (readelf -d); file: $(file -b "$bin" | cut -d, -f1-2,5)"
fi

# --- 3. empty, read-only root --------------------------------------------------------------
root="$work/root"
mkdir -p "$root/out" "$root/tls" "$root/etc" "$work/out"
cp "$bin" "$root/canary-gate"

chroot_bin=$(command -v chroot || true)
if [ -z "$chroot_bin" ]; then
  fail "no chroot(8) on PATH (coreutils)"
  finish
fi
# How to get a private mount namespace in which the root can be remounted read-only.
if [ "$(id -u)" -eq 0 ] && unshare --mount true 2>/dev/null && "$chroot_bin" / true 2>/dev/null; then
  ns=(unshare --mount)
  how="chroot as root in a private mount namespace"
elif unshare --user --map-root-user --mount true 2>/dev/null; then
  ns=(unshare --user --map-root-user --mount)
  how="chroot in an unprivileged user + mount namespace"
else
  fail "cannot chroot: not root, and unprivileged user namespaces are not permitted (unshare --user --map-root-user --mount)"
  finish
fi
echo "     running the binary alone in $root ($how), / read-only, /out writable"

# in_root ARGS...: /canary-gate ARGS in the empty root, read-only except /out, with an empty
# environment (RUST_LOG aside). unshare and bash exec, so the pid is the binary's.
in_root() {
  # shellcheck disable=SC2016 # expanded by the inner bash
  "${ns[@]}" bash -c '
    set -e
    root=$1 out=$2 chroot_bin=$3; shift 3
    mount --bind "$root" "$root"
    mount -o remount,bind,ro "$root"
    mount --bind "$out" "$root/out"
    exec env -i RUST_LOG=warn "$chroot_bin" "$root" /canary-gate "$@"
  ' in_root "$root" "$work/out" "$chroot_bin" "$@"
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# The root really is read-only in there (the binary itself could not tell us).
if "${ns[@]}" bash -c 'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" && ! touch "$1/probe" 2>/dev/null' ro-probe "$root" \
  && [ ! -e "$root/probe" ]; then
  pass "the empty root is mounted read-only for the runs below"
else
  fail "could not mount the empty root read-only"
fi

out=$(in_root --version 2>&1) || true
if [ "$out" = "canary-gate $version" ]; then
  pass "--version in the empty root prints '$out'"
else
  fail "--version in the empty root: expected 'canary-gate $version', got '$out'"
fi

if out=$(in_root certs --out-dir /out --service canary-gate --namespace canary-gate \
  --extra-dns localhost --extra-ip 127.0.0.1 2>&1); then certs_rc=0; else certs_rc=$?; fi
bundle=$(echo "$out" | sed -n 's/^caBundle: //p')
missing=""
for f in ca.crt ca.key tls.crt tls.key; do [ -s "$work/out/$f" ] || missing="$missing $f"; done
if [ "$certs_rc" -eq 0 ] && [ -z "$missing" ] && [ -n "$bundle" ] \
  && [ "$(echo "$bundle" | base64 -d 2>/dev/null)" = "$(cat "$work/out/ca.crt")" ] \
  && openssl verify -CAfile "$work/out/ca.crt" "$work/out/tls.crt" >/dev/null 2>&1; then
  pass "certs --out-dir /out wrote ca.crt ca.key tls.crt tls.key (tls.crt verifies against ca.crt) and printed the caBundle (${#bundle} base64 chars)"
else
  echo "$out" | sed 's/^/     | /'
  fail "certs --out-dir /out: rc=$certs_rc, missing:${missing:- none}, caBundle ${bundle:+present}${bundle:-absent} (must be base64 of ca.crt)"
fi

# serve: the webhook and the admin port, from a read-only root, certificate from /tls.
cp "$work/out/tls.crt" "$work/out/tls.key" "$root/tls/" 2>/dev/null || true
hport=$(free_port)
aport=$(free_port)
in_root serve --no-analyzer --listen "127.0.0.1:$hport" --admin-listen "127.0.0.1:$aport" \
  --tls-cert /tls/tls.crt --tls-key /tls/tls.key >"$work/serve.log" 2>&1 &
serve_pid=$!
pids+=("$serve_pid")
ready=""
for _ in $(seq 1 50); do
  if ready=$(curl -fsS --max-time 2 "http://127.0.0.1:$aport/readyz" 2>/dev/null); then break; fi
  ready=""
  kill -0 "$serve_pid" 2>/dev/null || break
  sleep 0.1
done
code=$(curl -sS --max-time 5 -o /dev/null -w '%{http_code}' --cacert "$work/out/ca.crt" \
  -X POST -H 'Content-Type: application/json' --data '{}' "https://localhost:$hport/validate" 2>/dev/null || true)
if [ -n "$ready" ] && [ "${code:-000}" != "000" ]; then
  pass "serve from the read-only root: /readyz answered, TLS handshake on the webhook port verified (POST /validate -> HTTP $code)"
else
  sed 's/^/     | /' "$work/serve.log"
  fail "serve from the read-only root: readyz='${ready}' webhook HTTP '${code}'"
fi
kill "$serve_pid" 2>/dev/null || true
wait "$serve_pid" 2>/dev/null || true

# --- 4. name resolution ------------------------------------------------------------------
mkdir -p "$work/www"
echo ok >"$work/www/index.html"
python3 -u - "$work/www" >"$work/http.port" 2>"$work/http.log" <<'PY' &
import functools, http.server, sys
handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=sys.argv[1])
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
print(server.server_address[1], flush=True)
server.serve_forever()
PY
pids+=("$!")
for _ in $(seq 1 50); do [ -s "$work/http.port" ] && break; sleep 0.1; done
wport=$(head -n1 "$work/http.port")

# loadtest_ok URL: the load test's row for URL has requests, all answered 200.
loadtest_ok() {
  local out total
  out=$(in_root loadtest "$1" --rate 20 --duration 1s --timeout 2s --quiet 2>&1) || true
  total=$(echo "$out" | awk -v url="$1" '$1 == url { print "sent=" $2 " ok=" $4 " err=" $5 " " $NF }')
  lt_summary="${total:-no summary}"
  if echo "$total" | grep -Eq '^sent=[1-9][0-9]* ok=[1-9][0-9]* err=0 200=[0-9]+$'; then return 0; fi
  echo "$out" | sed 's/^/     | /'
  return 1
}

echo '127.0.0.1 canary-gate-test.local' >"$root/etc/hosts"
if loadtest_ok "http://canary-gate-test.local:$wport/"; then
  pass "name resolution via /etc/hosts (no nsswitch.conf, no NSS library): loadtest http://canary-gate-test.local:$wport/ $lt_summary"
else
  fail "name resolution via /etc/hosts: loadtest http://canary-gate-test.local:$wport/ $lt_summary"
fi

# DNS: a kubelet-style resolv.conf whose nameserver is a loopback address of our own.
dns_ip="127.$((RANDOM % 200 + 20)).$((RANDOM % 250 + 1)).53"
python3 -u - "$dns_ip" prometheus.monitoring.svc.cluster.local=127.0.0.1 >"$work/dns.log" 2>&1 <<'PY' &
# Minimal DNS over UDP: A records from argv, NODATA for other types, NXDOMAIN otherwise.
import socket, struct, sys
table = dict(kv.split("=") for kv in sys.argv[2:])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], 53))
print("listening", flush=True)
while True:
    data, peer = s.recvfrom(512)
    tid = struct.unpack(">H", data[:2])[0]
    i, labels = 12, []
    while data[i]:
        labels.append(data[i + 1:i + 1 + data[i]].decode()); i += 1 + data[i]
    qtype = struct.unpack(">H", data[i + 1:i + 3])[0]
    name, answer, rcode = ".".join(labels).lower(), b"", 3
    if name in table:
        rcode = 0
        if qtype == 1:
            answer = b"\xc0\x0c" + struct.pack(">HHIH", 1, 1, 5, 4) + socket.inet_aton(table[name])
    print(f"query {name} type {qtype} rcode {rcode} answers {int(bool(answer))}", flush=True)
    header = struct.pack(">HHHHHH", tid, 0x8500 | rcode, 1, int(bool(answer)), 0, 0)
    s.sendto(header + data[12:i + 5] + answer, peer)
PY
pids+=("$!")
for _ in $(seq 1 50); do grep -q listening "$work/dns.log" 2>/dev/null && break; sleep 0.1; done
printf 'search canary-gate.svc.cluster.local svc.cluster.local cluster.local\nnameserver %s\noptions ndots:5\n' \
  "$dns_ip" >"$root/etc/resolv.conf"
if ! grep -q listening "$work/dns.log"; then
  sed 's/^/     | /' "$work/dns.log"
  fail "name resolution via DNS: could not start the test DNS server on $dns_ip:53"
elif loadtest_ok "http://prometheus.monitoring:$wport/" \
  && grep -q 'query prometheus.monitoring.svc.cluster.local type 1 rcode 0 answers 1' "$work/dns.log"; then
  pass "name resolution via DNS (resolv.conf search domains, ndots:5): loadtest http://prometheus.monitoring:$wport/ $lt_summary; server saw $(grep -c '^query' "$work/dns.log") queries"
else
  tail -n 8 "$work/dns.log" | sed 's/^/     | dns: /'
  fail "name resolution via DNS: loadtest http://prometheus.monitoring:$wport/ $lt_summary"
fi

# --- 5. Dockerfile -----------------------------------------------------------------------
df=Dockerfile
if [ ! -f "$df" ]; then
  fail "no $df at the repository root"
  finish
fi
last_from=$(grep -n -iE '^FROM[[:space:]]' "$df" | tail -n1 | cut -d: -f1)
final=$(tail -n +"$last_from" "$df")
final_image=$(echo "$final" | head -n1 | awk '{ for (i = 2; i <= NF; i++) if ($i !~ /^--/) { print $i; exit } }')
if [[ "$final_image" =~ ^gcr\.io/distroless/static(-debian[0-9]+)?(:|@|$) || "$final_image" == scratch ]]; then
  pass "Dockerfile final stage FROM $final_image"
else
  fail "Dockerfile final stage FROM '$final_image': expected gcr.io/distroless/static* or scratch"
fi
if echo "$final" | grep -qE '^USER[[:space:]]+65532(:65532)?[[:space:]]*$'; then
  pass "Dockerfile final stage USER 65532"
else
  fail "Dockerfile final stage has no 'USER 65532[:65532]'"
fi
missing=""
for l in title description version source licenses revision created; do
  echo "$final" | grep -q "org\.opencontainers\.image\.$l=" || missing="$missing $l"
done
if [ -z "$missing" ]; then
  pass "Dockerfile OCI labels title description version source licenses revision created"
else
  fail "Dockerfile lacks OCI labels:$missing"
fi
if echo "$final" | grep -qF 'ENTRYPOINT ["/canary-gate"]' && echo "$final" | grep -qF 'CMD ["serve"]'; then
  pass 'Dockerfile ENTRYPOINT ["/canary-gate"] CMD ["serve"]'
else
  fail 'Dockerfile final stage needs ENTRYPOINT ["/canary-gate"] and CMD ["serve"]'
fi
# Built the one way: `make static`, or literally the Makefile's cargo command.
recipe=$(sed -n '/^static:/,/^$/p' Makefile | grep -F 'cargo build' \
  | sed -e 's/^[[:space:]]*//' -e 's/\$(CARGO)/cargo/' -e 's/\$(STATIC_TARGET)/x86_64-unknown-linux-gnu/' || true)
builder=$(head -n "$((last_from - 1))" "$df")
if echo "$builder" | grep -qE '(^|[[:space:]&;])make[[:space:]]+static([[:space:]]|$)' \
  || { [ -n "$recipe" ] && echo "$builder" | grep -qF -- "$recipe"; }; then
  pass "Dockerfile builder builds with 'make static' (the same command as here)"
else
  fail "Dockerfile builder does not run 'make static' (nor: $recipe)"
fi
# The builder's Rust is at least the crate's rust-version (Cargo.toml), so the image builds
# what `cargo build` here builds (a developer's newer local toolchain is fine).
min_rust=$(sed -nE 's/^rust-version *= *"([0-9]+\.[0-9]+).*/\1/p' Cargo.toml | head -n1)
image_rust=$(sed -nE 's/^ARG RUST_VERSION=([0-9]+\.[0-9]+).*/\1/p' "$df" | head -n1)
if [ -z "$image_rust" ]; then
  image_rust=$(sed -nE 's/^FROM.*rust:([0-9]+\.[0-9]+).*/\1/p' "$df" | head -n1)
fi
if [ -n "$image_rust" ] && [ -n "$min_rust" ] \
  && [ "$(printf '%s\n%s\n' "$min_rust" "$image_rust" | sort -V | head -n1)" = "$min_rust" ] \
  && grep -qE '^FROM.*rust:\$\{RUST_VERSION\}-bookworm|^FROM.*rust:[0-9.]+-bookworm' "$df"; then
  pass "Dockerfile builder rust:$image_rust-bookworm >= the crate's rust-version $min_rust"
else
  fail "Dockerfile builder Rust '${image_rust:-?}' (bookworm) below the crate's rust-version ${min_rust:-?}"
fi

finish
