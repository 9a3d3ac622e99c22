# Thin wrapper over CMake. The README's two commands: `make demo` and `make test`.
BUILD ?= build
ASAN_BUILD ?= build-asan
JOBS ?= 2
PY ?= /usr/bin/python3

.PHONY: all build demo test test-asan ref bench setup clean

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

# Regenerates the PyTorch fixtures under tests/fixtures (needs Debian's python3-torch).
ref:
	@sh scripts/setup.sh --peer
	@for s in tests/ref/gen_*.py tests/ref/make_*.py; do echo "$(PY) $$s"; $(PY) $$s || exit 1; done
	@for s in tests/ref/gen_*.mjs; do echo "node $$s"; node $$s || exit 1; done

bench: build
	@sh bench/run.sh $(BUILD)

clean:
	rm -rf $(BUILD) $(ASAN_BUILD)
