#!/usr/bin/env bash
# `make image-test`: build the production image from ./Dockerfile and exercise it the way
# an EHR and an orchestrator would, in the production topology (two containers of the image
# sharing one network, as in a pod: gunicorn on loopback, `baclofen-cds proxy` (nginx) in
# front): the schema upgrade step, health, discovery, a hook call with a recorded sandbox
# request, feedback, the proxy's own refusal, non-root, read-only root filesystem, no build
# or test tools inside, and a clean exit on SIGTERM.
#
# Needs root and Debian (it installs podman, runc and debootstrap when missing). The
# Dockerfile's base is `python:3.11-slim-bookworm` pinned by digest (its PYTHON_IMAGE build
# argument). When that exact image is not present (no container registry is reachable
# here), the build gets a local stand-in through the same build argument: built from Debian
# bookworm packages (same Python 3.11, `python` and `pip` in /usr/local/bin like the
# official image). The Dockerfile itself is unchanged: it is the one users build with the
# pinned official image.
#
# Environment knobs: IMAGE (tag to build, default baclofen-cds:image-test),
# BASE_PULL=1 (pull the pinned base image first, where a registry is reachable),
# BASE_REBUILD=1 (rebuild the stand-in), DEBIAN_MIRROR, HOST_CA (CA bundle for the proxy).
set -Eeuo pipefail

cd "$(dirname "$0")/.."

IMAGE=${IMAGE:-baclofen-cds:image-test}
PINNED_BASE=$(sed -n 's/^ARG PYTHON_IMAGE=//p' Dockerfile)
STANDIN_BASE=localhost/python-standin:3.11-slim-bookworm
BASE_ARGS=()
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
HOST_CA=${HOST_CA:-/etc/ssl/certs/ca-certificates.crt}
REQUEST=tests/data/requests/sandbox-order-sign-baclofen10-3tab-daily.json
SERVICE=baclofen-order-sign
APP_UID=10001
CONTAINER=baclofen-cds-image-test-$$
PROXY=baclofen-cds-image-test-proxy-$$
VOLUME=baclofen-cds-image-test-$$
# runc, not the default crun (which fails on this kind of host's cgroups); host networking
# and explicit ulimits avoid needing slirp/netavark and the host's (huge) default limits.
PODMAN=(podman --runtime runc)
LIMITS=(--ulimit nofile=20000:20000 --ulimit nproc=4096:4096 --network host)

STAGE_NAMES=()
STAGE_SECONDS=()
STAGE=""
STAGE_START=""
TEST_START=$EPOCHREALTIME

log() { printf '[image-test] %s\n' "$*" >&2; }

fail() {
    printf '\n[image-test] FAILED during "%s": %s\n' "${STAGE:-setup}" "$*" >&2
    if [[ -n "${CONTAINER_STARTED:-}" ]]; then
        printf '[image-test] --- service container log (last 60 lines) ---\n' >&2
        "${PODMAN[@]}" logs --tail 60 "$CONTAINER" >&2 2>&1 || true
        printf '[image-test] --- proxy container log (last 20 lines) ---\n' >&2
        "${PODMAN[@]}" logs --tail 20 "$PROXY" >&2 2>&1 || true
    fi
    exit 1
}

trap 'fail "command failed (line $LINENO): $BASH_COMMAND"' ERR

elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }

begin() {
    finish_stage
    STAGE=$1
    STAGE_START=$EPOCHREALTIME
    log "== $STAGE"
}

finish_stage() {
    if [[ -n "$STAGE" ]]; then
        STAGE_NAMES+=("$STAGE")
        STAGE_SECONDS+=("$(elapsed "$STAGE_START" "$EPOCHREALTIME")")
        STAGE=""
    fi
}

cleanup() {
    if [[ -n "${CONTAINER_STARTED:-}" ]]; then
        "${PODMAN[@]}" rm --force --time 0 "$CONTAINER" "$PROXY" >/dev/null 2>&1 || true
        "${PODMAN[@]}" volume rm --force "$VOLUME" >/dev/null 2>&1 || true
    fi
    [[ -n "${ROOTFS:-}" ]] && rm -rf "$ROOTFS"
    [[ -n "${WORKDIR:-}" ]] && rm -rf "$WORKDIR"
    return 0
}
trap cleanup EXIT

