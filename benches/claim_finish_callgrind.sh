#!/usr/bin/env bash
# Counts PostgreSQL's instructions for the daemon's claim and finish, next to the same
# writes as plain SQL (the drain bench's ceiling), with valgrind's callgrind: on a shared
# machine the same drain varies by a fifth between runs, the instruction count does not.
#
# Usage (as root, from the project root, after `cargo build --release`):
#   benches/claim_finish_callgrind.sh [WORKDIR]
#
# A throwaway cluster in WORKDIR (default /var/tmp/postpub-callgrind; port 5439, started
# only to migrate and fill it) gets the schema and 100,000 pending versions of as many
# documents, as `postpub bench drain` inserts them. Then single-user backends
# (`postgres --single`) on copies of it run 10 and 30 rounds of claim + finish of 500
# versions each, once as the daemon calls them (sql/queries/claim_batch.sql and
# finish_batch.sql: a no-op publish of every version) and once with the ceiling's
# statements (sql/bench/ceiling_*.sql, prepared as the bench prepares them). Rounds 11 to
# 30 are the steady state: (count of 30 - count of 10) / 20, in million instructions per
# round. The same for the claims alone tells the claim and the finish apart.
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${1:-/var/tmp/postpub-callgrind}
BIN=/usr/lib/postgresql/15/bin
POSTPUB=$PWD/target/release/postpub
[[ -x $POSTPUB ]] || { echo "build first: cargo build --release" >&2; exit 1; }
command -v valgrind >/dev/null || { echo "valgrind is not installed" >&2; exit 1; }

rm -rf "$WORK"; mkdir -p "$WORK"; chmod 777 "$WORK"
D=$WORK/pgdata
su postgres -c "$BIN/initdb -D $D -A trust -U postgres >/dev/null"
cat >> "$D/postgresql.conf" <<EOF
port = 5439
listen_addresses = '127.0.0.1'
unix_socket_directories = '$WORK'
autovacuum = off
shared_buffers = 512MB
EOF
su postgres -c "$BIN/pg_ctl -D $D -l $WORK/server.log -w start >/dev/null"
trap 'su postgres -c "$BIN/pg_ctl -D $D -w stop -m fast" >/dev/null 2>&1 || true' EXIT
PSQL="$BIN/psql -X -q -h 127.0.0.1 -p 5439 -U postgres"
$PSQL -c "create database cg"
RUST_LOG=warn "$POSTPUB" --database-url "postgres://postgres@127.0.0.1:5439/cg?sslmode=disable" migrate >/dev/null
# bench_sql FILE VALUE...: sql/bench/FILE with $1, $2, ... (and their casts) replaced by
# the values, as `postpub bench` runs it with parameters.
bench_sql() {
  local s i=1
  s=$(grep -v '^--' "sql/bench/$1"); shift
  for v in "$@"; do s=$(sed -E "s/\\\$$i(::[a-z]+)?/$v/g" <<<"$s"); i=$((i + 1)); done
  printf '%s' "$s"
}
# The bench's backlog: 100,000 documents with one pending version each.
{
  printf '%s \\gset\n' "$(bench_sql store_recipe.sql "'p { }'")"
  printf '%s;\n' "$(bench_sql insert_documents.sql 100000 1)"
  printf '%s;\n' "$(bench_sql insert_pending.sql 100000 1 :id)"
  printf 'vacuum analyze;\ncheckpoint;\n'
} | $PSQL -v ON_ERROR_STOP=1 cg >/dev/null
su postgres -c "$BIN/pg_ctl -D $D -w stop >/dev/null"
trap - EXIT

