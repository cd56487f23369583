#!/usr/bin/env bash
# Fetch one pinned CRD file, check its sha256, and move it into place atomically.
#
#   scripts/fetch-crds.sh [--istio-networking] [--hint TEXT] URL SHA256 DEST
#
# URL      http(s):// or file:// (curl if installed, else python3's urllib)
# SHA256   the pinned sha256 of what ends up in DEST
# DEST     target file; written as DEST.tmp.* in the same directory, then renamed,
#          so DEST is either absent, the old file, or the complete checked file
#
# --istio-networking  URL is Istio's all-in-one customresourcedefinitions.gen.yaml
#          (istio/api, kubernetes/): keep only the DestinationRule, Gateway and
#          VirtualService CRDs (networking.istio.io), each document byte for byte
#          with its leading comment lines dropped, in file order, each preceded by
#          a "---" line. SHA256 is then the sha256 of that extract, not of the
#          whole upstream file (see the Makefile's ISTIO_CRDS_SHA256 for what
#          this does and does not verify).
# --hint TEXT  appended to every error line (e.g. which variable to set instead).
#
# If DEST already exists with the pinned sha256, nothing is downloaded. Every
# failure (offline, unreachable, HTTP error, checksum mismatch, CRDs missing from
# the download) is ONE line on stderr, exit 1, and nothing is left behind.
set -euo pipefail

istio=0
hint=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --istio-networking) istio=1; shift ;;
    --hint) hint=${2-}; shift 2 ;;
    --) shift; break ;;
    -*) echo "fetch-crds: unknown option $1 (usage: $0 [--istio-networking] [--hint TEXT] URL SHA256 DEST)" >&2; exit 2 ;;
    *) break ;;
  esac
done
if [[ $# -ne 3 ]]; then
  echo "fetch-crds: usage: $0 [--istio-networking] [--hint TEXT] URL SHA256 DEST" >&2
  exit 2
fi
url=$1 want=$2 dest=$3

fail() {
  printf 'fetch-crds: %s%s\n' "$*" "${hint:+; $hint}" >&2
  exit 1
}

sha_of() { sha256sum "$1" | cut -d' ' -f1; }

[[ "$want" =~ ^[0-9a-f]{64}$ ]] || fail "pinned sha256 '$want' for $url is not 64 hex digits"

if [[ -f "$dest" && "$(sha_of "$dest")" == "$want" ]]; then
  echo "ok   $dest (sha256 $want)"
  exit 0
fi

dir=$(dirname "$dest")
mkdir -p "$dir" || fail "cannot create $dir"
raw=$(mktemp "$dest.tmp.XXXXXX") || fail "cannot write in $dir"
out=$(mktemp "$dest.tmp.XXXXXX") || { rm -f "$raw"; fail "cannot write in $dir"; }
err=$(mktemp)
trap 'rm -f "$raw" "$out" "$err"' EXIT

# one_line FILE: the first non-empty line of FILE, whitespace squeezed.
one_line() { grep -m1 -v '^[[:space:]]*$' "$1" 2>/dev/null | tr -s '[:space:]' ' ' | sed 's/ $//' || true; }

echo "get  $url"
if command -v curl >/dev/null 2>&1; then
  if ! curl -fsSL --proto '=https,file' --connect-timeout 10 --max-time 300 --retry 2 \
      -o "$raw" "$url" 2>"$err"; then
    fail "cannot download $url ($(one_line "$err"); offline or unreachable?)"
  fi
elif command -v python3 >/dev/null 2>&1; then
  if ! python3 - "$url" "$raw" 2>"$err" <<'PY'
import sys, urllib.request
url, path = sys.argv[1], sys.argv[2]
if not url.startswith(("https://", "file://")):
    sys.exit("only https:// and file:// URLs are fetched")
try:
    with urllib.request.urlopen(url, timeout=60) as r, open(path, "wb") as f:
        f.write(r.read())
except Exception as e:  # one line, whatever went wrong
    sys.exit("%s: %s" % (type(e).__name__, e))
PY
  then
    fail "cannot download $url ($(one_line "$err"); offline or unreachable?)"
  fi
else
  fail "neither curl nor python3 is installed to download $url"
fi

if [[ $istio -eq 1 ]]; then
  # Split on lines that are exactly "---"; a document's name is its first
  # two-space-indented "name:" line (metadata.name: spec's own keys at that
  # indent are group/names/scope/versions).
  awk '
    BEGIN {
      keep["destinationrules.networking.istio.io"] = 1
      keep["gateways.networking.istio.io"] = 1
      keep["virtualservices.networking.istio.io"] = 1
      lead = 1
    }
    function flush() {
      if (name in keep) { printf "---\n%s", doc; found[name] = 1 }
      doc = ""; name = ""; lead = 1
    }
    $0 == "---" { flush(); next }
    lead && /^#/ { next }
    {
      lead = 0
      doc = doc $0 "\n"
      if (name == "" && $0 ~ /^  name: /) {
        name = substr($0, 9); gsub(/["'\''[:space:]]/, "", name)
      }
    }
    END {
      flush()
      n = 0; for (k in keep) if (!(k in found)) n++
      exit n > 0
    }
  ' "$raw" >"$out" || fail "$url lacks the DestinationRule, Gateway or VirtualService CRD"
else
  mv -f "$raw" "$out"
fi

got=$(sha_of "$out")
[[ "$got" == "$want" ]] || fail "sha256 mismatch for $url: got $got, pinned $want"
chmod 0644 "$out"
mv -f "$out" "$dest" || fail "cannot move the checked file to $dest"
echo "ok   $dest (sha256 $want)"
