#!/usr/bin/env bash
# make demo: mounts the samples bundled in testdata/ (repositories written by
# genuine Bupstash 0.10.3, 0.11.0, 0.11.1 and 0.12.1, and a Backupy store,
# all with public test keys) on a temporary mountpoint, shows what to try,
# and unmounts on Ctrl-C.
# DEMO_SECONDS=N unmounts by itself after N seconds (for unattended runs).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$(realpath "${1:-bin/backupfs}")
top=$PWD/testdata

work=$(mktemp -d "${TMPDIR:-/tmp}/backupfs-demo.XXXXXX")
mnt=$work/mnt
mkdir "$mnt"
cat >"$work/config.toml" <<TOML
[[bupstash]]
name = "bupstash-0.12.1"
repo = "$top/bupstash-0.12.1/repo"
key = "$top/bupstash-0.12.1/keys/primary.key"

[[bupstash]]
name = "bupstash-0.11.1"
repo = "$top/bupstash-versions/v0.11.1/repo"
key = "$top/bupstash-versions/v0.11.1/primary.key"

[[bupstash]]
name = "bupstash-0.11.0"
repo = "$top/bupstash-versions/v0.11.0/repo"
key = "$top/bupstash-versions/v0.11.0/primary.key"

[[bupstash]]
name = "bupstash-0.10.3"
repo = "$top/bupstash-versions/v0.10.3/repo"
key = "$top/bupstash-versions/v0.10.3/primary.key"

[[bupstash]]
name = "maxbupst-0.10.3"
repo = "$top/bupstash-0.10.3/small-0.10.3"
key = "$top/bupstash-0.10.3/maxbupst-testkey.key"

[[backupy]]
name = "backupy"
dir = "$top/backupy/store"
tokens = ["$top/backupy/kat1.jwt"]
views = "meta"
cache_dir = "$work/backupy-cache"
TOML

"$bin" mount --config "$work/config.toml" "$mnt" &
pid=$!
cleanup() {
	kill -INT "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 0' INT TERM

for _ in $(seq 100); do
	ls "$mnt/bupstash-0.12.1" >/dev/null 2>&1 && break
	kill -0 "$pid" 2>/dev/null || { echo "backupfs mount failed" >&2; exit 1; }
	sleep 0.1
done

show() { printf '\n$ %s\n' "$*"; eval "$@"; }
( # a subshell, so that our working directory does not keep the mount busy
cd "$mnt"
show ls
show ls bupstash-0.12.1
show ls -l bupstash-0.12.1/latest/
show ls -l bupstash-0.12.1/ids/fdd75e29487490b4ef3eb1792242fc00
show cat bupstash-0.12.1/ids/fdd75e29487490b4ef3eb1792242fc00/sub/s.txt
show getfattr -d bupstash-0.12.1/ids/fdd75e29487490b4ef3eb1792242fc00/a.txt 2>/dev/null || true
show "ls -lR backupy/co_demo"
show "head -4 backupy/co_demo/agt_1/job_sql/run_shop.sql"
show cat backupy/co_demo/agt_1/job_kat/run_kat1.bin
printf '\n# the same tree saved by Bupstash 0.10.3 and 0.11.1 (diff notes only the fifo and device it cannot compare):'
show "diff -r --no-dereference bupstash-0.10.3/ids/61f99971c78c7b8ceff91ec0374d2a10 bupstash-0.11.1/ids/21005b7805101fabe090ee972e7251fe || true"
)

cat <<TXT

Mounted at $mnt — try ls, cat, cp -a, diff -r, tar -c there.
TXT
if [ -n "${DEMO_SECONDS:-}" ]; then
	sleep "$DEMO_SECONDS"
else
	echo "Press Ctrl-C to unmount."
	wait "$pid"
fi
