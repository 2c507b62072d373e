# audiosearch: the two commands a fresh machine needs are `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
BUF := .tools/node_modules/.bin/buf
BUF_VERSION := 1.75.0
PROTOS := $(shell find protos -name '*.proto' | sort)
SAMPLES := samples/sonic-pi

.PHONY: all venv proto proto-check buf-lint buf-breaking proto-release node-stubs browser lint k8s-validate k8s-check check check-tests test demo samples eval bench bench-gpu bench-observability serve clean

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

NODE_CLIENT := clients/node
RELEASED := protos/released/audiosearch-v1.json

# Node.js stubs (clients/node/gen/, not committed) from protos/, by buf with
# the protoc-gen-es pinned in clients/node/package-lock.json.
$(NODE_CLIENT)/node_modules/.installed: $(NODE_CLIENT)/package.json $(NODE_CLIENT)/package-lock.json
	npm ci --silent --no-audit --no-fund --prefix $(NODE_CLIENT)
	touch $@

node-stubs: $(BUF) $(NODE_CLIENT)/node_modules/.installed
	$(BUF) generate protos --template $(NODE_CLIENT)/buf.gen.yaml

# Fails when protos/ breaks what the last release's clients rely on
# (protos/released/README.md).
buf-breaking: $(BUF)
	cd protos && ../$(BUF) breaking --against released/audiosearch-v1.json

# At a release: the baseline of buf-breaking, from the protos committed at HEAD.
proto-release: $(BUF)
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	git archive HEAD protos | tar -x -C "$$tmp" && \
	$(BUF) build "$$tmp/protos" --exclude-source-info -o "$$tmp/image.json" && \
	$(PYTHON) -m json.tool --indent 1 "$$tmp/image.json" > $(RELEASED) && \
	echo "wrote $(RELEASED) from the protos at $$(git rev-parse --short HEAD)"

# The browser test's tools: Debian's Chromium (never a downloaded browser)
# and playwright-core, pinned in tests/browser/package-lock.json.
BROWSER_TOOLS := tests/browser/node_modules/.installed
$(BROWSER_TOOLS): tests/browser/package.json tests/browser/package-lock.json
	command -v chromium >/dev/null || (apt-get install -y -q chromium >/dev/null)
	npm ci --silent --no-audit --no-fund --prefix tests/browser
	touch $@

browser: $(BROWSER_TOOLS)

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

# The fast tier: lint, then every test that needs no running service,
# database, Milvus, network, npm or browser (tests/conftest.py marks the
# others "services"), the gateway's crash-point test among them.
# Lint and the tests side by side (2 CPUs here): under a minute (49 s measured).
check: $(VENV)/.installed
	@$(MAKE) --no-print-directory -j2 lint check-tests

check-tests: $(VENV)/.installed
	$(PY) -m pytest -q -p no:cacheprovider -m "not services"

