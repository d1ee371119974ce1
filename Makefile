# Quick start: `make demo` and `make test`. Each sets itself up (.venv) on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
Q ?= Who led the resistance to the Taliban in the north?
export Q

.PHONY: setup demo postgres-demo postgres-stop test bot clean bench bench-large

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "corpus-bot needs Python 3.11 or newer (set PYTHON=...)")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# constraints.txt keeps torch on the CPU build (a plain install pulls several GB of CUDA).
	$(BIN)/pip install --quiet -c constraints.txt -e '.[test,postgres]'
	@touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(BIN)/corpus-bot index
	$(BIN)/corpus-bot ask "$$Q"

# As demo, against a local PostgreSQL with pgvector (data in data/postgres/), left running so the
# printed INDEX_URL works with `corpus-bot index` and `ask` until `make postgres-stop`.
postgres-demo: setup
	@url=$$($(BIN)/python -m embeddings.postgres.local start) && \
	$(BIN)/corpus-bot index --index "$$url" && \
	$(BIN)/corpus-bot ask --index "$$url" "$$Q" && \
	echo && echo "INDEX_URL='$$url'" && \
	echo "The server keeps running: reuse it with INDEX_URL='$$url' corpus-bot ask \"...\"; stop it with make postgres-stop."

postgres-stop: setup
	@$(BIN)/python -m embeddings.postgres.local stop

test: setup
	$(BIN)/python -m pytest
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bot: setup
	$(BIN)/corpus-bot run

# Performance benchmark (bench/README.md): one JSON document on stdout and in bench/out/results.json.
bench: setup
	$(BIN)/python bench/benchmark.py --sizes 10000,100000 --out bench/out/results.json

bench-large: setup
	$(BIN)/python bench/benchmark.py --sizes 10000,100000,1000000 --out bench/out/results.json

clean:
	-@[ ! -x $(BIN)/python ] || $(BIN)/python -m embeddings.postgres.local stop 2>/dev/null
	rm -rf $(VENV) data .pytest_cache
