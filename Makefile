# The two set-up commands of the README: `make demo` and `make test`. Both idempotent.
VENV ?= .venv
STAMP := $(VENV)/.facellm-installed

.PHONY: install demo test
install: $(STAMP)

$(STAMP): pyproject.toml scripts/install.sh
	bash scripts/install.sh $(VENV)
	touch $(STAMP)

demo: install
	$(VENV)/bin/facellm demo $(DEMO_ARGS)

test: install
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)