# The whole suite (what .ci/run calls).
test: $(VENV)/.installed proto-check buf-lint buf-breaking node-stubs browser lint k8s-validate $(SAMPLES)/.fetched
	$(PY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

# Retrieval quality on real recordings: the copy detector through the real
# services (eval/copies.py, `make eval-copies`), then every model's
# near-duplicate and "more like this" figures in process (eval/run.py).
# The corpus is fetched again when eval/fetch_corpus.sh changes.
EVAL_CORPUS := eval/.cache/corpus
$(EVAL_CORPUS)/.fetched: eval/fetch_corpus.sh
	bash eval/fetch_corpus.sh $(EVAL_CORPUS)
	touch $@

eval: eval-copies
	$(PY) eval/run.py --corpus $(EVAL_CORPUS) --out eval/results

# EVAL_MODEL: the fingerprint model measured. fingerprint-v1's windows take
# about 43 MB an hour in the vector store (and Milvus Lite holds them in
# memory many times over), so it gets a 1 h library; other models every
# track not held out. EVAL_COPIES_ARGS=--quick for a check of a few minutes.
.PHONY: eval-copies
EVAL_MODEL ?= fingerprint-v1
EVAL_COPIES_ARGS ?= $(if $(filter fingerprint-v1,$(EVAL_MODEL)),--library-hours 1)
eval-copies: $(VENV)/.installed $(EVAL_CORPUS)/.fetched
	$(PY) eval/copies.py --corpus $(EVAL_CORPUS) --model $(EVAL_MODEL) --out eval/results $(EVAL_COPIES_ARGS)

# Stream monitoring through the real services (eval/monitor.py): a seeded
# test broadcast of indexed soundtracks among held-out ones, scanned with the
# Monitor RPC (about 2 minutes here; EVAL_MONITOR_ARGS=--quick: about 1).
.PHONY: eval-monitor
EVAL_MONITOR_ARGS ?=
eval-monitor: $(VENV)/.installed $(EVAL_CORPUS)/.fetched
	$(PY) eval/monitor.py --corpus $(EVAL_CORPUS) --out eval/results $(EVAL_MONITOR_ARGS)

# Performance on this machine, each figure a ratio to a baseline measured in
# the same run (about 15 minutes here, plus the fingerprint's cost curve and
# monitoring's cost): embedder throughput against panns_inference, indexing
# and search through the services against the same code in-process, peak
# memory while indexing a one-hour file, fingerprint-v2's search cost as the
# library grows, and monitoring's scan speed and CPU per live stream.
bench: $(VENV)/.installed $(SAMPLES)/.fetched $(EVAL_CORPUS)/.fetched
	$(PY) bench/make_clips.py $(SAMPLES) bench/.cache/clips.npy
	rm -f bench/results/latest.json
	$(PY) bench/embedder_cpu.py bench/.cache/clips.npy bench/results/latest.json
	$(PY) bench/pipeline.py $(SAMPLES) bench/results/latest.json
	$(PY) bench/restart.py $(SAMPLES) bench/results/latest.json
	$(PY) bench/fingerprint_scale.py bench/results/latest.json $(FINGERPRINT_ARGS)
	$(PY) bench/monitor_scan.py bench/results/latest.json $(MONITOR_BENCH_ARGS)
	$(PY) bench/report.py bench/results/latest.json bench/results/latest.md

# fingerprint-v2's cost curve (bench/fingerprint_scale.py): index size,
# search p50/p99 over the gateway's whole landmark path, top-1 and peak
# memory at 1, 10 and 100 h of indexed audio (real music from
# eval/.cache/corpus if fetched, else the sonic-pi samples, grown with
# reversed and pitch-shifted copies), each against a brute-force in-memory
# index on the same data; merged into bench/results/latest.json. Milvus Lite
# is measured up to 10 h (its memory and search time grow about linearly;
# 100 h would need over 10 GB and hours here), 100 h on the brute-force
# index alone; about 15 minutes here (plus 4 to decode the corpus the first
# time). The whole curve through Milvus, given the machine:
# FINGERPRINT_ARGS="--hours 1,10,100 --queries 50".
FINGERPRINT_ARGS ?= --hours 1,10,100 --milvus-up-to 10 --queries 20
.PHONY: bench-fingerprint
bench-fingerprint: $(VENV)/.installed $(SAMPLES)/.fetched
	$(PY) bench/fingerprint_scale.py bench/results/latest.json $(FINGERPRINT_ARGS)
	$(PY) bench/report.py bench/results/latest.json bench/results/latest.md

# Monitoring's cost (bench/monitor_scan.py) through a real stack and the CLI:
# the scan speed (x real time, target 30) of `audiosearch monitor` on a
# one-hour recording built from eval/.cache/corpus against a library of an
# hour of its soundtracks (fingerprint-v2), the segments found, the
# services' CPU seconds per hour of recording, and how many real-time live
# streams (`audiosearch monitor -`) one core keeps up with, from 2 streams
# of 120 s at real-time pace; merged into bench/results/latest.json (about
# 6 minutes here). Without the corpus it reports nothing.
MONITOR_BENCH_ARGS ?= --library-hours 1.0 --broadcast-hours 1.0 --live-seconds 120 --live-streams 2
.PHONY: bench-monitor
bench-monitor: $(VENV)/.installed $(EVAL_CORPUS)/.fetched
	$(PY) bench/monitor_scan.py bench/results/latest.json $(MONITOR_BENCH_ARGS)
	$(PY) bench/report.py bench/results/latest.json bench/results/latest.md

# The HTTP API fuzzed from its /openapi.json by schemathesis against a real
# stack (tests/test_web.py): about 1,500 generated requests, none may get a
# 5xx (about a minute; `make test` runs a short pass of about 250).
.PHONY: fuzz-http
fuzz-http: $(VENV)/.installed
	AUDIOSEARCH_FUZZ_HTTP_EXAMPLES=100 $(PY) -m pytest -q -s -p no:cacheprovider tests/test_web.py -k schemathesis

# The stack under kills, from outside through the CLI (scripts/fault_schedule.py):
# each service SIGKILLed during a 200-file index, then the whole process group
# during a second one, a restart, and the stores must agree exactly (about 10 minutes).
.PHONY: fault-schedule
fault-schedule: $(VENV)/.installed
	$(PY) scripts/fault_schedule.py --files 200

# What the per-RPC interceptors (metrics, tracing) cost, against a bare server.
bench-observability: $(VENV)/.installed
	$(PY) bench/observability.py

# Cnn14 on a CUDA GPU (needs a CUDA build of torch): clips/s, fraction of
# the card's bf16 peak, and the cosine of the production path to fp32.
bench-gpu: $(VENV)/.installed $(SAMPLES)/.fetched
	$(PY) bench/make_clips.py $(SAMPLES) bench/.cache/clips.npy
	$(PY) bench/gpu_cnn14.py bench/.cache/clips.npy > bench/results/gpu.json
	cat bench/results/gpu.json

# The demo's stack: gateway on DEMO_PORT, the other services on the next three.
DEMO_PORT ?= 50061
demo: $(VENV)/.installed $(SAMPLES)/.fetched
	$(PY) scripts/demo.py --samples $(SAMPLES) --port $(DEMO_PORT)

serve: $(VENV)/.installed
	$(VENV)/bin/audiosearch serve

clean:
	rm -rf $(VENV) .tools stubs/audiosearch/**/__pycache__ data .demo $(NODE_CLIENT)/gen $(NODE_CLIENT)/node_modules tests/browser/node_modules
