#!/usr/bin/env bash
# Runs every Go fuzz target of the module for $FUZZTIME (default 10s) each.
set -euo pipefail
cd "$(dirname "$0")/.."
fuzztime=${FUZZTIME:-10s}
status=0
for pkg in $(go list ./...); do
	# A package whose tests do not build would list no targets: say so
	# and fail, rather than skip its fuzzers silently.
	if ! listed=$(go test -list '^Fuzz' "$pkg"); then
		echo "== $pkg: cannot list fuzz targets" >&2
		status=1
		continue
	fi
	for target in $(grep '^Fuzz' <<<"$listed" || true); do
		echo "== $pkg $target ($fuzztime)"
		if ! go test -run '^$' -fuzz "^${target}\$" -fuzztime "$fuzztime" "$pkg"; then
			status=1
		fi
	done
done
exit $status
