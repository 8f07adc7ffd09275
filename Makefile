# edgellm — two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.edgellm-installed
EXTRAS ?= onnx,openvino,gguf,executorch,bench,dev,tflite,serve,data,ray,train

LLAMA_STAMP := $(VENV)/.edgellm-llamacpp

.PHONY: setup setup-llama arm64-root demo test test-all bench lint format clean tiny-llama docs

# torch==2.13.0 goes in first and alone (a CPU wheel is cached on these machines); every later install
# is pinned by constraints.txt, which holds torch==2.13.0 too, so nothing can replace it.
$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --disable-pip-version-check torch==2.13.0
	$(PIP) install --quiet --disable-pip-version-check -c constraints.txt hatchling editables
	$(PIP) install --quiet --disable-pip-version-check -c constraints.txt --no-build-isolation -e '.[$(EXTRAS)]'
	@$(PY) -c "import torch; assert torch.__version__.startswith('2.13.0'), torch.__version__"
	@touch $(STAMP)

setup: $(STAMP)

# llama.cpp for GGUF validation and generation (llama-cpp-python compiles it: about 6 minutes on 2 cores)
$(LLAMA_STAMP): $(STAMP)
	CMAKE_ARGS="-DLLAVA_BUILD=OFF -DGGML_NATIVE=ON -DLLAMA_CURL=OFF" $(PIP) install --quiet --disable-pip-version-check -c constraints.txt 'llama-cpp-python==0.3.36'
	@touch $(LLAMA_STAMP)

setup-llama: $(LLAMA_STAMP)

# a Debian arm64 root with qemu-user and aarch64 wheels of the runtimes (~/.cache/edgellm/arm64-root,
# about 40 s once): phone artifacts are then also validated on arm64 kernels. It needs root (chroot) and
# Debian's mirror; without them it says why, and the arm64 checks and tests are skipped with that reason.
arm64-root: $(STAMP)
	@PIP="$(PY) -m pip" bash scripts/arm64_root.sh || echo "arm64 root not built: phone artifacts are validated on this host's kernels only (arm64 tests skip)"

# the demo recipe: data -> compress -> partition -> export -> bench -> split check -> edgellm-out/report.md
demo: $(STAMP) arm64-root
	$(VENV)/bin/edgellm run recipes/demo.yaml

# rebuild the bundled tiny-llama with edgellm's own data front end and trainer (recipes/tiny-llama.yaml)
tiny-llama: $(STAMP)
	$(PY) scripts/train_tiny_llama.py

test: $(STAMP) arm64-root
	$(PY) -m pytest

test-all: $(STAMP)
	$(PY) -m pytest -m ""

bench: $(STAMP)
	$(PY) benchmarks/bench_server_onnx.py
	$(PY) benchmarks/bench_int8_minilm.py
	$(PY) benchmarks/bench_int4_tiny_llama.py
	$(PY) benchmarks/bench_targets_minilm.py
	$(PY) benchmarks/bench_targets_llm.py --no-llama-cpp   # the llama.cpp comparison: make setup-llama first
	$(PY) benchmarks/serve_load.py
	$(PY) benchmarks/data_quality.py
	$(PY) benchmarks/data_clean_throughput.py
	$(PY) benchmarks/train_throughput.py
	$(PY) benchmarks/demo_wall_time.py
	$(PY) benchmarks/bench_prune.py
	$(PY) benchmarks/fuzz_kserve.py
	$(PY) benchmarks/split_netem.py   # root on Linux; skipped with the reason otherwise

# style, then the architecture: the import-linter contracts in pyproject.toml (docs/architecture.md)
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean:
	rm -rf edgellm-out .pytest_cache .ruff_cache .benchmarks

# the user guide: regenerate the CLI and recipe references, then build the site into edgellm-out/site
docs: $(STAMP)
	$(PY) scripts/gen_docs.py
	$(VENV)/bin/mkdocs build --strict
