# Two commands on a fresh Debian machine:
#   make run      set up a virtual environment and converge examples/hello.yaml
#   make test     install what the tests need (apt + pip) and run them all
# and one to keep it:
#   make install  convergent on PATH, its man page, completions, schema and systemd unit
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PREFIX ?= /usr/local
UNITDIR ?= /etc/systemd/system
POLICY ?= /etc/convergent/policy.yaml
APT_PACKAGES := graphviz python3-venv zsh fish groff man-db systemd etcd-server etcd-client iproute2
APT_PACKAGES += dbus-daemon  # a private system bus for the D-Bus tests (tests/support_dbus.py)
APT_PACKAGES += packagekit  # pkg's PackageKit backend, activated on that bus
APT_PACKAGES += openssh-server  # sshd for the remote tests (tests/sshd_support.py)
APT_PACKAGES += chromium  # the web view's browser test (headless, driven by playwright)
APT_PACKAGES += strace  # attaches to the spawner to kill it at a chosen system call

.PHONY: run test lint typecheck unit system-deps clean install dist docs-screenshot

run: $(VENV)/.installed
	@echo "convergent is $(abspath $(BIN))/convergent; to type just 'convergent', run"
	@echo "  export PATH=\"$(abspath $(BIN)):\$$PATH\"   (this shell; or: make install, or: pipx install .)"
	$(BIN)/convergent run examples/hello.yaml

# The command on PATH (a link into the virtual environment), convergent(1), completions
# for bash and fish, the policy schema for editors, and the systemd unit that runs
# `convergent run $(POLICY)` (written, not enabled: systemctl enable --now convergent).
# DESTDIR stages it all elsewhere; the unit is written when POLICY exists.
install: $(VENV)/.installed
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/share/man/man1 \
	  $(DESTDIR)$(PREFIX)/share/convergent \
	  $(DESTDIR)$(PREFIX)/share/bash-completion/completions \
	  $(DESTDIR)$(PREFIX)/share/fish/vendor_completions.d
	ln -sf $(abspath $(BIN))/convergent $(DESTDIR)$(PREFIX)/bin/convergent
	$(BIN)/convergent man -o $(DESTDIR)$(PREFIX)/share/man/man1/convergent.1
	$(BIN)/convergent schema -o $(DESTDIR)$(PREFIX)/share/convergent/convergent.schema.json
	$(BIN)/convergent completion bash > $(DESTDIR)$(PREFIX)/share/bash-completion/completions/convergent
	$(BIN)/convergent completion fish > $(DESTDIR)$(PREFIX)/share/fish/vendor_completions.d/convergent.fish
	@if [ -f "$(POLICY)" ]; then \
	  install -d $(DESTDIR)$(UNITDIR) && \
	  $(BIN)/convergent service install --policy $(POLICY) --unit-dir $(DESTDIR)$(UNITDIR); \
	else echo "no $(POLICY): no systemd unit written (make install POLICY=FILE, or later:"; \
	  echo "  convergent service install --policy FILE)"; fi

# One file, dist/convergent.pyz, that runs with only python3 (>= 3.11) on a Linux host of
# this architecture: python3 convergent.pyz run site.yaml (docs/single-file.md).
dist: $(VENV)/.installed
	$(BIN)/python -m convergent.remote.dist -o dist/convergent.pyz

test: system-deps $(VENV)/.dev-installed lint typecheck unit

lint: $(VENV)/.dev-installed
	$(BIN)/ruff check src tests examples bench
	$(BIN)/ruff format --check src tests

typecheck: $(VENV)/.dev-installed
	$(BIN)/mypy

unit: $(VENV)/.dev-installed
	$(BIN)/pytest -q

# System packages the tests use (graphviz for `convergent graph --format svg`; zsh and
# fish run the completion scripts, groff/man-db render the man page, systemd verifies
# the unit, etcd-server and etcd-client give the world tests their etcd members).
# Installed only when missing, so a second run does not touch apt.
system-deps:
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi; \
	  echo "installing system packages:$$missing"; \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi

# No setuptools in it (the project builds with hatchling): its distutils shim is a .pth
# file that the venv's Python imports at every start, ~0.5 ms of each command.
$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip uninstall -q -y setuptools

$(VENV)/.installed: $(VENV)/bin/python pyproject.toml
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.dev-installed: $(VENV)/bin/python pyproject.toml
	$(BIN)/pip install -q -e '.[dev]'
	touch $@ $(VENV)/.installed

# docs/web-view.png, the README's picture of the web view, taken by its browser test.
docs-screenshot: system-deps $(VENV)/.dev-installed
	CONVERGENT_DOCS_SCREENSHOT=1 $(BIN)/pytest -q tests/web/test_browser.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

# Benchmarks against peers (bench/, never part of `make test`).
#   make bench-peers    install CFEngine and Puppet (apt) and Salt, Ansible, pyinfra
#                       (pip, into their own venv bench/.peers-venv)
#   make bench          run every workload against every peer, write bench/results.md
#   make bench QUICK=1  convergent and CFEngine only
PEERS_VENV   := bench/.peers-venv
PEERS_APT    := cfengine3 puppet-agent time
PEERS_PIP    := salt ansible-core pyinfra py-spy pyinstrument

.PHONY: bench bench-peers

bench: $(VENV)/.installed bench-peers
	$(BIN)/python bench/run.py $(if $(QUICK),--quick) $(if $(REPEATS),--repeats $(REPEATS))

bench-peers: $(PEERS_VENV)/.installed
	@missing=""; for p in $(PEERS_APT); do \
	  dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi; \
	  echo "installing peers:$$missing"; \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi

$(PEERS_VENV)/.installed:
	$(PYTHON) -m venv $(PEERS_VENV)
	$(PEERS_VENV)/bin/pip install -q --upgrade pip
	$(PEERS_VENV)/bin/pip install -q $(PEERS_PIP)
	touch $@
