# The two commands of README: `make demo` (the main job) and `make test`.
VENV := .venv/bin
EXAMPLES := $(sort $(dir $(wildcard examples/*/modelport.yaml)))

.PHONY: bootstrap demo test test-unit lint examples schemas bench bench-peers bench-cost base-image

bootstrap:
	@scripts/bootstrap

demo: bootstrap
	@for dir in $(EXAMPLES); do \
	  echo "=== modelport manifest $$dir"; \
	  $(VENV)/modelport manifest $$dir || exit $$?; \
	done
	@echo "=== modelport demo (each example's picture, rendered by the real runtime)"
	@$(VENV)/modelport demo --out demo-output

lint: bootstrap
	$(VENV)/ruff check .
	$(VENV)/ruff format --check .
	$(VENV)/mypy

test: lint
	$(VENV)/python -m pytest

# The quick loop, without lint: the in-process tiers (tests/unit, the twins' half of tests/contract) but
# the tests marked slow. The tier is the folder (tests/conftest.py); `make test` runs every tier.
# Without pytest-xdist: UNIT_SHARDS pytest processes at once, each printing its result when done.
UNIT_SHARDS ?= 2
test-unit: bootstrap
	@$(MAKE) --no-print-directory -j$(UNIT_SHARDS) --output-sync=target \
	  $(addprefix unit-shard-,$(shell seq $(UNIT_SHARDS)))

unit-shard-%:
	$(VENV)/python -m pytest -q -p no:cacheprovider -m "unit and not slow" --shard=$*/$(UNIT_SHARDS) \
	  tests/unit tests/contract

examples: bootstrap
	$(VENV)/python examples/make_examples.py

schemas: bootstrap
	$(VENV)/modelport schema model-config > schemas/model-config.schema.json
	$(VENV)/modelport schema modelport-yaml > schemas/modelport.schema.json

bench-peers: bootstrap  # Modelport beside BentoML and MLServer, driven by wrk (bench/peers.py)
	@command -v wrk >/dev/null || apt-get install -y wrk || { echo "bench-peers needs wrk: apt-get install wrk"; exit 1; }
	$(VENV)/python bench/peers.py

bench-cost: bootstrap  # cost per million predictions per example, fused and chained (bench/cost.py)
	$(VENV)/python bench/cost.py

bench: bootstrap
	$(VENV)/python bench/manifest_cli.py
	$(VENV)/python bench/images.py

# The local Python base image (Debian + python3 by debootstrap; needs root and a docker engine).
# Idempotent: kept when it exists (`modelport base-image build --force` remakes it).
base-image: bootstrap
	$(VENV)/modelport base-image build
