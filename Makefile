# posestream: `make demo` runs the main job, `make test` runs the tests (both set up .venv first).
PYTHON ?= python3
VENV ?= .venv
# The pinned CPU build; on a CUDA machine set e.g. TORCH="torch==2.13.0 --index-url ..." as you need.
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install demo live test test-deps test-slow bench clean

$(STAMP): setup.cfg pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	# torch first, so that the package's torch requirement is already met by the pinned build
	$(BIN)/pip install $(TORCH)
	$(BIN)/pip install -e ".[test]"
	# the decoder's compiled kernels, the shipped model's ONNX export and the backend timings,
	# so that the first run starts fast (posestream warmup; safe to run again)
	$(BIN)/posestream warmup
	touch $@

install: $(STAMP)

# The main job: the pipeline with the shipped model (models/weights/movenet_paf.pt) on a clip with
# people, writing an annotated MP4, keypoints (JSONL) and the metrics summary. The default clip is
# OpenCV's vtest.avi, fetched once from Debian's opencv-doc package into data/ (apt-get download +
# dpkg -x). SOURCE= picks another input (file, image folder, rtsp:// URL, webcam index); ARGS= adds
# flags (ARGS=--refine: the accurate mode).
DEMO_CLIP := data/vtest.avi
SOURCE ?= $(DEMO_CLIP)
ARGS ?=

$(DEMO_CLIP):
	bash scripts/get-demo-clip.sh $@

demo: $(STAMP) $(if $(filter $(DEMO_CLIP),$(SOURCE)),$(DEMO_CLIP))
	@mkdir -p out
	$(BIN)/posestream run --source $(SOURCE) --record out/demo.mp4 --jsonl out/demo.jsonl --summary out/demo-summary.json $(ARGS)
	@echo "demo: annotated video   $(CURDIR)/out/demo.mp4"
	@echo "demo: keypoints (JSONL) $(CURDIR)/out/demo.jsonl"
	@echo "demo: metrics summary   $(CURDIR)/out/demo-summary.json"

# The webcam's live view in the browser (http://127.0.0.1:8080/, opened in the default browser;
# on a headless machine the URL is printed). CAMERA= picks another source, PORT= another port.
CAMERA ?= 0
PORT ?= 8080
live: $(STAMP)
	$(BIN)/posestream run --source $(CAMERA) --serve $(PORT) --open $(ARGS)

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
	$(BIN)/posestream bench models
	$(BIN)/posestream bench loader
	$(BIN)/posestream bench pipeline
	$(BIN)/posestream bench refine
	$(BIN)/posestream bench tracking --ablate
	$(BIN)/posestream bench backends
	$(BIN)/posestream bench presets

clean:
	rm -rf $(VENV) out build *.egg-info data
