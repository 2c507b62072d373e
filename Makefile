# audiosearch: the two commands a fresh machine needs are `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
BUF := .tools/node_modules/.bin/buf
BUF_VERSION := 1.75.0
PROTOS := $(shell find protos -name '*.proto' | sort)
SAMPLES := samples/sonic-pi

.PHONY: all venv proto proto-check buf-lint lint k8s-validate k8s-check test demo samples eval bench bench-gpu serve clean

all: venv

# The virtual environment, rebuilt when the pinned requirements change.
$(VENV)/.installed: requirements.txt requirements-dev.txt constraints.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements-dev.txt -c constraints.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $@

venv: $(VENV)/.installed

# Python stubs (+ .pyi) from protos/, into the importable package under stubs/.
proto: $(VENV)/.installed
	rm -rf stubs/audiosearch
	$(PY) -m grpc_tools.protoc -Iprotos --python_out=stubs --pyi_out=stubs --grpc_python_out=stubs $(PROTOS)
	find stubs/audiosearch -type d -exec touch {}/__init__.py \;

# Fails when the committed stubs differ from what the protos generate.
proto-check: $(VENV)/.installed
	@tmp=$$(mktemp -d) && \
	$(PY) -m grpc_tools.protoc -Iprotos --python_out=$$tmp --pyi_out=$$tmp --grpc_python_out=$$tmp $(PROTOS) && \
	find $$tmp/audiosearch -type d -exec touch {}/__init__.py \; && \
	if diff -r $$tmp/audiosearch stubs/audiosearch -x __pycache__; then echo "stubs match protos"; rm -rf $$tmp; \
	else echo "stubs/ drifted from protos/: run 'make proto' and commit"; rm -rf $$tmp; exit 1; fi

$(BUF):
	npm install --silent --no-save --no-audit --no-fund --prefix .tools @bufbuild/buf@$(BUF_VERSION)

buf-lint: $(BUF)
	cd protos && ../$(BUF) lint

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check services tests scripts eval bench
	$(VENV)/bin/ruff format --check services tests scripts eval bench

# Real audio for the demo and benchmarks: CC0 samples from Debian's sonic-pi-samples.
$(SAMPLES)/.fetched:
	bash scripts/fetch_samples.sh $(SAMPLES)
	touch $@

samples: $(SAMPLES)/.fetched

# Kubernetes manifests, offline: every file and every rendered overlay
# (kubectl kustomize) validated strictly against the Kubernetes schemas.
k8s-validate: $(VENV)/.installed
	$(PY) scripts/k8s_check.py --require-render

# The above, plus the security, network, probe and image assertions.
k8s-check: k8s-validate
	$(PY) -m pytest -q -p no:cacheprovider tests/test_k8s.py tests/test_dockerfiles.py

test: $(VENV)/.installed proto-check buf-lint lint k8s-validate
	$(PY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

# Retrieval quality on real recordings (see eval/run.py); about 10 minutes here.
EVAL_CORPUS := eval/.cache/corpus
$(EVAL_CORPUS)/.fetched:
	bash eval/fetch_corpus.sh $(EVAL_CORPUS)
	touch $@

eval: $(VENV)/.installed $(EVAL_CORPUS)/.fetched
	$(PY) eval/run.py --corpus $(EVAL_CORPUS) --out eval/results

# Performance on this machine, each figure a ratio to a baseline measured in
# the same run (about 15 minutes here): embedder throughput against
# panns_inference, indexing and search through the services against the
# same code in-process, peak memory while indexing a one-hour file.
bench: $(VENV)/.installed $(SAMPLES)/.fetched
	$(PY) bench/make_clips.py $(SAMPLES) bench/.cache/clips.npy
	rm -f bench/results/latest.json
	$(PY) bench/embedder_cpu.py bench/.cache/clips.npy bench/results/latest.json
	$(PY) bench/pipeline.py $(SAMPLES) bench/results/latest.json
	$(PY) bench/report.py bench/results/latest.json bench/results/latest.md

# Cnn14 on a CUDA GPU (needs a CUDA build of torch): clips/s, fraction of
# the card's bf16 peak, and the cosine of the production path to fp32.
bench-gpu: $(VENV)/.installed $(SAMPLES)/.fetched
	$(PY) bench/make_clips.py $(SAMPLES) bench/.cache/clips.npy
	$(PY) bench/gpu_cnn14.py bench/.cache/clips.npy > bench/results/gpu.json
	cat bench/results/gpu.json

demo: proto $(SAMPLES)/.fetched
	$(PY) scripts/demo.py --samples $(SAMPLES)

serve: $(VENV)/.installed
	$(VENV)/bin/audiosearch serve

clean:
	rm -rf $(VENV) .tools stubs/audiosearch/**/__pycache__ data .demo
