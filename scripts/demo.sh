#!/usr/bin/env bash
# Shows backupfs's readers on the sample repositories bundled in testdata/
# (written by genuine Bupstash 0.10.3 to 0.12.1, with public test keys).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$(realpath "${1:-bin/backupfs}")
repo=testdata/bupstash-0.12.1/repo
key=testdata/bupstash-0.12.1/keys/primary.key

show() { printf '\n$ %s\n' "$*"; "$@"; }

show "$bin" list --repo "$repo" --key "$key"
show "$bin" ls --repo "$repo" --key "$key" fdd75e29
show "$bin" cat --repo "$repo" --key "$key" fdd75e29 sub/s.txt
printf '\n$ %s | tar -tvf - 2>/dev/null | sed -n 1,5p\n' "$bin cat --repo $repo --key $key fdd75e29"
# GNU tar warns about the 1969 mtime as Bupstash encodes it; list anyway.
set +o pipefail
"$bin" cat --repo "$repo" --key "$key" fdd75e29 | tar -tvf - 2>/dev/null | sed -n 1,5p
set -o pipefail
printf '\nTry the other samples too, e.g.\n  %s list --repo testdata/bupstash-versions/v0.10.3/repo --key testdata/bupstash-versions/v0.10.3/primary.key\n' "$bin"
