# Kubernetes packaging: image, chart tools, a kind cluster for the end-to-end tests.
# Included by the top Makefile (-include mk/*.mk); uses its TOOLS, BIN and STAMP.
#
# helm and kind are built from source with `go install` into $(TOOLS)/bin (on PATH for every
# recipe) unless they are already on PATH. No Docker engine on the development machines:
# image/kind-* run in GitHub Actions (.github/workflows/e2e-kind.yml).

HELM_VERSION ?= v3.22.0
KIND_VERSION ?= v0.33.0
KIND_CLUSTER ?= choreo
IMAGE_REPOSITORY ?= choreo
IMAGE_TAG ?= dev
IMAGE := $(IMAGE_REPOSITORY):$(IMAGE_TAG)
K8S_NAMESPACE ?= choreo
# Empty: the newest chart from the NATS repository; pin it for reproducible deployments.
NATS_CHART_VERSION ?=
CHOREO_VALUES ?= k8s/values-minimal.yaml
# Extra `helm upgrade --install` arguments for the Choreo release.
CHART_ARGS ?=

# The chart tests (tests/chart) need helm. The top Makefile's pytest rule lists $(TEST_DEPS),
# but it is read before this file is included, so also add the prerequisite directly.
TEST_DEPS += helm
pytest: helm

.PHONY: helm kind image image-dry-run kind-up kind-load deploy e2e-kind-setup e2e-kind kind-down chart-lint

helm: ## helm (go install into .tools/bin unless already on PATH)
	@command -v helm >/dev/null 2>&1 || { \
	  echo "building helm $(HELM_VERSION) into $(TOOLS)/bin (takes a few minutes)"; \
	  GOBIN=$(TOOLS)/bin go install helm.sh/helm/v3/cmd/helm@$(HELM_VERSION); }

kind: ## kind (go install into .tools/bin unless already on PATH)
	@command -v kind >/dev/null 2>&1 || { \
	  echo "building kind $(KIND_VERSION) into $(TOOLS)/bin"; \
	  GOBIN=$(TOOLS)/bin go install sigs.k8s.io/kind@$(KIND_VERSION); }

chart-lint: helm ## helm lint --strict the chart with every values file
	helm lint --strict charts/choreo
	helm lint --strict charts/choreo -f k8s/values-minimal.yaml
	helm lint --strict charts/choreo -f k8s/values-prod.yaml

image: ## build the Choreo image (needs a Docker engine)
	docker build -t $(IMAGE) .

image-dry-run: ## the Dockerfile's install steps without Docker: fresh venv, pip install ., run as nobody
	k8s/dockerfile-dry-run.sh

kind-up: kind ## create the kind cluster (k8s/kind-config.yaml) unless it exists
	@kind get clusters 2>/dev/null | grep -qx '$(KIND_CLUSTER)' \
	  || kind create cluster --name $(KIND_CLUSTER) --config k8s/kind-config.yaml --wait 120s

kind-load: kind ## load the image into the kind cluster
	kind load docker-image $(IMAGE) --name $(KIND_CLUSTER)

deploy: helm ## NATS (official chart, k8s/nats-values.yaml) and Choreo into the current context
	helm repo add nats https://nats-io.github.io/k8s/helm/charts/ --force-update
	helm upgrade --install nats nats/nats $(if $(NATS_CHART_VERSION),--version $(NATS_CHART_VERSION)) \
	  --namespace $(K8S_NAMESPACE) --create-namespace -f k8s/nats-values.yaml --wait --timeout 10m
	helm upgrade --install choreo charts/choreo --namespace $(K8S_NAMESPACE) \
	  -f $(CHOREO_VALUES) --set image.repository=$(IMAGE_REPOSITORY) --set image.tag=$(IMAGE_TAG) \
	  --set image.pullPolicy=Never --set provisioning.streamReplicas=3 \
	  $(CHART_ARGS) --wait --timeout 10m
	helm test choreo --namespace $(K8S_NAMESPACE) --logs --timeout 5m

# The e2e deployment: values-minimal.yaml plus values-e2e.yaml (2 partitions, stores on PVCs).
# Target-specific, so `deploy` sees it only when reached through these targets.
e2e-kind-setup: CHART_ARGS += -f k8s/values-e2e.yaml
e2e-kind-setup: image kind-up kind-load deploy ## build, load and deploy what tests/e2e/test_kind.py runs against

e2e-kind: $(STAMP) e2e-kind-setup ## the end-to-end scenario (tests/e2e/scenario.py) on a kind cluster
	CHOREO_E2E=kind K8S_NAMESPACE=$(K8S_NAMESPACE) $(BIN)/pytest tests/e2e/test_kind.py -v

kind-down: kind ## delete the kind cluster
	kind delete cluster --name $(KIND_CLUSTER)