# rounds KIND N [claim]: the statements of N rounds for a single-user backend (-j: a
# statement ends with a semicolon and an empty line).
rounds() {
  python3 - "$@" <<'EOF'
import re, sys
kind, n, only_claim = sys.argv[1], int(sys.argv[2]), len(sys.argv) > 3
def sql(path):
    return "\n".join(l for l in open(path).read().splitlines() if not l.lstrip().startswith("--"))
def squash(s):  # no empty line inside a statement
    return re.sub(r"\n\s*\n", "\n", s)
# The claim's arrays the finish needs, kept between statements; out of line uncompressed,
# so that keeping them costs next to nothing (pglz on 500 document names would count).
out = ["create temp table cg_claimed (ids bigint[], tokens bigint[], documents text[], versions int[])",
       "alter table cg_claimed alter ids set storage external, alter tokens set storage external, "
       "alter documents set storage external, alter versions set storage external"]
if kind == "daemon":
    claim = sql("sql/queries/claim_batch.sql")
    claim = (claim.replace("$1::text", "'cg'").replace("$2::int", "500")
                  .replace("$3::float8", "30"))
    finish = sql("sql/queries/finish_batch.sql")
    finish = (finish.replace("$1::text", "'cg'").replace("$2::bigint[]", "c.ids")
                    .replace("$3::bigint[]", "c.tokens")
                    .replace("$9::text[]", "c.documents").replace("$10::int[]", "c.versions")
                    .replace("$4::text[]", "array_fill('publish'::text, array[cardinality(c.ids)])")
                    .replace("$5::text[]", "'{}'").replace("$6::float8[]", "'{}'")
                    .replace("$7::text[]", "'{}'").replace("$8::text[]", "'{}'"))
    finish = finish.replace("from postpub._finish(", "from cg_claimed c, postpub._finish(")
    for r in range(1, n + 1):
        c = claim.replace("$4::bigint", str(r))
        out.append(f"insert into cg_claimed select x.version_ids, x.lease_tokens, x.documents, x.versions from ({c}) x")
        if not only_claim:
            out.append(finish)
        out.append("truncate cg_claimed")
else:
    out += ["set enable_seqscan = off", "set enable_bitmapscan = off", "set jit = off",
            "set postpub.internal = on"]
    claim = sql("sql/bench/ceiling_claim.sql").replace("$1::int", "$1").replace("$2::text", "$2")
    claim = claim.replace("select u.id, u.lease_token from u",
                          "insert into cg_claimed select coalesce(array_agg(u.id), '{}'), "
                          "array[min(u.lease_token)] from u")
    finish = (sql("sql/bench/ceiling_finish.sql")
              .replace("$1::bigint[]", "(select ids from cg_claimed)::bigint[]")
              .replace("$2::text", "$1")
              .replace("$3::bigint[]", "(select tokens from cg_claimed)::bigint[]"))
    out.append("prepare claim(int, text) as " + claim)
    out.append("prepare finish(text) as " + finish)
    for _ in range(n):
        out.append("execute claim(500, 'cg')")
        if not only_claim:
            out.append("execute finish('cg')")
        out.append("truncate cg_claimed")
print(";\n\n".join(squash(s) for s in out) + ";\n")
EOF
}

# count NAME KIND N [claim]: instructions of a single-user backend running the rounds.
count() {
  local name=$1; shift
  rounds "$@" > "$WORK/$name.sql"
  rm -rf "$WORK/run"; cp -a "$D" "$WORK/run"
  su postgres -c "valgrind --tool=callgrind --callgrind-out-file=$WORK/$name.callgrind \
      $BIN/postgres --single -j -D $WORK/run cg < $WORK/$name.sql > $WORK/$name.out 2> $WORK/$name.log"
  if grep -q ERROR "$WORK/$name.log"; then
    grep -m1 ERROR "$WORK/$name.log" >&2; exit 1
  fi
  sed -n 's/.*Collected : \([0-9]*\).*/\1/p' "$WORK/$name.log"
}

per_round() { python3 -c "print(f'{($2 - $1) / 20e6:.1f}')" ; }
for kind in daemon ceiling; do
  all10=$(count "$kind-10" "$kind" 10); all30=$(count "$kind-30" "$kind" 30)
  c10=$(count "$kind-claim-10" "$kind" 10 claim); c30=$(count "$kind-claim-30" "$kind" 30 claim)
  all=$(per_round "$all10" "$all30"); claim=$(per_round "$c10" "$c30")
  finish=$(python3 -c "print(f'{$all - $claim:.1f}')")
  echo "$kind: $all million instructions per round of 500 (claim $claim, finish $finish)"
done
rm -rf "$WORK/run"
