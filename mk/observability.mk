# Observability assets (charts/choreo/files/{alerts.yaml,dashboards}) are checked by
# tests/observability with promtool, from Debian's `prometheus` package.
#
# The top Makefile expands $(TEST_DEPS) in the pytest rule before it includes mk/*.mk, so
# the prerequisite is also added to `pytest` directly (make merges the two rules).
#
# Installing the package must not leave a Prometheus daemon on :9090: where invoke-rc.d is
# allowed to start it, stop it right after the install (systemctl, else service, else the
# pids of the `prometheus` user's prometheus process, which the install just started).

.PHONY: promtool chromium

TEST_DEPS += promtool chromium
pytest: promtool chromium

promtool: ## install promtool (Debian's prometheus package) for tests/observability
	@command -v promtool >/dev/null || ( \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus) && \
	  if pids=$$(pgrep -u prometheus -x prometheus); then \
	    echo "stopping the prometheus daemon the package started ($$pids)"; \
	    systemctl stop prometheus 2>/dev/null || service prometheus stop 2>/dev/null || kill $$pids; \
	  fi; \
	  true)
	@command -v promtool >/dev/null || { echo "promtool still missing after installing prometheus" >&2; exit 1; }

# The trace page is tested in headless Chromium driven by the `playwright` Python package
# (tests/observability/test_trace_page.py). Playwright's own browser download cannot run
# here: the test launches Debian's /usr/bin/chromium through `executable_path`.
chromium: ## install Debian's chromium for the trace page browser test
	@command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)
	@command -v chromium >/dev/null || { echo "chromium still missing after apt-get install chromium" >&2; exit 1; }
