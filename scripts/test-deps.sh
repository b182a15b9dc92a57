#!/usr/bin/env bash
# Installs and starts what the test suite needs, idempotently, on loopback:
#   - Azurite (npm azurite@3.35.0, the Azure Blob Storage emulator) on 127.0.0.1:10000,
#     with the container "backups";
#   - s3s-fs (crates.io s3s-fs 0.14.1, an S3 server that checks signatures) on
#     127.0.0.1:8014, access key "test", secret "test", with the bucket "backups";
#   - Knot DNS (Debian's knot and knot-dnsutils), the authoritative server the move's RFC 2136
#     cutover is tested against. Each test starts its own knotd on a free port with its own
#     zone (gatehouse-testkit's `Knot`); here it is installed and checked once with an update;
#   - Redis (Debian's redis-server), through which self-hosted gateways share rate limits. Each
#     test starts its own redis-server on a free port (gatehouse-testkit's `RedisServer`);
#   - PostgreSQL (Debian's postgresql), the control plane's shared store. Each test starts
#     its own cluster in a temporary directory, run as the postgres user on a free port
#     (gatehouse-testkit's `PostgresServer`); here it is installed;
#   - aiosmtpd (PyPI), the SMTP server the portal's email tests start on free ports;
#   - Chromium and chromedriver (Debian's chromium and chromium-driver), the real browser the
#     developer portal's tests drive through WebDriver; each test starts its own chromedriver;
#   - oidc-provider (npm, pinned by tests/oidc-provider/package-lock.json), the OpenID Connect
#     provider the portal's sign-in tests start on free ports;
#   - APIM's JavaScript SDK (@azure/arm-apimanagement, pinned by tests/apim-sdk/package-lock.json).
# A fresh machine has only the Rust toolchain, Python, Node and Debian's package manager.
# Stop the servers with: bash scripts/test-deps.sh stop
set -euo pipefail
cd "$(dirname "$0")/.."

DEPS="${GATEHOUSE_DEPS:-$HOME/.cache/gatehouse-test-deps}"
RUN="${GATEHOUSE_DEPS_RUN:-/tmp/gatehouse-test-deps}"
mkdir -p "$DEPS" "$RUN"

need() {
  command -v "$1" >/dev/null 2>&1 || { echo "test-deps: '$1' is required but not installed" >&2; exit 1; }
}

port_open() {
  python3 - "$1" <<'PY'
import socket, sys
s = socket.socket()
s.settimeout(0.3)
sys.exit(0 if s.connect_ex(("127.0.0.1", int(sys.argv[1]))) == 0 else 1)
PY
}

wait_port() {
  for _ in $(seq 1 100); do port_open "$1" && return 0; sleep 0.2; done
  echo "test-deps: nothing listens on 127.0.0.1:$1 after 20 s ($2)" >&2
  exit 1
}

stop() {
  for name in azurite s3s; do
    if [ -f "$RUN/$name.pid" ]; then kill "$(cat "$RUN/$name.pid")" 2>/dev/null || true; rm -f "$RUN/$name.pid"; fi
  done
}

if [ "${1:-}" = "stop" ]; then stop; exit 0; fi

need cargo
need node
need npm
need python3

# APIM's JavaScript SDK for tests/apim-sdk (versions pinned by its package-lock.json).
if [ ! -d tests/apim-sdk/node_modules/@azure/arm-apimanagement ]; then
  echo "test-deps: installing APIM's JavaScript SDK (tests/apim-sdk)"
  npm ci --prefix tests/apim-sdk --no-audit --no-fund --loglevel=error >/dev/null
fi

# A real OpenID Connect provider for the portal's sign-in tests (versions pinned by its
# package-lock.json); each test starts its own on a free port.
if [ ! -d tests/oidc-provider/node_modules/oidc-provider ]; then
  echo "test-deps: installing oidc-provider (tests/oidc-provider)"
  npm ci --prefix tests/oidc-provider --no-audit --no-fund --loglevel=error >/dev/null
fi

# Azurite.
if [ ! -x "$DEPS/azurite/node_modules/.bin/azurite-blob" ]; then
  echo "test-deps: installing azurite@3.35.0"
  npm install --prefix "$DEPS/azurite" --no-audit --no-fund --loglevel=error azurite@3.35.0 >/dev/null
