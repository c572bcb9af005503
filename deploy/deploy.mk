# Docker and Kubernetes targets (included by the Makefile). Engine-facing targets run as root:
# they install Debian's docker.io / docker-compose when missing and start dockerd (vfs) when none runs.
DOCKER        ?= /usr/bin/docker
IMAGE         ?= dropserve:latest
OFFLINE       ?= 1
DOCKER_BUILD_ENV := DOCKER_BUILDKIT=1 DOCKER=$(DOCKER)
PIP_CA_SECRET := --secret id=pip_ca,src=/etc/ssl/certs/ca-certificates.crt
WHEELHOUSE_STAMP := deploy/wheelhouse/.complete
COMPOSE       ?= $(shell $(DOCKER) compose version >/dev/null 2>&1 && echo "$(DOCKER) compose" || echo docker-compose)

.PHONY: docker-engine docker-base wheelhouse docker-build docker-up docker-scale docker-down docker-e2e test-deploy

docker-engine:
	DOCKER=$(DOCKER) deploy/docker-engine.sh

# Prints the base image: python:3.11-slim when pullable, else a debootstrap-built local one (the
# build stage's, with a C compiler: deploy/base-image.sh build).
docker-base: docker-engine
	@DOCKER=$(DOCKER) deploy/base-image.sh

wheelhouse: $(WHEELHOUSE_STAMP)

# Re-downloaded only when the dependencies change.
$(WHEELHOUSE_STAMP): pyproject.toml
	deploy/wheelhouse.sh
	touch $@

# OFFLINE=1 (default here) installs from deploy/wheelhouse/; OFFLINE=0 uses the network, with the
# host CA bundle handed to pip as a build secret (for TLS-intercepting proxies).
docker-build: docker-engine $(if $(filter 1,$(OFFLINE)),$(WHEELHOUSE_STAMP))
	$(DOCKER_BUILD_ENV) $(DOCKER) build \
		--build-arg BASE_IMAGE=$$(DOCKER=$(DOCKER) deploy/base-image.sh) \
		--build-arg BUILD_IMAGE=$$(DOCKER=$(DOCKER) deploy/base-image.sh build) --build-arg OFFLINE=$(OFFLINE) \
		$(if $(filter 0,$(OFFLINE)),$(PIP_CA_SECRET)) \
		-t $(IMAGE) .
	@echo "$(IMAGE): $$($(DOCKER) image inspect -f '{{.Size}}' $(IMAGE) | awk '{printf "%d MB", $$1/1e6}'), user $$($(DOCKER) image inspect -f '{{.Config.User}}' $(IMAGE))"

# The stack on http://127.0.0.1:8080 (DROPSERVE_HTTP_PORT). The dataset cache is seeded from the
# host's (.cache/datasets, filled by `make train`), so the train job needs no network.
REPLICAS ?= 2
COMPOSE_ENV = DROPSERVE_IMAGE=$(IMAGE) DROPSERVE_DATASETS=$(CURDIR)/.cache/datasets \
	NGINX_IMAGE=$$(DOCKER=$(DOCKER) deploy/nginx-image.sh)

docker-up: docker-build
	$(COMPOSE_ENV) $(COMPOSE) up -d --no-build --scale api=$(REPLICAS)

# make docker-scale REPLICAS=4: more api replicas, then nginx restarts to resolve them all.
docker-scale:
	$(COMPOSE_ENV) $(COMPOSE) up -d --no-build --scale api=$(REPLICAS)
	$(COMPOSE_ENV) $(COMPOSE) restart nginx

docker-down:
	$(COMPOSE_ENV) $(COMPOSE) down --volumes --remove-orphans

# The CI proof: build, compose up, PNG prediction + uncertainty through nginx, teardown.
docker-e2e: setup
	PYTHON=$(BIN)/python DOCKER=$(DOCKER) deploy/ci-docker-e2e.sh

test-deploy: setup
	$(BIN)/python -m pytest -q tests/deploy
