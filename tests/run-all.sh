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
SANDBOXD_TEST_DEPS=1 scripts/install-deps.sh
scripts/start-dockerd.sh
[ -x configure ] || autoreconf -fi >/dev/null 2>&1
jobs=$(nproc 2>/dev/null || echo 2)
status=0

# run_build DIR CONFIGURE-ARGS...: configure, build and `make check` in DIR.
run_build() {
	dir=$1; shift
	echo "==> $dir: configure $*"
	mkdir -p "$dir"
	(cd "$dir" && "$top/configure" --enable-werror "$@" >configure.out 2>&1) ||
	    { cat "$dir/configure.out"; return 1; }
	echo "==> $dir: build"
	make -C "$dir" -j"$jobs" >"$dir/build.out" 2>&1 ||
	    { tail -50 "$dir/build.out"; return 1; }
	echo "==> $dir: make check"
	make -C "$dir" -j1 check || return 1
}

run_build build-test || status=1

# valgrind over the unit tests of the plain build. test_files skips itself
# there: valgrind 3.19 does not know openat2 (ASan covers it below).
valgrind_units() {
	echo "==> build-test: unit tests under valgrind"
	mkdir -p build-test/tests/valgrind
	rc=0
	for t in test_config test_http test_id test_store test_files \
	    test_route test_docker test_agent test_agentd_tasks test_edge \
	    test_runtime; do
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
# build uses the plain build's agentd.
AGENTD="$top/build-test/agentd/agentd" \
ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1 \
    run_build build-asan --enable-asan --enable-debug || status=1
# libFuzzer: build the fuzz targets with clang and run each for a while.
fuzz() {
	echo "==> build-fuzz: configure --enable-fuzzing CC=clang"
	mkdir -p build-fuzz
	(cd build-fuzz && "$top/configure" --enable-fuzzing CC=clang \
	    >configure.out 2>&1) || { cat build-fuzz/configure.out; return 1; }
	make -C build-fuzz -j"$jobs" tests/fuzz/fuzz_http_request \
	    tests/fuzz/fuzz_http_response tests/fuzz/fuzz_http_chunked \
	    tests/fuzz/fuzz_config tests/fuzz/fuzz_token tests/fuzz/fuzz_cookie \
	    tests/fuzz/fuzz_route tests/fuzz/fuzz_h2 tests/fuzz/fuzz_pty_frame \
	    tests/fuzz/fuzz_task_event tests/fuzz/replay_task_event \
	    tests/fuzz/replay_http_request tests/fuzz/replay_http_response \
	    tests/fuzz/replay_http_chunked tests/fuzz/replay_config \
	    tests/fuzz/replay_token tests/fuzz/replay_cookie tests/fuzz/replay_route \
	    tests/fuzz/replay_h2 tests/fuzz/replay_pty_frame \
	    tests/fuzz/fuzz_api_body tests/fuzz/fuzz_workspace_path \
	    tests/fuzz/fuzz_agentd_request tests/fuzz/fuzz_agent_answer \
	    tests/fuzz/fuzz_docker_response tests/fuzz/replay_api_body \
	    tests/fuzz/replay_workspace_path tests/fuzz/replay_agentd_request \
	    tests/fuzz/replay_agent_answer tests/fuzz/replay_docker_response \
	    tests/fuzz/fuzz_term_resize tests/fuzz/replay_term_resize \
	    >build-fuzz/build.out 2>&1 ||
	    { tail -50 build-fuzz/build.out; return 1; }
	echo "==> build-fuzz: each target for ${FUZZ_SECONDS:-10} s"
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
echo "$total_p passed, $total_f failed"
exit $status
