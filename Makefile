# One-command entry points. `make demo` and `make test` each create the virtual
# environment on first use (CPU build of PyTorch first, so pip never pulls a CUDA build).
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
TORCH_SPEC ?= torch==2.13.0

.PHONY: setup demo test test-fast lint bench clean

$(BIN)/lgdnet: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)" || $(BIN)/python -m pip install --quiet "torch>=2.3" --index-url https://download.pytorch.org/whl/cpu || $(BIN)/python -m pip install --quiet "torch>=2.3"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	$(BIN)/python -c "from lgdnet.models import epilogue_kernel as k; print('LGD epilogue kernel:', 'built' if k.available() else 'not built, eager fallback: ' + k.reason())"
	touch $(BIN)/lgdnet

setup: $(BIN)/lgdnet

demo: setup
	$(BIN)/lgdnet demo $(DEMO_ARGS)

test: setup
	$(BIN)/python -m pytest -q --timeout=900 $(PYTEST_ARGS)

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow" $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check src tests benchmarks

bench: setup
	$(BIN)/python -m pip install --quiet -e ".[bench]" || true
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
