#!/bin/sh
# Back up and restore the GRACE Redis data; runs inside a container of the redis image.
# docs/operations.md shows the Compose and Kubernetes commands around it.
#
#   redis-data.sh backup
#       In the running Redis container: a consistent RDB snapshot (BGSAVE), copied to
#       $DATA/backups/dump-<UTC time>.rdb; prints that path.
#   redis-data.sh restore FILE
#       With the real Redis stopped, in a one-off container on the same /data volume: load FILE
#       and write a fresh append-only file from it, then stop. The old append-only directory is
#       kept beside it. Needed because Redis with `appendonly yes` starts from its AOF and would
#       ignore (and later overwrite) a dump.rdb simply copied into place.
set -eu

DATA=${REDIS_DATA_DIR:-/data}
# Large datasets take a while to load and rewrite; fail loudly rather than wait forever.
WAIT_SECONDS=${REDIS_WAIT_SECONDS:-3600}

fail() {
    echo "redis-data: $*" >&2
    exit 1
}

# The Redis being backed up; REDIS_CLI_ARGS may hold several arguments ("-h redis -p 6379"),
# so it is split on purpose.
server_cli() {
    # shellcheck disable=SC2086
    redis-cli ${REDIS_CLI_ARGS:-} "$@"
}

# The private server of a restore, on a unix socket only.
restore_cli() {
    redis-cli -s "$socket" "$@"
}

# info_field FIELD CLI: one field of INFO persistence, asked through the CLI function.
info_field() {
    field=$1
    shift
    "$@" INFO persistence | tr -d '\r' | sed -n "s/^${field}://p"
}

# wait_until DESCRIPTION COMMAND...: poll a shell test every 0.2 s until it holds.
wait_until() {
    what=$1
    shift
    waited=0
    until "$@"; do
        sleep 0.2
        waited=$((waited + 1))
        [ "$waited" -le $((WAIT_SECONDS * 5)) ] || fail "gave up waiting for $what after ${WAIT_SECONDS}s"
    done
}

backup() {
    # A counter of completed saves (LASTSAVE has one-second resolution, too coarse to tell).
    before=$(info_field rdb_saves server_cli)
    [ -n "$before" ] || fail "no Redis answers with REDIS_CLI_ARGS='${REDIS_CLI_ARGS:-}'"
    # SCHEDULE: if a rewrite is running, the save starts as soon as it ends instead of failing.
    server_cli BGSAVE SCHEDULE >/dev/null
    settled() {
        [ "$(info_field rdb_bgsave_in_progress server_cli)" = 0 ] && {
            [ "$(info_field rdb_saves server_cli)" -gt "$before" ] ||
                [ "$(info_field rdb_last_bgsave_status server_cli)" = err ]
        }
    }
    wait_until "BGSAVE" settled
    [ "$(info_field rdb_last_bgsave_status server_cli)" = ok ] || fail "BGSAVE failed; see the Redis log"
    mkdir -p "$DATA/backups"
    target="$DATA/backups/dump-$(date -u +%Y%m%dT%H%M%SZ).rdb"
    # Redis replaces dump.rdb by rename, so this copy never sees a half-written file.
    cp "$DATA/dump.rdb" "$target.partial"
    mv "$target.partial" "$target"
    echo "$target"
}

restore() {
    source_file=$1
    [ -f "$source_file" ] || fail "no backup file $source_file"
    if server_cli PING >/dev/null 2>&1; then
        fail "a Redis server answers; stop it first (docs/operations.md, Restore)"
    fi
    stamp=$(date -u +%Y%m%dT%H%M%SZ)
    if [ -d "$DATA/appendonlydir" ]; then
        mv "$DATA/appendonlydir" "$DATA/appendonlydir.before-restore-$stamp"
    fi
    if [ "$(realpath "$source_file")" != "$(realpath -m "$DATA/dump.rdb")" ]; then
        cp "$source_file" "$DATA/dump.rdb"
    fi
    socket="/tmp/redis-restore-$$.sock"
    # No TCP port, no RDB saves: only this script talks to it, and only the AOF is written.
    redis-server --dir "$DATA" --dbfilename dump.rdb --appendonly no --save "" \
        --port 0 --unixsocket "$socket" --daemonize yes --logfile "$DATA/restore-$stamp.log"
    answers() { [ "$(restore_cli PING 2>/dev/null)" = PONG ]; }
    wait_until "Redis to load $source_file" answers
    keys=$(restore_cli DBSIZE)
    rewrites=$(info_field aof_rewrites restore_cli)
    # Turning AOF on at run time writes a new AOF from the loaded dataset (a rewrite).
    restore_cli CONFIG SET appendonly yes >/dev/null
    rewritten() {
        [ "$(info_field aof_rewrite_in_progress restore_cli)" = 0 ] &&
            [ "$(info_field aof_rewrite_scheduled restore_cli)" = 0 ] && {
            [ "$(info_field aof_rewrites restore_cli)" -gt "$rewrites" ] ||
                [ "$(info_field aof_last_bgrewrite_status restore_cli)" = err ]
        }
    }
    wait_until "the append-only file rewrite" rewritten
    [ "$(info_field aof_last_bgrewrite_status restore_cli)" = ok ] ||
        fail "AOF rewrite failed; see $DATA/restore-$stamp.log"
    restore_cli SHUTDOWN >/dev/null 2>&1 || true
    gone() { ! answers; }
    wait_until "Redis to stop" gone
    echo "restored $keys keys from $source_file into $DATA (previous AOF kept as appendonlydir.before-restore-$stamp)"
}

case "${1:-}" in
    backup) backup ;;
    restore)
        [ $# -eq 2 ] || fail "usage: redis-data.sh restore FILE"
        restore "$2"
        ;;
    *) fail "usage: redis-data.sh backup | redis-data.sh restore FILE" ;;
esac
