# Two commands: `make serve` runs the service on its embedded defaults, `make test` runs every check.
# The service takes Lightricks' prompt-enhancement instructions from their ltx-core (without its
# dependencies: an older torch, which must not replace ours). The test set-up adds the test tools,
# google-genai 2.x beside the venv (its 2.x and 3.x clients are both tested), Lightricks' reference
# pipelines for the parity tests (without their dependencies either: torchaudio among them), Debian's
# chromium for the Studio's browser test and jq for the README's curl example; the tests also need the
# local PostgreSQL server (started here if it is installed but down). The tests run on one process more
# than there are cores: the live ones wait on their servers part of the time (on 2 cores, 3 processes
# took 351 s, 2 took 375 s and 4 took 372 s).
PYTHON ?= python3
# Bytecode is cached, whatever the environment says (this machine's turns it off): each test process,
# server and worker would otherwise compile the package and pytest rewrite the tests' asserts again.
unexport PYTHONDONTWRITEBYTECODE
VENV ?= .venv
BIN := $(VENV)/bin
TEST_PROCESSES ?= $$(( $$(nproc --all) + 1 ))

.PHONY: serve test checks tests bench

# Each target resolves its dependencies once (the engine extra pins torch, so no newer one is pulled). The
# test set-up installs everything in one resolution rather than after the service's install (5 s less), and
# leaves the bytecode to the first import: pip compiles every module of every package (torch, Ray,
# Playwright, ...), the tests import a part of them. On a clean clone here: 82 s of installing and 13 s of
# collecting the tests before, 42 s and 21 s after.
$(VENV)/.installed: pyproject.toml
	@echo "openreel: first install into $(VENV): torch (CPU), diffusers and the server, about 5 minutes"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[server,engine]'
	$(BIN)/python -m pip install --quiet --no-deps ltx-core==1.0.0
	touch $@

$(VENV)/.test-installed: pyproject.toml
	@echo "openreel: install into $(VENV) with the test tools (Ray, the official clients, Playwright), about a minute"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --no-compile -e '.[server,engine,ray,s3,test]'
	$(BIN)/python -m pip install --quiet --no-compile --no-deps ltx-core==1.0.0 ltx-pipelines==1.0.0
	$(BIN)/python -m pip install --quiet --no-compile --target $(VENV)/genai2 'google-genai==2.34.0'
	command -v chromium >/dev/null && command -v jq >/dev/null || { apt-get update -q && apt-get install -y -q chromium jq; }
	touch $(VENV)/.installed $@

serve: $(VENV)/.installed
	$(BIN)/openreel serve

# The static checks run beside the tests: the tests leave the cores idle part of the time (waiting on their
# servers), which the checks fill (20 s saved on this machine). The checks' output follows the tests'.
test: $(VENV)/.test-installed
	$(MAKE) --no-print-directory checks > $(VENV)/checks.log 2>&1 & checks=$$!; \
	$(MAKE) --no-print-directory tests; tests=$$?; \
	wait $$checks; status=$$?; cat $(VENV)/checks.log; exit $$(( tests || status ))

checks: $(VENV)/.test-installed
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

tests: $(VENV)/.test-installed
	pg_isready -q -h 127.0.0.1 || pg_ctlcluster --skip-systemctl-redirect $$(ls /etc/postgresql) main start
	$(BIN)/python -m pytest -n $(TEST_PROCESSES) --dist loadgroup

bench: $(VENV)/.test-installed
	$(BIN)/python bench/job_latency.py
