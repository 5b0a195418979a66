#!/bin/sh
# The whole test suite, on a fresh Debian 12 machine as root:
#   1. installs the build and test dependencies, starts dockerd;
#   2. builds and runs `make check` (unit tests, fuzz-corpus replays,
#      black-box scenarios against real dockerd and containers);
#   3. runs the unit tests under valgrind (memcheck, leaks);
#   4. does it all again with AddressSanitizer and UndefinedBehaviorSanitizer;
#   5. runs each libFuzzer target for FUZZ_SECONDS (default 10) with clang.
# Ends with one line "N passed, N failed" summed over every test program.
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
# say MSG: a phase's heading, with the time (the suite must stay well under
# an hour: this shows which phase grew).
say() { echo "==> $* ($(date -u +%H:%M:%S))"; }
say "start"
SANDBOXD_TEST_DEPS=1 scripts/install-deps.sh
scripts/start-dockerd.sh
[ -x configure ] || autoreconf -fi >/dev/null 2>&1
jobs=$(nproc 2>/dev/null || echo 2)
status=0

# run_build DIR CONFIGURE-ARGS...: configure, build and `make check` in DIR.
run_build() {
	dir=$1; shift
	say "$dir: configure $*"
	mkdir -p "$dir"
	(cd "$dir" && "$top/configure" --enable-werror "$@" >configure.out 2>&1) ||
	    { cat "$dir/configure.out"; return 1; }
	say "$dir: build"
	make -C "$dir" -j"$jobs" >"$dir/build.out" 2>&1 ||
	    { tail -50 "$dir/build.out"; return 1; }
	say "$dir: make check"
	make -C "$dir" -j1 check || return 1
}

run_build build-test || status=1

# valgrind over the unit tests of the plain build. test_files skips itself
# there: valgrind 3.19 does not know openat2 (ASan covers it below).
valgrind_units() {
	say "build-test: unit tests under valgrind"
	mkdir -p build-test/tests/valgrind
	rc=0
	for t in test_config test_http test_id test_store test_files \
	    test_route test_docker test_agent test_agentd_tasks test_edge \
	    test_runtime test_evalloc; do
		log=build-test/tests/valgrind/$t.log
		top_srcdir=$top \
		    top_builddir=$top/build-test valgrind -q \
		    --error-exitcode=99 --leak-check=full \
		    --errors-for-leak-kinds=definite,indirect \
		    build-test/tests/unit/$t >"$log" 2>&1
		r=$?
		case $r in
		0|77)	echo "valgrind: $t: $(tail -1 "$log")" ;;
		*)	echo "valgrind: $t FAILED (exit $r):"; tail -30 "$log"
			rc=1 ;;
		esac
	done
	return $rc
}
valgrind_units || status=1
# agentd runs inside busybox containers and must be static: the sanitizer
# build uses the plain build's agentd. SANDBOXD_SANITIZER_PASS tells the
# tests that do not use the build (the install test builds from source in
# a root filesystem of its own) that the plain pass ran them already.
AGENTD="$top/build-test/agentd/agentd" SANDBOXD_SANITIZER_PASS=1 \
ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1 \
    run_build build-asan --enable-asan --enable-debug || status=1
# libFuzzer: build the fuzz targets with clang and run each for a while.
fuzz() {
	say "build-fuzz: configure --enable-fuzzing CC=clang"
	mkdir -p build-fuzz
	(cd build-fuzz && "$top/configure" --enable-fuzzing CC=clang \
	    >configure.out 2>&1) || { cat build-fuzz/configure.out; return 1; }
	# Every target replay-all.sh lists (its targets= lines), so none is
	# listed there and never built here.
	fuzz_targets=$(targets=; eval "$(grep '^targets=' tests/fuzz/replay-all.sh)"
	    echo $targets)
	progs=""
	for t in $fuzz_targets; do
		progs="$progs tests/fuzz/fuzz_$t tests/fuzz/replay_$t"
	done
	# shellcheck disable=SC2086
	make -C build-fuzz -j"$jobs" $progs \
	    >build-fuzz/build.out 2>&1 ||
	    { tail -50 build-fuzz/build.out; return 1; }
	say "build-fuzz: each target for ${FUZZ_SECONDS:-10} s"
	top_srcdir=$top top_builddir=$top/build-fuzz \
	    FUZZ_SECONDS=${FUZZ_SECONDS:-10} tests/fuzz/replay-all.sh \
	    >build-fuzz/tests-fuzz.log 2>&1
	rc=$?
	cat build-fuzz/tests-fuzz.log
	return $rc
}
if command -v clang >/dev/null; then
	fuzz || status=1
fi

# One closing line over every test program's own "N passed, N failed".
total_p=0; total_f=0
for log in $(find build-test build-asan build-fuzz -name '*.log' \
    -path '*tests*' 2>/dev/null); do
	line=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$log" | tail -1) || continue
	p=${line%% passed*}; f=${line#*passed, }; f=${f%% failed*}
	total_p=$((total_p + p)); total_f=$((total_f + f))
done
[ $status -ne 0 ] && [ $total_f -eq 0 ] && total_f=1
say "done"
echo "$total_p passed, $total_f failed"
exit $status