fi
if ! port_open 10000; then
  mkdir -p "$RUN/azurite-data"
  nohup "$DEPS/azurite/node_modules/.bin/azurite-blob" --silent --disableTelemetry --loose --skipApiVersionCheck \
    --blobHost 127.0.0.1 --blobPort 10000 --location "$RUN/azurite-data" >"$RUN/azurite.log" 2>&1 &
  echo $! >"$RUN/azurite.pid"
fi
wait_port 10000 azurite
# The container "backups" (201 created, 409 exists), one SharedKey-signed request.
python3 - <<'PY'
import base64, hashlib, hmac, sys, urllib.error, urllib.request
from email.utils import formatdate
acct = "devstoreaccount1"
key = base64.b64decode("Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==")
date, ver = formatdate(usegmt=True), "2021-08-06"
sts = "PUT\n\n\n\n\napplication/octet-stream\n" + "\n" * 6 + f"x-ms-date:{date}\nx-ms-version:{ver}\n/{acct}/{acct}/backups\nrestype:container"
sig = base64.b64encode(hmac.new(key, sts.encode(), hashlib.sha256).digest()).decode()
req = urllib.request.Request(f"http://127.0.0.1:10000/{acct}/backups?restype=container", data=b"", method="PUT",
    headers={"x-ms-date": date, "x-ms-version": ver, "Authorization": f"SharedKey {acct}:{sig}", "Content-Type": "application/octet-stream"})
try:
    urllib.request.urlopen(req)
except urllib.error.HTTPError as e:
    if e.code != 409:
        sys.exit(f"test-deps: cannot create the Azurite container: HTTP {e.code}")
PY

# s3s-fs.
if [ ! -x "$DEPS/s3s/bin/s3s-fs" ]; then
  echo "test-deps: building s3s-fs 0.14.1 (a few minutes, once)"
  cargo install s3s-fs --version 0.14.1 --features binary --locked --root "$DEPS/s3s" --quiet
fi
mkdir -p "$RUN/s3-root/backups"
if ! port_open 8014; then
  nohup "$DEPS/s3s/bin/s3s-fs" --host 127.0.0.1 --port 8014 --access-key test --secret-key test "$RUN/s3-root" \
    >"$RUN/s3s.log" 2>&1 &
  echo $! >"$RUN/s3s.pid"
fi
wait_port 8014 s3s-fs

# Redis.
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  echo "test-deps: installing postgresql"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y --no-install-recommends postgresql >/dev/null 2>&1 \
    || { apt-get update >/dev/null && apt-get install -y --no-install-recommends postgresql >/dev/null; }
fi
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { echo "test-deps: PostgreSQL's initdb is missing after installing postgresql" >&2; exit 1; }
id postgres >/dev/null 2>&1 || { echo "test-deps: the postgres user is missing (Debian's postgresql creates it)" >&2; exit 1; }
echo "test-deps: PostgreSQL $(ls -d /usr/lib/postgresql/*/ | xargs -n1 basename | sort -n | tail -1)"

if ! command -v redis-server >/dev/null 2>&1; then
  echo "test-deps: installing redis-server"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y --no-install-recommends redis-server >/dev/null 2>&1 \
    || { apt-get update >/dev/null && apt-get install -y --no-install-recommends redis-server >/dev/null; }
fi
need redis-server
echo "test-deps: $(redis-server --version | cut -d' ' -f1-3)"

# aiosmtpd (PyPI), the SMTP server the portal's email tests send to.
if ! python3 -c "import aiosmtpd" >/dev/null 2>&1; then
  echo "test-deps: installing aiosmtpd 1.4.6"
  python3 -m pip install --quiet --disable-pip-version-check aiosmtpd==1.4.6 2>&1 | grep -v "Running pip as the 'root' user" || true
fi
python3 -c "import aiosmtpd" || { echo "test-deps: aiosmtpd could not be installed" >&2; exit 1; }

