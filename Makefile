# The two set-up commands of the README: `make demo` and `make test`. Both idempotent.
VENV ?= .venv
STAMP := $(VENV)/.facellm-installed

.PHONY: install browser demo test
install: $(STAMP)

$(STAMP): pyproject.toml scripts/install.sh
	bash scripts/install.sh $(VENV)
	touch $(STAMP)

browser:  # Debian's Chromium, for the chat UI's browser tests
	bash scripts/install-browser.sh

demo: install
	$(VENV)/bin/facellm demo $(DEMO_ARGS)

test: install browser
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)
