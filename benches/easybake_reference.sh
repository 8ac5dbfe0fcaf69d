#!/usr/bin/env bash
# Times the Python reference baker (cnx-easybake 1.2.8) on a book, for a
# side-by-side comparison with postpub's collation engine on the same input.
#
# Usage: benches/easybake_reference.sh BOOK.html RECIPE.css [OUT.html]
#
# `postpub bench collate --mb 10 --reference benches/easybake_reference.sh` writes the
# generated book and recipe, runs this script on them and reports both side by side. By
# hand, on any book: benches/easybake_reference.sh BOOK.html RECIPE.css, next to
#   /usr/bin/time -v target/release/postpub bake RECIPE.css BOOK.html -o OUT.html
#
# Prints: easybake_seconds=<wall> cpu_seconds=<user+sys> rss_mb=<peak>
# The reference is installed on first use into $EASYBAKE_VENV (default
# /tmp/easybake-venv), with the dependency versions known to work on
# Python 3.11 (1.2.8 pins an lxml that no longer builds).
set -euo pipefail
BOOK=${1:?usage: easybake_reference.sh BOOK.html RECIPE.css [OUT.html]}
RECIPE=${2:?usage: easybake_reference.sh BOOK.html RECIPE.css [OUT.html]}
OUT=${3:-$(mktemp /tmp/easybake-out.XXXXXX.html)}
VENV=${EASYBAKE_VENV:-/tmp/easybake-venv}
if [ ! -x "$VENV/bin/cnx-easybake" ]; then
  python3 -m venv "$VENV" >&2
  "$VENV/bin/pip" install -q --no-deps cnx-easybake==1.2.8 >&2
  "$VENV/bin/pip" install -q lxml==4.9.4 tinycss2==0.6.1 cnx-cssselect2==0.2.3 cssselect PyICU >&2
fi
[ -x /usr/bin/time ] || { echo "needs /usr/bin/time (apt-get install time)" >&2; exit 1; }
TIMEF=$(mktemp /tmp/easybake-time.XXXXXX)
t0=$(date +%s.%N)
/usr/bin/time -v -o "$TIMEF" "$VENV/bin/cnx-easybake" -q "$RECIPE" "$BOOK" "$OUT"
t1=$(date +%s.%N)
rss_kb=$(awk -F': *' '/Maximum resident set size/ {print $2}' "$TIMEF")
cpu=$(awk -F': *' '/User time/ {u=$2} /System time/ {s=$2} END {printf "%.2f", u + s}' "$TIMEF")
rm -f "$TIMEF"
awk -v a="$t0" -v b="$t1" -v c="$cpu" -v r="$rss_kb" \
  'BEGIN { printf "easybake_seconds=%.3f cpu_seconds=%s rss_mb=%d\n", b - a, c, (r + 512) / 1024 }'
echo "output: $OUT" >&2
