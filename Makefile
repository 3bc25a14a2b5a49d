# Two entry points: `make run` and `make test`. Both create .venv and install on first use.
# `make lint` runs ruff and mypy (configured in pyproject.toml); CI runs it after the tests.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test lint install kcat bench fuzz clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# kcat is a Debian package, not a Python one: install it when we can (root), else tests skip.
kcat:
	@if ! command -v kcat >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq kcat) >/dev/null || echo "could not install kcat"; \
	  else echo "kcat not installed: run 'sudo apt-get install kcat' to enable the kcat tests"; fi; \
	fi

# The key ring that encrypts tiered segments lives beside ./data, never inside it.
KEYRING ?= ./keyring.json

run: $(STAMP)
	@[ -f $(KEYRING) ] || $(VENV)/bin/sediment keys generate $(KEYRING)
	$(VENV)/bin/sediment serve --data-dir ./data --listeners PLAINTEXT://127.0.0.1:9092 --http 127.0.0.1:8080 \
	  --keyring $(KEYRING)

test: $(STAMP) kcat
	$(VENV)/bin/pytest -q -p no:cacheprovider tests

LINTED := service tiering security loadtest tests

lint: $(STAMP)
	$(VENV)/bin/ruff check $(LINTED)
	$(VENV)/bin/mypy

bench: $(STAMP)
	$(PY) -m loadtest.bench

# The long fuzz runs (short ones are in `make test`): 1M decoder inputs per target, 1M socket frames.
fuzz: $(STAMP)
	$(PY) -m loadtest.fuzz_decode --inputs 1000000
	$(PY) -m loadtest.fuzz_socket --frames 1000000 --round 50000 --max-rss-growth-mib 20 --max-stall-s 1

clean:
	rm -rf $(VENV) data
