# Two set-up commands: `make demo` and `make test`. Each creates .venv if needed (idempotent) and
# installs recon with its test and data extras. torch/torchvision are pinned to the pair that
# installs from this machine's wheel cache (torch 2.14.1 + torchvision 0.29.1).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.recon-installed
TORCH := torch==2.14.1 torchvision==0.29.1
SAMPLE := datasets/data/sample_t1_coronal.h5

.PHONY: venv demo test test-fast bench bundled-models lint clean

venv: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check $(TORCH) setuptools
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[test,data]"
	touch $(STAMP)

demo: $(STAMP)
	mkdir -p results
	$(BIN)/recon reconstruct $(SAMPLE) --uncertainty mc-dropout --out results/demo.h5
	@echo "wrote results/demo.h5, results/demo.png, results/demo.metrics.json"

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

bench: $(STAMP)
	$(BIN)/python benchmarks/operators.py --json results/bench-operators.json

# Retrains the bundled reconstruction models (recon/bundled/NAME.json + .safetensors) and the mri-4x
# weight samples with their conformal factor: about 1 h on one CPU thread. Training runs go to runs/.
BUNDLED := mri-4x deblur-gauss denoise-gauss
bundled-models: $(STAMP)
	for r in $(BUNDLED); do \
	  $(BIN)/recon train --recipe $$r --out runs/$$r || exit 1; \
	  cp runs/$$r/model.json recon/bundled/$$r.json; \
	  cp runs/$$r/model.safetensors recon/bundled/$$r.safetensors; \
	done
	$(BIN)/recon sample --model mri-4x --sampler mc-dropout:iterations=1 --samples 16
	$(BIN)/recon calibrate --model mri-4x --uncertainty mc-dropout --coverage 0.9

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf results .pytest_cache
