# kv: the two commands a newcomer runs.
#   make demo   installs what is missing, builds, starts a local cluster
#   make test   installs what is missing, builds, runs every test
#               (and the unit tests again under ASan+UBSan)
JOBS ?= $(shell nproc 2>/dev/null || echo 2)
BUILD ?= build
ASAN_BUILD ?= build-asan
CMAKE_TYPE ?= RelWithDebInfo

.PHONY: all deps build asan test test-release test-asan test-asan-cluster demo soak jepsen bench bench-quick format clean

all: build

deps:
	@scripts/install-deps

build: deps
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=$(CMAKE_TYPE) >/dev/null
	cmake --build $(BUILD) -j$(JOBS)

asan: deps
	cmake -S . -B $(ASAN_BUILD) -DCMAKE_BUILD_TYPE=Debug -DKV_SANITIZE=ON >/dev/null
	cmake --build $(ASAN_BUILD) -j$(JOBS)

test: build asan
	$(MAKE) --no-print-directory test-release test-asan

test-release:
	cd $(BUILD) && ctest --output-on-failure -j$(JOBS)

# The sanitizer build runs the unit tests (label "unit").
test-asan:
	cd $(ASAN_BUILD) && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
		UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
		ctest -L unit --output-on-failure -j$(JOBS)

# The real-process tests against the sanitizer build too (kvd, kvcli and the
# library under ASan+UBSan, leaks checked at every clean exit). Slower; not
# part of make test.
test-asan-cluster: asan
	cd $(ASAN_BUILD) && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
		UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
		ctest -L cluster --output-on-failure -j$(JOBS)

demo: build
	@KV_BUILD=$(BUILD) scripts/demo

# Longer runs than CI's: see README "Testing".
soak: build
	$(BUILD)/bin/raft-sim --seeds 100000 --nodes 3
	$(BUILD)/bin/raft-sim --seeds 50000 --nodes 5

# kv under faults for an hour (JEPSEN_MINUTES): tests/jepsen-lite/run over
# random seeds, 3 and 5 nodes, every nemesis; stops at the first failure
# with its replay command. Needs root (namespaces, FUSE) for the partition
# and crash nemeses; runs without them otherwise. See README "Testing".
jepsen: deps
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=$(CMAKE_TYPE) >/dev/null
	cmake --build $(BUILD) -j$(JOBS) --target kvd kvcli kv-jepsen lossyfs
	KV_BUILD=$(BUILD) tests/jepsen-lite/soak.sh

# kv beside etcd in one run (bench/compare.sh; docs/benchmarks.md): a table,
# bench/results/DATE.csv and DATE.png. bench-quick takes a few minutes.
bench: build
	bench/compare.sh

bench-quick: build
	bench/compare.sh --quick

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

clean:
	rm -rf $(BUILD) $(ASAN_BUILD)
