# Small conveniences; tools/test.sh and tools/demo.sh remain the two commands that matter.
PY ?= .venv/bin/python

.PHONY: docs docs-check docs-browser venv

venv:
	bash tools/venv.sh

# The docs site, offline (Quarto cannot be installed here): nbdev's notebook processing → _proc/, static HTML → _docs/,
# then the checks CI runs (a page per notebook, every public name with its signature and parameter docs, tutorial
# plots, no tracebacks, no broken internal links). Where Quarto is installed, `nbdev_docs` builds the same site.
docs: venv
	$(PY) tools/docs.py
	$(PY) tools/check_docs.py

docs-check:
	$(PY) tools/check_docs.py

# Screenshots of the home page and a tutorial in headless Chromium → build/docs-screenshots/
docs-browser:
	$(PY) tools/docs_browser.py
