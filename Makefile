# Every target is one line; the work lives in scripts/.
.PHONY: all build test unit integration e2e fuzz bench bench-compare soak lab-up lab-down images deps clean
all: build
deps: ; @scripts/deps.sh
build: ; @scripts/build.sh
test: ; @scripts/test.sh
unit: ; @scripts/unit.sh
integration: ; @scripts/integration.sh
e2e: ; @scripts/e2e.sh
fuzz: ; @scripts/fuzz.sh
bench: ; @scripts/bench.sh
bench-compare: ; @go run ./bench/report -compare $(OLD) $(NEW)
soak: ; @scripts/soak.sh
lab-up: ; @scripts/lab-up.sh
lab-down: ; @scripts/lab-down.sh
images: ; @scripts/images.sh -force
clean: ; rm -rf bin
