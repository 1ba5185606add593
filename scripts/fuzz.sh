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
		# Minimizing a new input runs until it reproduces the input's new
		# coverage, for up to a minute by default; code whose coverage is
		# not quite deterministic (map order, first-call paths) then
		# spends the whole run minimizing: FuzzIndexReader ran 16 inputs in
		# 10 s. A bounded number of tries keeps fuzzing exploring.
		if ! go test -run '^$' -fuzz "^${target}\$" -fuzztime "$fuzztime" -fuzzminimizetime "${FUZZMINIMIZE:-200x}" "$pkg"; then
			status=1
		fi
	done
done
exit $status
