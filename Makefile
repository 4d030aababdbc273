# Small conveniences; tools/test.sh and tools/demo.sh remain the two commands that matter.
PY ?= .venv/bin/python

.PHONY: docs docs-check docs-browser venv dashboard-image

venv:
	bash tools/venv.sh

# The docs site, offline (Quarto cannot be installed here): nbdev's notebook processing → _proc/, static HTML → _docs/
# with search, contents, previous/next and KaTeX (npm packages tools/venv.sh installs into .venv/site), then the checks
# CI runs (a page per notebook, every public name with its signature and parameter docs, tutorial plots, no tracebacks,
# no broken internal links, search index, contents and page links, no local paths). Where Quarto is installed,
# `nbdev_docs` builds the same site.
docs: venv
	$(PY) tools/docs.py
	$(PY) tools/check_docs.py

docs-check:
	$(PY) tools/check_docs.py

# Every page checked in headless Chromium at 1,400 px, search tried, screenshots → build/docs-screenshots/
docs-browser:
	$(PY) tools/docs_browser.py

# The README's and the docs' dashboard picture (nbs/images/dashboard.png): tests/test_dashboard_browser.py runs a demo in
# JupyterLab in headless Chromium (run directory runs/flowrl-demo) and saves the screenshot; this copies it into place.
dashboard-image:
	mkdir -p build/dashboard-shot
	FLOWRL_NB_TEST_OUTPUT=$(CURDIR)/build/dashboard-shot HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false \
	  $(PY) -m pytest tests/test_dashboard_browser.py -q -p no:cacheprovider -k test_dashboard_in_jupyterlab
	cp build/dashboard-shot/dashboard.png nbs/images/dashboard.png
