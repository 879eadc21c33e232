# `make run` and `make test` work on a fresh machine: each makes .venv when it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run smtp-sink test lint typecheck openapi clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

## Serve on SQLite (./var/mailrelay.db) at http://127.0.0.1:8000, migrating first.
## Loopback SMTP hosts are allowed here so that `make smtp-sink` can play a tenant's server.
run: $(STAMP)
	MAILRELAY_SMTP_ALLOWED_NETWORKS=$${MAILRELAY_SMTP_ALLOWED_NETWORKS-127.0.0.0/8} \
		$(BIN)/mailrelay serve --host $${HOST:-127.0.0.1} --port $${PORT:-8000}

## A local SMTP server for trying things out: 127.0.0.1:2525, user hr@acme.example, password secret.
smtp-sink: $(STAMP)
	$(BIN)/python -m tests.fixtures.smtpd --port 2525 --user hr@acme.example:secret

## The whole suite; on PostgreSQL too when MAILRELAY_TEST_POSTGRES_URL is set.
test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

openapi: $(STAMP)
	$(BIN)/mailrelay openapi --output openapi/openapi.json

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
