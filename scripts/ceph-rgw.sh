#!/usr/bin/env bash
# A single-node Ceph cluster with an S3 gateway (radosgw) on loopback, for tests,
# benchmarks and trying filestore's object storage on one machine.
#
#   scripts/ceph-rgw.sh install      install Ceph from Debian's packages if absent (idempotent)
#   scripts/ceph-rgw.sh start DIR    start one mon, one memstore OSD and one radosgw with
#                                    their state in DIR, create an S3 user and a bucket, wait
#                                    until S3 answers, print `export ...` lines for eval;
#                                    if it already runs from DIR, only print them
#   scripts/ceph-rgw.sh stop DIR     stop the daemons started from DIR (rgw, osd, mon)
#   scripts/ceph-rgw.sh env DIR      print the `export ...` lines of a running cluster
#
#   eval "$(scripts/ceph-rgw.sh start /tmp/filestore-ceph)"
#   # S3_ENDPOINT S3_REGION S3_BUCKET AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY S3_VHOST_DOMAIN
#
# Environment (all optional; read by `start`, remembered in DIR for later calls):
#   CEPH_RGW_PORT=7480           S3 endpoint, http://127.0.0.1:PORT
#   CEPH_MON_PORT=6789           monitor, msgr2 on PORT and msgr1 on PORT+1 (the OSD takes
#                                free ports from 6800 up, Ceph's default range)
#   CEPH_MEMSTORE_BYTES=4GiB     capacity of the in-memory OSD, in bytes; its RSS grows with
#                                the data stored (raise it for benchmarks)
#   CEPH_RGW_DNS_NAME=s3.localtest  domain of virtual-hosted requests (BUCKET.s3.localtest:PORT;
#                                the client must resolve it to 127.0.0.1 itself)
#   CEPH_S3_ACCESS_KEY, CEPH_S3_SECRET_KEY, CEPH_S3_BUCKET=filestore
#   CEPH_START_TIMEOUT=120       seconds to wait for each step
#
# Progress and errors go to stderr, the exports alone to stdout. Logs: DIR/log/.
# Notes (Ceph 16.2 Pacific on Debian 12):
# - cephx stays on: with `auth = none` radosgw hangs at start.
# - `paxos propose interval = 0.05` takes the first start from ~11 s to ~2 s (radosgw
#   creates its pools with ~20 sequential monitor commands).
# - Every daemon runs in the foreground (-f) under setsid, its pid in DIR/run; stopping
#   goes one daemon at a time, clients first: stopping them together hangs the survivors.
set -euo pipefail