# Chromium and chromedriver for the developer portal's browser tests (about 300 MB).
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  echo "test-deps: installing chromium and chromium-driver"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y --no-install-recommends chromium chromium-driver >/dev/null 2>&1 \
    || { apt-get update >/dev/null && apt-get install -y --no-install-recommends chromium chromium-driver >/dev/null; }
fi
need chromium
need chromedriver
echo "test-deps: $(chromedriver --version | cut -d' ' -f1-2)"

# Knot DNS.
if ! command -v knotd >/dev/null 2>&1 || ! command -v knsupdate >/dev/null 2>&1; then
  echo "test-deps: installing knot and knot-dnsutils"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y --no-install-recommends knot knot-dnsutils >/dev/null 2>&1 \
    || { apt-get update >/dev/null && apt-get install -y --no-install-recommends knot knot-dnsutils >/dev/null; }
fi
need knotd
need kdig
# One signed update against a throwaway server proves the installation works here.
python3 - "$RUN/knot-check" <<'PY'
import os, shutil, socket, subprocess, sys, time
d = sys.argv[1]

def free_dns_port():
    # Free for TCP and UDP both: knotd listens on both, and a port free for UDP can be held on
    # the TCP side (a connection's local end).
    for _ in range(50):
        t = socket.socket(); t.bind(("127.0.0.1", 0)); port = t.getsockname()[1]
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            u.bind(("127.0.0.1", port)); return port
        except OSError:
            pass
        finally:
            u.close(); t.close()
    sys.exit("test-deps: no loopback port is free for both UDP and TCP")

secret = "Z2F0ZWhvdXNlLXRlc3Qta2V5LTAxMjM0NTY3ODk="
CONF = """server:
  listen: 127.0.0.1@{port}
  rundir: {d}
  pidfile: {d}/knot.pid
  user: root:root
database:
  storage: {d}
key:
  - id: check
    algorithm: hmac-sha256
    secret: {secret}
acl:
  - id: up
    key: check
    action: update
template:
  - id: default
    storage: {d}
    file: "%s.zone"
    zonefile-sync: -1
    journal-content: changes
zone:
  - domain: check.test
    acl: up
"""

def answering_knot():
    # A port can still be taken between choosing it and knotd binding it: then knotd exits at
    # once, and another port is tried.
    for attempt in range(5):
        shutil.rmtree(d, ignore_errors=True); os.makedirs(d)
        port = free_dns_port()
        open(f"{d}/check.test.zone", "w").write("$TTL 5\n@ SOA ns admin 1 60 60 600 5\n@ NS ns\nns A 127.0.0.1\napi CNAME old\n")
        open(f"{d}/knot.conf", "w").write(CONF.format(port=port, d=d, secret=secret))
        p = subprocess.Popen(["knotd", "-c", f"{d}/knot.conf"], stdout=open(f"{d}/log", "w"), stderr=subprocess.STDOUT)
        for _ in range(100):
            out = subprocess.run(["kdig", "@127.0.0.1", "-p", str(port), "api.check.test", "CNAME", "+short", "+time=1", "+retry=0"], capture_output=True, text=True).stdout
            if "old" in out:
                return p, port
            if p.poll() is not None:
                break
            time.sleep(0.1)
        p.terminate(); p.wait()
    sys.exit("test-deps: knotd did not answer: " + open(f"{d}/log").read())

p, port = answering_knot()
try:
    upd = f"server 127.0.0.1 {port}\nzone check.test\nupdate delete api.check.test CNAME\nupdate add api.check.test 5 CNAME new.check.test.\nsend\n"
    subprocess.run(["knsupdate", "-y", f"hmac-sha256:check:{secret}"], input=upd, text=True, check=True)
    out = subprocess.run(["kdig", "@127.0.0.1", "-p", str(port), "api.check.test", "CNAME", "+short"], capture_output=True, text=True).stdout
    if "new.check.test" not in out:
        sys.exit("test-deps: knotd did not apply a signed update: " + out)
finally:
    p.terminate(); p.wait()
PY

echo "test-deps: knot DNS $(knotd -V | awk '{print $NF}') checked with a signed update"
echo "test-deps: azurite on 127.0.0.1:10000 (container backups), s3s-fs on 127.0.0.1:8014 (bucket backups)"
