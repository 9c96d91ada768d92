#!/bin/sh
# Build the POP3 session fuzz target (libFuzzer + ASan + UBSan, clang) and
# run it against tests/fuzz/corpus.
#   tools/fuzz.sh [SECONDS]      default 60 (or $FUZZ_SECONDS)
# Objects, new corpus entries and crash artifacts go to $FUZZ_BUILD
# (default build/fuzz); the committed seeds are only read.
set -eu
cd "$(dirname "$0")/.."
secs=${1:-${FUZZ_SECONDS:-60}}
out=${FUZZ_BUILD:-build/fuzz}
cc=${FUZZ_CC:-clang}
cflags="-std=c11 -D_GNU_SOURCE -Iinclude -g -O1 -fno-omit-frame-pointer
-Wall -Wextra -Werror -fsanitize=address,undefined -fno-sanitize-recover=all"

command -v "$cc" >/dev/null || { echo "fuzz.sh: $cc not found" >&2; exit 1; }
mkdir -p "$out/obj" "$out/corpus"
objs=""
for src in src/*/*.c; do
	obj="$out/obj/$(basename "$src" .c).o"
	# Rebuild when the source or any header is newer than the object.
	if [ ! -f "$obj" ] || [ "$src" -nt "$obj" ] ||
	    [ -n "$(find include src -newer "$obj" -name '*.h' | head -n 1)" ]; then
		# A module the target does not need may be mid-edit: warn and
		# go on; the link below fails only if it is really needed.
		if ! $cc $cflags -fsanitize=fuzzer-no-link -c -o "$obj" \
		    "$src"; then
			echo "fuzz.sh: $src does not compile, left out" >&2
			rm -f "$obj"
			continue
		fi
	fi
	objs="$objs $obj"
done
rm -f "$out/libsdps.a"
# shellcheck disable=SC2086
ar rcs "$out/libsdps.a" $objs
$cc $cflags -fsanitize=fuzzer -o "$out/fuzz_session" \
    tests/fuzz/fuzz_session.c "$out/libsdps.a" -llmdb -lsodium -linih \
    -lssl -lcrypto -lpthread
echo "fuzz.sh: running $out/fuzz_session for $secs s"
exec "$out/fuzz_session" -max_total_time="$secs" -timeout=30 \
    -max_len=2048 -artifact_prefix="$out/" -print_final_stats=1 \
    "$out/corpus" tests/fuzz/corpus
