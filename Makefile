# Thin wrapper over CMake. The README's two commands: `make demo` and `make test`.
BUILD ?= build
ASAN_BUILD ?= build-asan
FUZZ_BUILD ?= build-fuzz
FUZZ_SECONDS ?= 20
JOBS ?= 2
PY ?= /usr/bin/python3
PREFIX ?= /usr/local
DESTDIR ?=

.PHONY: all build demo test test-asan fuzz fuzz-build ref bench setup install uninstall clean

all: build

build:
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release >/dev/null
	@cmake --build $(BUILD) -j$(JOBS)

setup:
	@sh scripts/setup.sh

demo: setup build
	@sh scripts/demo.sh $(BUILD)

test: build
	@sh scripts/run_tests.sh $(BUILD)

test-asan:
	@cmake -S . -B $(ASAN_BUILD) -DCMAKE_BUILD_TYPE=Debug -DDAMO_SANITIZE=ON >/dev/null
	@cmake --build $(ASAN_BUILD) -j$(JOBS)
	@DAMO_TEST_QUICK=1 sh scripts/run_tests.sh $(ASAN_BUILD)

# libFuzzer harnesses (clang, ASan + UBSan) of every reader, in their own build folder;
# `make fuzz` runs each for FUZZ_SECONDS on a scratch copy of its seed corpus
# (FUZZ=name[,name...] picks harnesses) and fails on any crash, leak, hang or OOM.
fuzz-build:
	@cmake -S . -B $(FUZZ_BUILD) -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=Debug -DDAMO_FUZZ=ON >/dev/null
	@cmake --build $(FUZZ_BUILD) -j$(JOBS)

fuzz: fuzz-build
	@FUZZ_SECONDS=$(FUZZ_SECONDS) sh scripts/fuzz.sh $(FUZZ_BUILD) $(FUZZ)

# Regenerates the PyTorch fixtures under tests/fixtures (needs Debian's python3-torch).
ref:
	@sh scripts/setup.sh --peer
	@for s in tests/ref/gen_*.py tests/ref/make_*.py; do echo "$(PY) $$s"; $(PY) $$s || exit 1; done
	@for s in tests/ref/gen_*.mjs; do echo "node $$s"; node $$s || exit 1; done

# The library (libdamo.so.0, libdamo.a), damo.h, damo.pc, the CMake package, the damo
# program and its man page under PREFIX, staged below DESTDIR when given. The build folder
# is configured with PREFIX (damo.pc names it), the installed targets are built, then
# installed (as root, ldconfig then sees the new libdamo.so.0); $(BUILD)/install_manifest.txt
# lists the files (below PREFIX), which `make uninstall` (with the same DESTDIR) removes.
install:
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX="$(PREFIX)" >/dev/null
	@cmake --build $(BUILD) -j$(JOBS) --target damo damo_shared damo_cli
	@DESTDIR="$(DESTDIR)" cmake --install $(BUILD)
	@if [ -z "$(DESTDIR)" ] && [ "$$(id -u)" = 0 ] && command -v ldconfig >/dev/null; then ldconfig; fi

uninstall:
	@test -f $(BUILD)/install_manifest.txt || { echo "uninstall: no $(BUILD)/install_manifest.txt (nothing installed from $(BUILD))"; exit 1; }
	@while IFS= read -r f || [ -n "$$f" ]; do \
	  if [ -e "$(DESTDIR)$$f" ] || [ -L "$(DESTDIR)$$f" ]; then rm -f "$(DESTDIR)$$f" && echo "-- Removed: $(DESTDIR)$$f"; fi; \
	done < $(BUILD)/install_manifest.txt
	@sed -n 's|/damoConfig\.cmake$$||p' $(BUILD)/install_manifest.txt | while IFS= read -r d; do rmdir "$(DESTDIR)$$d" 2>/dev/null || true; done
	@rm -f $(BUILD)/install_manifest.txt

bench: build
	@sh bench/run.sh $(BUILD)

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(FUZZ_BUILD)
