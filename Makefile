# tern — GNU make build.  `make run` starts a development server, `make check` runs
# every test (unit, integration, the same integration tests under ASan+UBSan, fuzz smoke).

CC        ?= cc
BUILD     ?= build
PYTHON    ?= /usr/bin/python3
PKGS      := libevent_core libevent_openssl libevent_pthreads openssl libunbound sqlite3 libcrypt inih

# Run the dependency installer before anything reads pkg-config (bare Debian machine).
ifeq ($(filter deps clean,$(MAKECMDGOALS)),)
ifneq ($(TERN_SKIP_DEPS),1)
$(shell sh tools/deps.sh >&2)
endif
endif

WARN      := -Wall -Wextra -Werror -Wshadow -Wno-unused-parameter -Wformat=2 -Wno-format-truncation -Wvla
CFLAGS    ?= -O2 -g
ifeq ($(SAN),1)
CFLAGS    := -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined
LDFLAGS   += -fsanitize=address,undefined
endif
ALL_CFLAGS := -std=gnu11 -D_GNU_SOURCE -Isrc $(WARN) $(CFLAGS) $(shell pkg-config --cflags $(PKGS))
LIBS      := $(shell pkg-config --libs $(PKGS)) -lpthread
TEST_LIBS := $(shell pkg-config --libs cmocka)

SRCS      := $(wildcard src/*/*.c)
OBJS      := $(SRCS:%.c=$(BUILD)/%.o)

# Which modules a module may use (the layers of ../shared/STYLE.md); unit tests link
# only their module and these.
DEPS_base      :=
DEPS_event     := base
DEPS_msg       := base
DEPS_dns       := base event
DEPS_tls       := base
DEPS_auth      := base msg
DEPS_directory := base msg auth
DEPS_mailauth  := base msg dns
DEPS_store     := base msg
DEPS_queue     := base msg
DEPS_smtp      := base event msg tls auth
DEPS_imap      := base event msg tls auth store
DEPS_pop3      := base event msg tls auth store
DEPS_delivery  := base event msg dns tls auth directory store queue smtp
DEPS_cli       := base event msg dns tls auth directory store queue

mod_objs   = $(patsubst %.c,$(BUILD)/%.o,$(wildcard src/$(1)/*.c))
test_objs  = $(foreach m,$(1) $(DEPS_$(1)),$(call mod_objs,$(m)))

UNIT_SRCS := $(wildcard tests/unit/*/*_test.c)
UNIT_BINS := $(UNIT_SRCS:%.c=$(BUILD)/%)

FUZZ_SRCS := $(wildcard fuzz/fuzz_*.c)
FUZZ_BINS := $(FUZZ_SRCS:fuzz/%.c=$(BUILD)/fuzz/%)

.PHONY: all deps run check docs-check unit integration asan-integration fuzz fuzz-smoke layers clean bench format

all: $(BUILD)/tern

deps:
	sh tools/deps.sh

$(BUILD)/tern: $(OBJS)
	$(CC) $(LDFLAGS) -o $@ $^ $(LIBS)

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -MMD -MP -c -o $@ $<

.SECONDEXPANSION:
$(BUILD)/tests/unit/%_test: tests/unit/%_test.c $$(call test_objs,$$(firstword $$(subst /, ,$$*)))
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) $(LDFLAGS) -o $@ $< $(filter %.o,$^) $(LIBS) $(TEST_LIBS)

run: $(BUILD)/tern
	./$(BUILD)/tern serve --dev

layers:
	sh tools/check-layers

unit: $(UNIT_BINS)
	@set -e; for t in $(UNIT_BINS); do echo "== $$t"; ./$$t; done

integration: $(BUILD)/tern
	TERN_BIN=$(abspath $(BUILD)/tern) $(PYTHON) -m pytest -q tests/integration

asan-integration:
	$(MAKE) BUILD=build-asan SAN=1 TERN_SKIP_DEPS=1 build-asan/tern
	TERN_BIN=$(abspath build-asan/tern) TERN_SANITIZED=1 \
	  ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  $(PYTHON) -m pytest -q tests/integration

# libFuzzer targets: each links the parser it fuzzes (and what it depends on), built by clang.
FUZZ_CFLAGS := -std=gnu11 -D_GNU_SOURCE -Isrc -g -O1 -fsanitize=fuzzer,address,undefined
mod_srcs   = $(foreach m,$(1) $(DEPS_$(1)),$(wildcard src/$(m)/*.c))
fuzz_mod   = $(word 2,$(subst _, ,$(1)))
$(BUILD)/fuzz/%: fuzz/%.c $$(call mod_srcs,$$(call fuzz_mod,$$*))
	@mkdir -p $(dir $@)
	clang $(FUZZ_CFLAGS) $(shell pkg-config --cflags $(PKGS)) -o $@ $(filter %.c,$^) $(LIBS)

fuzz: $(FUZZ_BINS)

fuzz-smoke: $(FUZZ_BINS)
	@for f in $(FUZZ_BINS); do n=$$(basename $$f); mkdir -p $(BUILD)/fuzz/corpus-$$n; \
	  echo "== $$n"; \
	  if ./$$f -max_total_time=$${FUZZ_SECONDS:-15} -dict=fuzz/$$n.dict \
	       -artifact_prefix=$(BUILD)/fuzz/$$n- $(BUILD)/fuzz/corpus-$$n fuzz/corpus/$$n \
	       > $(BUILD)/fuzz/$$n.log 2>&1; then tail -1 $(BUILD)/fuzz/$$n.log; \
	  else tail -40 $(BUILD)/fuzz/$$n.log; echo "fuzz: $$n failed"; exit 1; fi; done

docs-check: $(BUILD)/tern
	@./$(BUILD)/tern config reference | diff -u docs/configuration.md - \
	  || { echo "docs/configuration.md is stale: run ./$(BUILD)/tern config reference > docs/configuration.md"; exit 1; }

check: all layers docs-check unit integration asan-integration fuzz-smoke

format:
	clang-format -i src/*/*.c src/*/*.h tests/unit/*/*.c fuzz/*.c

clean:
	rm -rf build build-asan

-include $(OBJS:.o=.d)
