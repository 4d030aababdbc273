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

# The README's and the docs' dashboard picture (nbs/images/dashboard.png): the browser test's first screen of a run in
# JupyterLab (tools/dashboard_image.py runs it and copies the picture into place; look at it before committing).
dashboard-image:
	$(PY) tools/dashboard_image.py
