# posestream: `make demo` runs the main job, `make test` runs the tests (both set up .venv first).
PYTHON ?= python3
VENV ?= .venv
# The pinned CPU build; on a CUDA machine set e.g. TORCH="torch==2.13.0 --index-url ..." as you need.
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install demo test test-deps test-slow bench clean

$(STAMP): setup.cfg pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	# torch first, so that the package's torch requirement is already met by the pinned build
	$(BIN)/pip install $(TORCH)
	$(BIN)/pip install -e ".[test]"
	touch $@

install: $(STAMP)

demo: $(STAMP)
	@echo "make demo: the streaming pipeline is not built yet; until it is, demo runs the decoder"
	@echo "benchmarks: Numba grouping vs the NumPy reference, and the oracle AP on real COCO poses."
	$(BIN)/posestream bench grouping
	$(BIN)/posestream bench oracle

# system packages for the RTSP tests (GStreamer's RTSP server on loopback); skipped when not root
test-deps:
	bash scripts/install-test-deps.sh

test: $(STAMP) test-deps
	$(BIN)/python -m pytest -q

test-slow: $(STAMP) test-deps
	$(BIN)/python -m pytest -q -m slow

bench: $(STAMP)
	$(BIN)/posestream bench grouping
	$(BIN)/posestream bench oracle

clean:
	rm -rf $(VENV) out build *.egg-info