usage() {
    sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

log() { printf '[ceph-rgw] %s\n' "$*" >&2; }
die() { printf '[ceph-rgw] error: %s\n' "$*" >&2; exit 1; }

NEEDED_BINS=(ceph-mon ceph-osd radosgw radosgw-admin monmaptool ceph-authtool ceph curl setsid flock)

missing_bins() {
    local b out=()
    for b in "${NEEDED_BINS[@]}"; do command -v "$b" >/dev/null || out+=("$b"); done
    echo "${out[*]}"
}

cmd_install() {
    local missing
    missing="$(missing_bins)"
    if [ -z "$missing" ]; then
        log "Ceph is installed: $(ceph --version)"
        return 0
    fi
    log "installing Ceph (missing: $missing)"
    local as_root=()
    [ "$(id -u)" = 0 ] || as_root=(sudo)
    export DEBIAN_FRONTEND=noninteractive
    # Wait for a dpkg lock held by another installer instead of failing.
    local apt=("${as_root[@]}" apt-get -o DPkg::Lock::Timeout=600 -o Acquire::Retries=3)
    "${apt[@]}" update -qq
    "${apt[@]}" install -y -qq --no-install-recommends \
        ceph-mon ceph-osd radosgw ceph-common curl util-linux >/dev/null
    missing="$(missing_bins)"
    [ -z "$missing" ] || die "still missing after apt-get install: $missing"
    log "installed: $(ceph --version)"
}

# --- state dir helpers -----------------------------------------------------------------

state_dir() {
    local d="${1:-}"
    [ -n "$d" ] || usage
    mkdir -p "$d"
    d="$(cd "$d" && pwd)"
    # Admin sockets live under DIR/run; unix socket paths must stay below 108 bytes.
    [ "${#d}" -le 60 ] || die "state dir path too long for admin sockets (max 60 characters): $d"
    echo "$d"
}

load_settings() {
    # shellcheck disable=SC1091
    [ -f "$D/settings" ] && . "$D/settings"
    RGW_PORT="${RGW_PORT:-${CEPH_RGW_PORT:-7480}}"
    MON_PORT="${MON_PORT:-${CEPH_MON_PORT:-6789}}"
    MEMSTORE_BYTES="${MEMSTORE_BYTES:-${CEPH_MEMSTORE_BYTES:-4294967296}}"
    DNS_NAME="${DNS_NAME:-${CEPH_RGW_DNS_NAME:-s3.localtest}}"
    ACCESS_KEY="${ACCESS_KEY:-${CEPH_S3_ACCESS_KEY:-filestoretestaccesskey}}"
    SECRET_KEY="${SECRET_KEY:-${CEPH_S3_SECRET_KEY:-filestoretestsecretkey0123456789}}"
    BUCKET="${BUCKET:-${CEPH_S3_BUCKET:-filestore}}"
}

print_env() {
    cat <<EOF
export S3_ENDPOINT=http://127.0.0.1:$RGW_PORT
export S3_REGION=us-east-1
export AWS_DEFAULT_REGION=us-east-1
export AWS_ACCESS_KEY_ID=$ACCESS_KEY
export AWS_SECRET_ACCESS_KEY=$SECRET_KEY
export S3_BUCKET=$BUCKET
export S3_VHOST_DOMAIN=$DNS_NAME
export CEPH_CONF=$D/ceph.conf
EOF
}

# pid file DIR/run/NAME.pid names a live process started with DIR's ceph.conf
daemon_pid() {
    local f="$D/run/$1.pid" pid
    [ -f "$f" ] || return 1
    pid="$(cat "$f" 2>/dev/null)" || return 1
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$D/ceph.conf" || return 1
    echo "$pid"
}

s3_answers() {
    [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://127.0.0.1:$RGW_PORT/" 2>/dev/null)" = 200 ]
}

running() {
    [ -f "$D/ready" ] && daemon_pid mon.a >/dev/null && daemon_pid osd.0 >/dev/null &&
        daemon_pid rgw >/dev/null && s3_answers
}

# Serialises start and stop on one DIR (several test binaries may start it at once). The
# lock fd is closed in the daemons, or they would hold the lock for their whole life.
take_lock() {
    exec 9>"$D/lock"
    flock -w 600 9 || die "timed out waiting for the lock on $D"
}

stop_one() {
    local name="$1" pid
    pid="$(daemon_pid "$name")" || { rm -f "$D/run/$name.pid"; return 0; }
    kill -TERM "$pid" 2>/dev/null || true
    local _
    for _ in $(seq 1 150); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "$name (pid $pid) did not stop within 15 s; killing it"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$D/run/$name.pid"
}

stop_all() {
    rm -f "$D/ready"
    stop_one rgw
    stop_one osd.0
    stop_one mon.a
}

# Waits until "$@" succeeds, polling every 0.2 s, for at most TIMEOUT seconds.
wait_for() {
    local what="$1" check="$2" deadline=$(($(date +%s) + TIMEOUT))
    until "$check"; do
        [ "$(date +%s)" -lt "$deadline" ] || die "$what: gave up after ${TIMEOUT}s; logs in $D/log"
        sleep 0.2
    done
}

start_daemon() {
    local name="$1"
    shift
    (
        # Every descriptor but 0-2 is closed: a daemon outlives this script, and must not
        # keep a caller's lock open (a test run under `flock -s` would otherwise hold its
        # lock for as long as the cluster runs).
        for fd in /proc/self/fd/*; do
            fd=${fd##*/}
            [ "$fd" -gt 2 ] 2>/dev/null && eval "exec $fd>&-" 2>/dev/null
        done
        exec setsid "$@" -f </dev/null >>"$D/log/$name.out" 2>&1
    ) &
    echo $! >"$D/run/$name.pid"
}

port_free() {
    ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

write_conf() {
    cat >"$D/ceph.conf" <<EOF
[global]
fsid = $FSID
mon host = [v2:127.0.0.1:$MON_PORT,v1:127.0.0.1:$((MON_PORT + 1))]
public addr = 127.0.0.1
public network = 127.0.0.0/8
cluster network = 127.0.0.0/8
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
keyring = $D/keyring
run dir = $D/run
admin socket = $D/run/\$name.asok
log file = $D/log/\$name.log
log to stderr = false
err to stderr = true
crash dir = $D/crash
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
mon max pg per osd = 1000
mon pg warn min per osd = 0
# the mon stops itself below mon_data_avail_crit % free disk (default 5)
mon data avail warn = 2
mon data avail crit = 1
mon warn on insecure global id reclaim allowed = false
ms bind ipv4 = true
ms bind ipv6 = false

[mon]
# commit map changes every 50 ms instead of every second (start ~2 s instead of ~11 s)
paxos propose interval = 0.05
paxos min wait = 0.01
mon data = $D/mon/\$cluster-\$id
mon cluster log file = $D/log/cluster.log

[osd]
keyring = $D/osd/\$cluster-\$id/keyring
osd data = $D/osd/\$cluster-\$id
osd objectstore = memstore
memstore device bytes = $MEMSTORE_BYTES
osd crush update on start = true
osd crush initial weight = 1.0
osd max object name len = 460
osd max object namespace len = 64

[client.rgw.gw]
keyring = $D/rgw/keyring
# tcp_nodelay: without it ~6% of 1 MiB answers wait 40 ms for the client's delayed ACK
rgw frontends = beast endpoint=127.0.0.1:$RGW_PORT tcp_nodelay=1
rgw dns name = $DNS_NAME
rgw data = $D/rgw
rgw enable usage log = false
rgw thread pool size = 64
# the lifecycle threads sleep in 5 s steps and make stopping take ~10 s
rgw enable lc threads = false
# The data of deleted objects and aborted uploads is collected after 2 hours by default:
# memstore would fill up within a few test runs, and a full OSD blocks every write (the
# requests wait, they do not fail). Collect it within seconds.
rgw gc obj min wait = 5
rgw gc processor period = 5
log file = $D/log/rgw.log
EOF
}

# On a failed start: stop what was started; the logs stay.
on_start_exit() {
    if [ "$1" != 0 ]; then
        log "start failed; stopping what started (logs in $D/log)"
        stop_all
    fi
}

cmd_start() {
    D="$(state_dir "${1:-}")"
    TIMEOUT="${CEPH_START_TIMEOUT:-120}"
    local missing
    missing="$(missing_bins)"
    [ -z "$missing" ] || die "Ceph is not installed (missing: $missing); run: $0 install"
    take_lock
    load_settings
    if running; then
        # A full OSD makes every write wait (not fail): say so rather than let clients hang.
        if timeout 10 ceph -c "$D/ceph.conf" health 2>/dev/null | grep -qi full; then
            log "warning: the OSD in $D is full (writes will hang): stop and start it again," \
                "or raise CEPH_MEMSTORE_BYTES"
        fi
        print_env
        return 0
    fi
    if [ -f "$D/ceph.conf" ]; then
        log "$D holds a stopped or half-started cluster: starting afresh (memstore keeps no data)"
        stop_all
        find "$D" -mindepth 1 -maxdepth 1 ! -name lock -exec rm -rf {} +
        # Ports and keys come from the environment again, not from the old settings.
        unset RGW_PORT MON_PORT MEMSTORE_BYTES DNS_NAME ACCESS_KEY SECRET_KEY BUCKET
        load_settings
    fi
    local p
    for p in "$RGW_PORT" "$MON_PORT" "$((MON_PORT + 1))"; do
        port_free "$p" || die "port 127.0.0.1:$p is in use (set CEPH_RGW_PORT / CEPH_MON_PORT)"
    done

    local t0=$SECONDS
    trap 'on_start_exit $?' EXIT
    mkdir -p "$D"/{run,log,crash,mon/ceph-a,osd/ceph-0,rgw}
    FSID="$(cat /proc/sys/kernel/random/uuid)"
    write_conf
    cat >"$D/settings" <<EOF
RGW_PORT=$RGW_PORT
MON_PORT=$MON_PORT
MEMSTORE_BYTES=$MEMSTORE_BYTES
DNS_NAME=$DNS_NAME
ACCESS_KEY=$ACCESS_KEY
SECRET_KEY=$SECRET_KEY
BUCKET=$BUCKET
EOF
    local C=(-c "$D/ceph.conf")

    # keys
    ceph-authtool --create-keyring "$D/keyring" --gen-key -n mon. --cap mon 'allow *' >/dev/null
    ceph-authtool "$D/keyring" --gen-key -n client.admin \
        --cap mon 'allow *' --cap osd 'allow *' --cap mgr 'allow *' --cap mds 'allow *' >/dev/null

    # mon
    monmaptool --create --fsid "$FSID" \
        --addv a "[v2:127.0.0.1:$MON_PORT,v1:127.0.0.1:$((MON_PORT + 1))]" "$D/monmap" >/dev/null
    ceph-mon "${C[@]}" --mkfs -i a --monmap "$D/monmap" --keyring "$D/keyring" 2>>"$D/log/mkfs.err"
    start_daemon mon.a ceph-mon "${C[@]}" -i a
    mon_answers() { timeout 5 ceph "${C[@]}" --connect-timeout 2 mon stat >/dev/null 2>&1; }
    wait_for "the monitor" mon_answers
    log "mon up (+$((SECONDS - t0))s)"

    # osd (memstore: objects in RAM)
    local osd_uuid osd_secret osd_id
    osd_uuid="$(cat /proc/sys/kernel/random/uuid)"
    osd_secret="$(ceph-authtool --gen-print-key)"
    printf '{"cephx_secret": "%s"}\n' "$osd_secret" >"$D/osd/new.json"
    osd_id="$(timeout "$TIMEOUT" ceph "${C[@]}" osd new "$osd_uuid" -i "$D/osd/new.json")"
    [ "$osd_id" = 0 ] || die "unexpected osd id $osd_id"
    ceph-authtool --create-keyring "$D/osd/ceph-0/keyring" --name osd.0 --add-key "$osd_secret" >/dev/null
    ceph-osd "${C[@]}" -i 0 --mkfs --osd-uuid "$osd_uuid" 2>>"$D/log/mkfs.err" >/dev/null
    start_daemon osd.0 ceph-osd "${C[@]}" -i 0
    log "osd started (+$((SECONDS - t0))s)"

    # radosgw
    timeout "$TIMEOUT" ceph "${C[@]}" auth get-or-create client.rgw.gw \
        mon 'allow rw' osd 'allow rwx' mgr 'allow rw' -o "$D/rgw/keyring" >/dev/null
    start_daemon rgw radosgw "${C[@]}" -n client.rgw.gw
    rgw_answers() {
        daemon_pid rgw >/dev/null || die "radosgw exited; see $D/log/rgw.log"
        s3_answers
    }
    wait_for "radosgw on 127.0.0.1:$RGW_PORT" rgw_answers
    log "radosgw answers (+$((SECONDS - t0))s)"

    # S3 user with fixed keys, and the default bucket (signed with curl's SigV4; curl 7.88
    # does not send the payload hash S3 requires, so it is given: SHA-256 of no bytes)
    timeout "$TIMEOUT" radosgw-admin "${C[@]}" user create --uid=filestore --display-name=filestore \
        --access-key="$ACCESS_KEY" --secret-key="$SECRET_KEY" >/dev/null 2>>"$D/log/admin.err"
    local code
    code="$(curl -s -o "$D/log/create-bucket.out" -w '%{http_code}' --max-time 30 -X PUT \
        --aws-sigv4 "aws:amz:us-east-1:s3" --user "$ACCESS_KEY:$SECRET_KEY" \
        -H "x-amz-content-sha256: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855" \
        "http://127.0.0.1:$RGW_PORT/$BUCKET")"
    [ "$code" = 200 ] || die "creating bucket $BUCKET: HTTP $code: $(cat "$D/log/create-bucket.out")"
    touch "$D/ready"
    trap - EXIT
    log "ready: S3 on http://127.0.0.1:$RGW_PORT, bucket $BUCKET (+$((SECONDS - t0))s)"
    print_env
}

cmd_stop() {
    local d="${1:-}"
    [ -n "$d" ] || usage
    [ -d "$d" ] || return 0
    D="$(cd "$d" && pwd)"
    take_lock
    stop_all
}

cmd_env() {
    local d="${1:-}"
    [ -n "$d" ] || usage
    [ -d "$d" ] || die "no cluster in $d"
    D="$(cd "$d" && pwd)"
    TIMEOUT=1
    load_settings
    running || die "no cluster is running from $D (start it with: $0 start $D)"
    print_env
}

case "${1:-}" in
    install) cmd_install ;;
    start) cmd_start "${2:-}" ;;
    stop) cmd_stop "${2:-}" ;;
    env) cmd_env "${2:-}" ;;
    *) usage ;;
esac
