# The front door. On a fresh Debian 12 machine, as root:
#   make run    installs what is missing, builds, serves examples/rest.lua (and its page) with
#               moonfcgi --http on 127.0.0.1:8080 (make run-nginx: behind nginx instead)
#   make test   installs what is missing, builds, runs every test (also under ASan+UBSan)
BUILD      ?= build
ASAN_BUILD ?= build-asan
FUZZ_BUILD ?= build-fuzz
JOBS       ?= $(shell nproc)
FUZZ_SECONDS ?= 30
# make bench BENCH_RESULTS=bench/RESULTS.md also appends the report there.
BENCH_RESULTS ?=

.PHONY: all deps test-deps build asan-build fuzz-build run run-nginx test check-unit check-spec \
        check-integration check-asan check-fuzz check-format bench install clean

all: build

deps:
	@tools/install-deps.sh build

test-deps:
	@tools/install-deps.sh test

build: deps
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)

asan-build: deps
	@cmake -S . -B $(ASAN_BUILD) -DCMAKE_BUILD_TYPE=Debug -DMF_SANITIZE=ON >/dev/null
	@cmake --build $(ASAN_BUILD) -j $(JOBS)

fuzz-build: test-deps
	@CC=clang cmake -S . -B $(FUZZ_BUILD) -DCMAKE_BUILD_TYPE=Debug -DMF_FUZZ=ON \
	    -DBUILD_TESTING=OFF >/dev/null
	@cmake --build $(FUZZ_BUILD) -j $(JOBS) --target fuzz_conn fuzz_record fuzz_http

# Development mode (docs/http.md): the REST example and its page, reloaded on every save.
run: build
	@tools/install-deps.sh run
	@echo "serving examples/rest.lua on http://127.0.0.1:8080/ (Ctrl-C stops)"
	@$(BUILD)/moonfcgi --http 127.0.0.1:8080 --http-root examples/rest-ui --workers 1 --watch \
	    examples/rest.lua

# The deployment the guides describe: nginx in front, FastCGI behind it.
run-nginx: build
	@tools/install-deps.sh run-nginx
	@examples/serve-behind-nginx.sh $(BUILD)/moonfcgi examples/rest.lua

# Every test: the plain build, then the ASan+UBSan build, then the fuzz targets; the last
# line is the total, "N passed, N failed". With CI=true (or MOONFCGI_REQUIRE_ALL=1) a spec
# that would be skipped (a server or tool missing) fails instead.
test: test-deps build asan-build fuzz-build
	@spec/test-all.sh $(BUILD) $(ASAN_BUILD) $(FUZZ_BUILD) $(FUZZ_SECONDS)

check-unit: build
	@ctest --test-dir $(BUILD) --output-on-failure

check-spec: build
	@$(BUILD)/moonfcgi-busted spec/

check-fuzz: fuzz-build
	@spec/fuzz/run.sh $(FUZZ_BUILD) $(FUZZ_SECONDS)

check-format:
	@clang-format --dry-run -Werror src/*.c src/*.h spec/unit/*.c spec/fuzz/*.c bench/*.c \
	    bench/peers/*.c

bench: test-deps build
	@bench/run.sh $(if $(BENCH_RESULTS),--results $(BENCH_RESULTS)) $(BUILD)
	@bench/scaling.sh $(BUILD)
	@bench/timings.sh $(BUILD)

install: build
	@cmake --install $(BUILD)

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(FUZZ_BUILD)