ensure_tools() {
    local missing=()
    command -v podman >/dev/null || missing+=(podman)
    command -v runc >/dev/null || missing+=(runc)
    command -v debootstrap >/dev/null || missing+=(debootstrap)
    command -v curl >/dev/null || missing+=(curl)
    command -v python3 >/dev/null || missing+=(python3)
    if ((${#missing[@]})); then
        [[ $(id -u) == 0 ]] || fail "needs root to install ${missing[*]} (or install them first)"
        command -v apt-get >/dev/null || fail "no apt-get: install ${missing[*]} by hand"
        log "installing ${missing[*]}"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            "${missing[@]}" >/dev/null
    fi
    [[ $(id -u) == 0 ]] || fail "podman with runc and host networking needs root here"
    [[ -r "$HOST_CA" ]] || fail "CA bundle $HOST_CA not readable (set HOST_CA)"
    [[ -r "$REQUEST" ]] || fail "sandbox request $REQUEST is missing"
}

# The pinned base when it is here (or BASE_PULL=1 fetches it), else the stand-in.
choose_base() {
    [[ -n "$PINNED_BASE" ]] || fail "Dockerfile has no ARG PYTHON_IMAGE=... default"
    if [[ -n "${BASE_PULL:-}" ]]; then
        "${PODMAN[@]}" pull --quiet "$PINNED_BASE" >/dev/null || fail "cannot pull $PINNED_BASE"
    fi
    if "${PODMAN[@]}" image exists "$PINNED_BASE"; then
        log "base image $PINNED_BASE"
        return
    fi
    build_base_standin
    BASE_ARGS=(--build-arg "PYTHON_IMAGE=$STANDIN_BASE")
}

# A Debian bookworm root filesystem shaped like the official python:3.11-slim-bookworm:
# interpreter, venv and pip reachable as /usr/local/bin/python, python3 and pip.
build_base_standin() {
    if [[ -z "${BASE_REBUILD:-}" ]] && "${PODMAN[@]}" image exists "$STANDIN_BASE"; then
        log "pinned base not here: stand-in $STANDIN_BASE (BASE_REBUILD=1 rebuilds it)"
        return
    fi
    ROOTFS=$(mktemp -d /var/tmp/baclofen-cds-base.XXXXXX)
    log "debootstrap bookworm from $DEBIAN_MIRROR (about 2 minutes)"
    debootstrap --variant=minbase bookworm "$ROOTFS" "$DEBIAN_MIRROR" >"$ROOTFS.log" 2>&1 \
        || { tail -20 "$ROOTFS.log" >&2; fail "debootstrap failed (log above)"; }
    rm -f "$ROOTFS.log"
    cp /etc/resolv.conf "$ROOTFS/etc/resolv.conf"
    chroot "$ROOTFS" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
        DEBIAN_FRONTEND=noninteractive /bin/sh -euc '
            apt-get update -qq
            apt-get install -y -qq --no-install-recommends python3 python3-venv ca-certificates >/dev/null
            python3 -m venv /usr/local
            /usr/local/bin/python -m pip --version
            apt-get clean
            rm -rf /var/lib/apt/lists/* /root/.cache
            : > /etc/resolv.conf
        ' >"$ROOTFS.log" 2>&1 \
        || { tail -20 "$ROOTFS.log" >&2; fail "installing Python into the stand-in failed (log above)"; }
    rm -f "$ROOTFS.log"
    tar -C "$ROOTFS" -c . | "${PODMAN[@]}" import --quiet \
        --change 'ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        --change 'LABEL org.opencontainers.image.description=local-stand-in-for-python:3.11-slim-bookworm' \
        --change 'CMD ["python3"]' \
        - "$STANDIN_BASE" >/dev/null || fail "podman import of the stand-in failed"
    rm -rf "$ROOTFS"
    ROOTFS=""
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

http() {
    # http METHOD PATH [BODY_FILE] -> prints body to $WORKDIR/body, returns the status code
    local method=$1 path=$2 data=${3:-}
    local args=(--silent --show-error --max-time 30 --output "$WORKDIR/body"
        --write-out '%{http_code}' -X "$method" "http://127.0.0.1:$PORT$path")
    [[ -n "$data" ]] && args+=(-H 'Content-Type: application/json' --data-binary "@$data")
    curl "${args[@]}" || echo 000
}

json_check() {
    # json_check 'python expression over d (the parsed body)' 'what it means'
    python3 -c 'import json, sys; d = json.load(open(sys.argv[1])); sys.exit(0 if eval(sys.argv[2]) else 1)' \
        "$WORKDIR/body" "$1" || fail "$2; body: $(head -c 600 "$WORKDIR/body")"
}

main() {
    begin "prerequisites"
    ensure_tools
    WORKDIR=$(mktemp -d)

    begin "base image"
    choose_base

    begin "image build"
    # The proxy's CA is mounted for the build only and named through the PIP_CERT build
    # argument; nothing of it lands in the runtime image.
    # Docker image format: the OCI format has no HEALTHCHECK.
    "${PODMAN[@]}" build "${LIMITS[@]}" --pull=never --format docker \
        --volume "$HOST_CA:/run/host-ca.crt:ro" --build-arg PIP_CERT=/run/host-ca.crt \
        "${BASE_ARGS[@]}" \
        --tag "$IMAGE" --file Dockerfile . \
        || fail "podman build failed (output above)"
    log "image size: $("${PODMAN[@]}" image inspect --format '{{.Size}}' "$IMAGE" | awk '{ printf "%.0f MB", $1 / 1e6 }')"

    begin "start containers"
    PORT=$(free_port)
    APP_PORT=$(free_port)
    # As Kubernetes runs it: read-only root filesystem with writable /tmp (podman adds a
    # tmpfs there, hiding the image's metrics directory: the server creates it, as with
    # `docker run --tmpfs /tmp`) and a volume for the SQLite default. (A --tmpfs on
    # /tmp/prometheus itself comes out root-owned 0750 with podman 4.3, whatever its mode=:
    # every metric then failed to record.)
    # CDS_AUTH_MODE=off lets the unsigned sandbox request through; unknown settings are ignored.
    # The image's HEALTHCHECK command is run by hand below: podman's timer needs systemd.
    "${PODMAN[@]}" volume create "$VOLUME" >/dev/null
    CONTAINER_STARTED=1
    # The schema upgrade is its own step before serving (an init container in Kubernetes).
    "${PODMAN[@]}" run --rm "${LIMITS[@]}" --read-only \
        --volume "$VOLUME:/var/lib/baclofen-cds" "$IMAGE" db upgrade \
        >"$WORKDIR/upgrade.log" 2>&1 \
        || { cat "$WORKDIR/upgrade.log" >&2; fail "db upgrade in the image failed"; }
    # gunicorn on loopback only, and the proxy in front of it: host networking stands in
    # for the pod's shared network namespace.
    "${PODMAN[@]}" run --detach --name "$CONTAINER" "${LIMITS[@]}" \
        --read-only --no-healthcheck \
        --volume "$VOLUME:/var/lib/baclofen-cds" \
        --env CDS_HOST=127.0.0.1 --env "CDS_PORT=$APP_PORT" \
        --env CDS_ENV=development --env CDS_AUTH_MODE=off \
        --env WEB_CONCURRENCY=2 --env GUNICORN_THREADS=2 \
        "$IMAGE" >/dev/null || fail "podman run (service) failed"
    "${PODMAN[@]}" run --detach --name "$PROXY" "${LIMITS[@]}" --read-only --no-healthcheck \
        --env CDS_PROXY_HOST=127.0.0.1 --env "CDS_PROXY_PORT=$PORT" --env "CDS_PORT=$APP_PORT" \
        --env CDS_ENV=development \
        "$IMAGE" proxy >/dev/null || fail "podman run (proxy) failed"

    begin "wait for /healthz"
    local deadline=$((SECONDS + 60)) status
    until [[ $(http GET /healthz) == 200 ]]; do
        local name
        for name in "$CONTAINER" "$PROXY"; do
            [[ $("${PODMAN[@]}" inspect --format '{{.State.Running}}' "$name") == true ]] \
                || fail "container $name exited before becoming healthy"
        done
        ((SECONDS < deadline)) || fail "/healthz not 200 through the proxy within 60 s"
        sleep 0.5
    done
    status=$(http GET /readyz)
    [[ $status == 200 ]] || fail "/readyz answered $status: $(cat "$WORKDIR/body")"
    local healthcheck=()
    mapfile -d '' healthcheck < <("${PODMAN[@]}" image inspect \
        --format '{{json .Config.Healthcheck.Test}}' "$IMAGE" \
        | python3 -c 'import json, sys; t = json.load(sys.stdin) or [""]; sys.stdout.write("\0".join(t[1:]) if t[0] == "CMD" else "")')
    ((${#healthcheck[@]})) || fail "the image has no HEALTHCHECK in exec form"
    "${PODMAN[@]}" exec "$CONTAINER" "${healthcheck[@]}" \
        || fail "the image's HEALTHCHECK command reports unhealthy"

    begin "discovery"
    status=$(http GET /cds-services)
    [[ $status == 200 ]] || fail "GET /cds-services answered $status"
    json_check "'$SERVICE' in [s['id'] for s in d['services']]" "discovery lacks $SERVICE"

    begin "hook call"
    python3 -c 'import json, sys; json.dump(json.load(open(sys.argv[1]))["body"], open(sys.argv[2], "w"))' \
        "$REQUEST" "$WORKDIR/request.json"
    status=$(http POST "/cds-services/$SERVICE" "$WORKDIR/request.json")
    [[ $status == 200 ]] || fail "POST /cds-services/$SERVICE answered $status: $(head -c 600 "$WORKDIR/body")"
    json_check "isinstance(d.get('cards'), list)" "hook response has no cards list"
    log "hook answered with $(python3 -c 'import json, sys; print(len(json.load(open(sys.argv[1]))["cards"]))' "$WORKDIR/body") card(s)"

    begin "feedback"
    # Feedback on the card just returned when there is one (CDS Hooks 2.0 §feedback).
    python3 - "$WORKDIR/body" "$WORKDIR/feedback.json" <<'PY'
import json, sys, uuid
from datetime import datetime, timezone
cards = json.load(open(sys.argv[1]))["cards"]
card = cards[0]["uuid"] if cards and cards[0].get("uuid") else str(uuid.uuid4())
stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
json.dump({"feedback": [{"card": card, "outcome": "overridden", "outcomeTimestamp": stamp}]},
          open(sys.argv[2], "w"))
PY
    status=$(http POST "/cds-services/$SERVICE/feedback" "$WORKDIR/feedback.json")
    [[ $status == 200 ]] || fail "POST feedback answered $status: $(head -c 600 "$WORKDIR/body")"

    begin "proxy refusal"
    # A body over CDS_MAX_BODY_BYTES is refused by nginx before it is read, in the
    # service's own form.
    head -c 3000000 /dev/zero | tr '\0' ' ' >"$WORKDIR/large.json"
    status=$(http POST "/cds-services/$SERVICE" "$WORKDIR/large.json")
    [[ $status == 413 ]] || fail "an oversized body answered $status"
    json_check "d['resourceType'] == 'OperationOutcome'" "the proxy's 413 is no OperationOutcome"

    begin "metrics"
    status=$(http GET /metrics)
    [[ $status == 200 ]] || fail "GET /metrics answered $status"
    grep -q '^cds_build_info{' "$WORKDIR/body" || fail "/metrics has no cds_build_info"
    grep -q "^cds_requests_total{.*service=\"$SERVICE\".*status=\"200\"" "$WORKDIR/body" \
        || fail "/metrics did not count the hook call"

    begin "non-root and contents"
    local uid pid1_uid pid1_cmd
    uid=$("${PODMAN[@]}" exec "$CONTAINER" id -u)
    [[ $uid == "$APP_UID" ]] || fail "processes in the container run as uid $uid, expected $APP_UID"
    # Rootful podman without a user namespace: the host sees the container's real uid.
    local host_pid
    host_pid=$("${PODMAN[@]}" inspect --format '{{.State.Pid}}' "$CONTAINER")
    pid1_uid=$(awk '/^Uid:/ { print $2 }' "/proc/$host_pid/status")
    pid1_cmd=$(tr '\0' ' ' <"/proc/$host_pid/cmdline")
    [[ $pid1_uid != 0 ]] || fail "PID 1 ($pid1_cmd) runs as root"
    [[ $pid1_cmd == *baclofen-cds* ]] \
        || fail "PID 1 is '$pid1_cmd', not the server: SIGTERM would not reach gunicorn"
    "${PODMAN[@]}" exec "$CONTAINER" sh -c 'touch /opt/venv/probe' 2>/dev/null \
        && fail "the root filesystem is writable despite --read-only"
    host_pid=$("${PODMAN[@]}" inspect --format '{{.State.Pid}}' "$PROXY")
    pid1_uid=$(awk '/^Uid:/ { print $2 }' "/proc/$host_pid/status")
    pid1_cmd=$(tr '\0' ' ' <"/proc/$host_pid/cmdline")
    [[ $pid1_uid == "$APP_UID" ]] || fail "the proxy ($pid1_cmd) runs as uid $pid1_uid"
    [[ $pid1_cmd == nginx:\ master* ]] \
        || fail "the proxy's PID 1 is '$pid1_cmd', not nginx: its stop signal would miss it"
    local found
    # shellcheck disable=SC2016  # expanded by the container's shell
    found=$("${PODMAN[@]}" exec "$CONTAINER" sh -c '
        for tool in gcc cc c++ make pytest ruff mypy hypothesis git curl; do
            command -v "$tool" >/dev/null 2>&1 && echo "$tool"
        done
        [ -e /opt/venv/bin/pip ] && echo "/opt/venv/bin/pip"
        [ -d /wheels ] && echo "/wheels"
        [ -d /src ] && echo "/src"
        [ -d /root/.cache/pip ] && echo "/root/.cache/pip"
        for module in pytest hypothesis ruff mypy pytest_postgresql kubernetes_validate; do
            python -c "import $module" >/dev/null 2>&1 && echo "python module $module"
        done
        true') || fail "could not inspect the image contents"
    [[ -z "$found" ]] || fail "build or test tools in the final image: ${found//$'\n'/, }"

    begin "SIGTERM shutdown"
    # The service first, then the proxy: the order a pod stops a native sidecar in.
    "${PODMAN[@]}" stop --time 30 "$CONTAINER" >/dev/null || fail "podman stop failed"
    local exit_code logs
    exit_code=$("${PODMAN[@]}" inspect --format '{{.State.ExitCode}}' "$CONTAINER")
    logs=$("${PODMAN[@]}" logs "$CONTAINER" 2>&1)
    [[ $exit_code == 0 ]] || fail "container exited with $exit_code after SIGTERM"
    grep -q 'Handling signal: term' <<<"$logs" || fail "gunicorn never saw SIGTERM"
    grep -q 'Shutting down: Master' <<<"$logs" || fail "gunicorn did not shut down gracefully"
    grep -qi 'traceback' <<<"$logs" && fail "traceback in the container log"
    grep -q '"level":"ERROR"' <<<"$logs" && fail "ERROR in the container log: $(grep '"level":"ERROR"' <<<"$logs" | head -3)"
    "${PODMAN[@]}" stop --time 10 "$PROXY" >/dev/null || fail "podman stop (proxy) failed"
    exit_code=$("${PODMAN[@]}" inspect --format '{{.State.ExitCode}}' "$PROXY")
    [[ $exit_code == 0 ]] || fail "the proxy exited with $exit_code after SIGTERM"
    finish_stage

    # Earlier builds of this image, now untagged, would otherwise pile up run after run.
    local title
    for title in baclofen-cds baclofen-cds-build; do
        "${PODMAN[@]}" image prune --force \
            --filter "label=org.opencontainers.image.title=$title" >/dev/null || true
    done

    log "PASSED: $IMAGE builds, serves discovery, hooks and feedback behind its proxy, runs as uid $APP_UID and stops cleanly"
    log "timings (seconds):"
    local i
    for i in "${!STAGE_NAMES[@]}"; do
        printf '[image-test]   %-24s %7s\n' "${STAGE_NAMES[$i]}" "${STAGE_SECONDS[$i]}" >&2
    done
    printf '[image-test]   %-24s %7s\n' "total" "$(elapsed "$TEST_START" "$EPOCHREALTIME")" >&2
}

main "$@"
