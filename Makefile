# sdps build.  Objects go to $(BUILD) so several builds (gcc, clang,
# sanitizers) can live side by side: make BUILD=build/clang CC=clang
CC	?= cc
BUILD	?= build
CFLAGS	?= -O2 -g
SAN	?=
PREFIX	?= /usr/local
DESTDIR	?=
PY	?= /usr/bin/python3

WARN	 = -Wall -Wextra -Werror -Wformat=2 -Wshadow -Wstrict-prototypes \
	   -Wmissing-prototypes
ALL_CFLAGS = -std=c11 -D_GNU_SOURCE -Iinclude $(WARN) $(CFLAGS) $(SAN) -MMD -MP
LDLIBS	 = -llmdb -lsodium -linih -lssl -lcrypto -lpthread

# Every src/sdps*.c is a program's thin main(); the modules, one directory
# per part (docs/design.md §16), make libsdps.a.
MAIN_SRC = $(wildcard src/sdps*.c)
LIB_SRC	 = $(wildcard src/*/*.c)
LIB_OBJ	 = $(LIB_SRC:src/%.c=$(BUILD)/obj/%.o)
BINS	 = $(MAIN_SRC:src/%.c=$(BUILD)/%)
TOOL_SRC = $(wildcard tools/*.c)
TOOLS	 = $(TOOL_SRC:tools/%.c=$(BUILD)/tools/%)
UNIT_SRC = $(wildcard tests/unit/test_*.c)
UNITS	 = $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)
LIB	 = $(BUILD)/libsdps.a

# Keep the mains' objects (make would delete them as intermediates).
.SECONDARY:

.PHONY: all deps test test-run unit integration check install clean run fuzz bench
all: $(BINS) $(TOOLS) $(UNITS)

$(BUILD)/obj/%.o: src/%.c
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -c -o $@ $<

$(LIB): $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/%: $(BUILD)/obj/%.o $(LIB)
	$(CC) $(ALL_CFLAGS) -o $@ $< $(LIB) $(LDLIBS)

$(BUILD)/tools/%: tools/%.c $(LIB)
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -o $@ $< $(LIB) $(LDLIBS)

$(BUILD)/tests/%: tests/unit/%.c $(LIB)
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -o $@ $< $(LIB) $(LDLIBS) -lcmocka

deps:
	@tools/deps.sh

test: deps
	$(MAKE) test-run

test-run: all
	$(MAKE) unit integration

unit: $(UNITS)
	@set -e; for t in $(UNITS); do echo "== $$t"; $$t; done

integration: $(BINS) $(TOOLS)
	SDPS_BIN=$(abspath $(BUILD)) $(PY) -m pytest -x -q tests/integration

# The same tests under ASan+UBSan, in their own build directory.  Reports
# go to files, so one from a daemon worker (whose stderr is a test's log
# file) fails the run too.
SANLOGS	 = $(abspath build/san/sanlogs)
check: deps
	rm -rf $(SANLOGS) && mkdir -p $(SANLOGS)
	ASAN_OPTIONS=log_path=$(SANLOGS)/asan \
	UBSAN_OPTIONS=log_path=$(SANLOGS)/ubsan:print_stacktrace=1 \
	    $(MAKE) BUILD=build/san CFLAGS="-O1 -g -fno-omit-frame-pointer" \
	    SAN="-fsanitize=address,undefined -fno-sanitize-recover=all" test-run
	@if grep -l -E 'ERROR: [A-Za-z]+Sanitizer|runtime error:' \
	    $(SANLOGS)/* 2>/dev/null; then cat $(SANLOGS)/*; \
	    echo "sanitizer reports in $(SANLOGS)"; exit 1; fi

run: deps
	$(MAKE) all
	@tools/demo.sh $(abspath $(BUILD))

fuzz:
	@tools/fuzz.sh

# The units name /usr/local/sbin; rewrite that for another PREFIX.
MANDIR	?= $(PREFIX)/share/man
install: $(BINS)
	install -d $(DESTDIR)$(PREFIX)/sbin $(DESTDIR)/etc/sdps \
	    $(DESTDIR)/lib/systemd/system $(DESTDIR)/usr/lib/sysusers.d \
	    $(DESTDIR)/usr/lib/tmpfiles.d \
	    $(DESTDIR)$(MANDIR)/man5 $(DESTDIR)$(MANDIR)/man8
	install -m 755 $(BINS) $(DESTDIR)$(PREFIX)/sbin/
	install -m 644 man/*.8 $(DESTDIR)$(MANDIR)/man8/
	install -m 644 man/*.5 $(DESTDIR)$(MANDIR)/man5/
	test -e $(DESTDIR)/etc/sdps/sdps.conf || \
	    install -m 644 config/sdps.conf $(DESTDIR)/etc/sdps/sdps.conf
	for u in systemd/*.service systemd/*.timer; do \
	    sed 's|/usr/local/|$(PREFIX)/|g' $$u > \
	        $(DESTDIR)/lib/systemd/system/$${u#systemd/} || exit 1; \
	done
	install -m 644 systemd/sdps.sysusers $(DESTDIR)/usr/lib/sysusers.d/sdps.conf
	install -m 644 systemd/sdps.tmpfiles $(DESTDIR)/usr/lib/tmpfiles.d/sdps.conf

clean:
	rm -rf build

-include $(LIB_OBJ:.o=.d) $(MAIN_SRC:src/%.c=$(BUILD)/obj/%.d)
